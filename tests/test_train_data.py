"""Tokenisation, loss masks, truncation counts, the split and deterministic batches."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gemma_ft_widgets import datasets
from gemma_ft_widgets.train import data, models  # jax: a missing one fails here, never skips


@pytest.fixture(scope="module")
def tok():
    return models.make_tokenizer("tiny", models.tiny_tokenizer_path())


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def test_layout_matches_seq2seq_and_masks_the_prompt(tok):
    prompt, response = datasets.render_example({"prompt": "Hi?", "response": "Yes."}, "prompt_response")
    inp, tgt, mask, cut = data.encode_example(tok, prompt, response, 64)
    p_ids = [2] + tok.encode(prompt)
    r_ids = tok.encode(response)
    seq = p_ids + r_ids
    n = len(seq) - 1
    assert not cut
    assert inp[:n].tolist() == seq[:-1] and tgt[:n].tolist() == seq[1:]
    assert (inp[n:] == 0).all() and (tgt[n:] == 0).all() and (mask[n:] == 0).all()
    # The loss covers exactly the response tokens (which end with <end_of_turn>).
    assert mask.sum() == len(r_ids)
    assert tgt[mask > 0].tolist() == r_ids and r_ids[-1] == 106
    assert mask[: len(p_ids) - 1].sum() == 0

    # The library's own Seq2SeqTask builds the same arrays from the same token ids.
    from gemma.gm.data import _functional

    ref = _functional.pad(_functional.make_seq2seq_fields(prompt=np.array(p_ids), response=np.array(r_ids)),
                          max_length=64, truncate=True)
    assert (ref.input == inp).all() and (ref.target == tgt).all() and (ref.target_mask == (mask > 0)).all()


def test_text_format_trains_on_everything_and_ends_with_eos(tok):
    inp, tgt, mask, _ = data.encode_example(tok, "", "plain words", 32, add_eos=True)
    n = int(mask.sum())
    assert inp[0] == 2 and tgt[n - 1] == 1 and n == len(tok.encode("plain words")) + 1


def test_truncation_is_counted_and_empty_examples_dropped(tmp_path, tok):
    long = {"prompt": "short", "response": "word " * 200}
    prompt_too_long = {"prompt": "word " * 200, "response": "x"}
    path = write_jsonl(tmp_path / "d.jsonl", [long, prompt_too_long] + [{"prompt": "a", "response": "b"}] * 4)
    ds = data.prepare(path, "auto", tok, 32, eval_fraction=0.0, seed=0)
    assert ds.truncated == 2 and ds.dropped == 1 and len(ds.train) == 5
    assert ds.summary() == {"format": "prompt_response", "train_examples": 5, "eval_examples": 0,
                            "truncated": 2, "dropped": 1, "dropped_train": 1, "dropped_eval": 0}


def test_dropped_examples_are_named_and_an_emptied_eval_split_is_refused(tmp_path, tok):
    """Issue 11, defect 7: half the prompts exceed max_seq_len. Before, they were dropped in
    silence (the panel said "20 of 20 examples truncated") and the eval split became empty."""
    from gemma_ft_widgets.datasets import DatasetError, cut_note
    from gemma_ft_widgets.train.loop import data_line

    rows = [{"prompt": "word " * 200, "response": "x"}] * 10 + [{"prompt": "a", "response": "b"}] * 10
    path = write_jsonl(tmp_path / "half.jsonl", rows)
    ds = data.prepare(path, "auto", tok, 32, eval_fraction=0.0, seed=0)
    summary = {**ds.summary(), "max_seq_len": 32}
    assert cut_note(summary) == ("10 of 20 examples truncated to max_seq_len 32; 10 dropped (10 from train): "
                                 "the prompt fills max_seq_len, no response token is left to learn")
    assert "10 dropped" in data_line(ds.summary(), 32)
    long_only = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 200, "response": "x"}] * 4
                            + [{"prompt": "a", "response": "b"}] * 16)
    # the eval split (seeded) holds only long prompts for some seed: find one, then expect a refusal
    for seed in range(200):
        _, eval_idx = data.split_indices(20, 0.1, seed)
        if all(i < 4 for i in eval_idx):
            break
    with pytest.raises(DatasetError, match="all 2 eval examples were dropped"):
        data.prepare(long_only, "auto", tok, 32, eval_fraction=0.1, seed=seed)
    with pytest.raises(DatasetError, match=r"no training example keeps a response token .* \(all 4 dropped\)"):
        data.prepare(write_jsonl(tmp_path / "none.jsonl", [{"prompt": "word " * 200, "response": "x"}] * 4),
                     "auto", tok, 32, eval_fraction=0.0, seed=0)


@pytest.mark.parametrize("fmt,row", [
    ("text", {"text": "hello there"}),
    ("alpaca", {"instruction": "Add", "input": "1 and 2", "output": "3"}),
    ("chat", {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                           {"role": "assistant", "content": "Goodbye"}]}),
])
def test_every_format_tokenises_with_response_only_loss(tmp_path, tok, fmt, row):
    path = write_jsonl(tmp_path / "d.jsonl", [row] * 3)
    ds = data.prepare(path, "auto", tok, 128, eval_fraction=0.0, seed=0)
    assert ds.format == fmt and len(ds.train) == 3
    _, response = datasets.render_example(row, fmt)
    expected = tok.encode(response) + ([1] if fmt == "text" else [])
    got = ds.train.targets[0][ds.train.mask[0] > 0].tolist()
    assert got == expected


def test_csv_dataset(tmp_path, tok):
    path = tmp_path / "d.csv"
    path.write_text("prompt,response\nHi,Hello\n\"a, b\",c\n", encoding="utf-8")
    ds = data.prepare(str(path), "auto", tok, 64, eval_fraction=0.0, seed=0)
    assert ds.format == "prompt_response" and len(ds.train) == 2


def test_malformed_line_names_file_and_line(tmp_path, tok):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, "{not json", {"prompt": "x"}])
    with pytest.raises(datasets.DatasetError) as e:
        data.prepare(path, "auto", tok, 64, eval_fraction=0.0, seed=0)
    assert "bad.jsonl line 2" in str(e.value) and "bad.jsonl line 3" in str(e.value)


def test_split_is_seeded_and_disjoint():
    a_train, a_eval = data.split_indices(100, 0.1, seed=3)
    b_train, b_eval = data.split_indices(100, 0.1, seed=3)
    c_train, c_eval = data.split_indices(100, 0.1, seed=4)
    assert (a_eval == b_eval).all() and len(a_eval) == 10 and len(a_train) == 90
    assert not set(a_eval) & set(a_train) and set(a_eval) | set(a_train) == set(range(100))
    assert set(a_eval) != set(c_eval)
    assert len(data.split_indices(5, 0.01, 0)[1]) == 1  # a requested eval set is never empty
    assert len(data.split_indices(5, 0.0, 0)[1]) == 0


def test_batches_depend_only_on_seed_and_step():
    arrays = data.Arrays(np.arange(10)[:, None].repeat(4, 1).astype(np.int32),
                         np.zeros((10, 4), np.int32), np.ones((10, 4), np.float32))
    b1 = data.Batches(arrays, 4, seed=1)
    seen = np.concatenate([b1.indices(s) for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    fresh = data.Batches(arrays, 4, seed=1)  # a resumed run asks for step 3 first
    assert (fresh.indices(3) == b1.indices(3)).all()
    assert (fresh.batch(3)["input"][:, 0] == b1.indices(3)).all()
    assert not (data.Batches(arrays, 4, seed=2).indices(0) == b1.indices(0)).all()
    assert b1.position(3) == 12 and b1.epoch(5) == 2.0


def test_eval_batches_pad_with_masked_rows():
    arrays = data.Arrays(np.ones((5, 3), np.int32), np.ones((5, 3), np.int32), np.ones((5, 3), np.float32))
    batches = list(data.eval_batches(arrays, 4))
    assert len(batches) == 2 and batches[1]["mask"].sum() == 3 and batches[1]["input"].shape == (4, 3)


def test_sample_dataset_is_shipped_and_fits_tiny(tok):
    from gemma_ft_widgets.config import sample_dataset_path

    path = sample_dataset_path()
    assert os.path.isfile(path)
    ds = data.prepare(path, "auto", tok, 128, eval_fraction=0.1, seed=0)
    assert len(ds.train) + len(ds.eval) >= 300 and ds.truncated == 0 and ds.dropped == 0


def test_the_trainers_data_line_reports_truncation():
    from gemma_ft_widgets.train.loop import data_line

    summary = {"format": "chat", "train_examples": 90, "eval_examples": 10, "truncated": 7, "dropped": 0}
    assert data_line(summary, 64) == "data: chat format, 90 train / 10 eval examples; 7 of 100 examples truncated to max_seq_len 64"
    assert "truncated" not in data_line({**summary, "truncated": 0}, 64)


def test_the_check_before_start_counts_what_the_trainer_drops(tmp_path, tok):
    """length_check (sentencepiece, no jax) and the trainer's tokenizer agree on which
    examples max_seq_len drops, prompt by prompt near the limit."""
    from gemma_ft_widgets import datasets, length_check

    rows = [{"prompt": "word " * n, "response": "x"} for n in range(0, 60, 3)]
    path = write_jsonl(tmp_path / "ramp.jsonl", rows)
    records, fmt = datasets.load_records(path)
    prompts = [datasets.render_example(r, fmt)[0] for r in records]
    counts, how = length_check.prompt_tokens("tiny", prompts)
    assert how == "exact" and counts == [len(tok.encode(p)) for p in prompts]
    for limit in (16, 32, 48):
        ds = data.prepare(path, "auto", tok, limit, eval_fraction=0.0, seed=0)
        assert ds.dropped == sum(c >= limit for c in counts) and 0 < ds.dropped < len(rows), limit
