"""scripts/pretrain_tiny.py: the corpus it generates (deterministic, free of the sample
dataset's answers, covering every token the sample dataset uses) is the one the shipped base
was trained on, and the script runs (a 20-step smoke run; the real one takes minutes)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys

import pytest

from gemma_ft_widgets import models as table
from gemma_ft_widgets.config import sample_dataset_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import pretrain_tiny  # noqa: E402


@pytest.fixture(scope="module")
def docs():
    return pretrain_tiny.documents()


def test_the_shipped_base_was_trained_on_this_scripts_corpus(docs):
    with open(os.path.join(pretrain_tiny.DATA, "tiny_base.json"), encoding="utf-8") as f:
        record = json.load(f)
    corpus = pretrain_tiny.corpus_jsonl(docs)
    assert record["corpus"]["sha256"] == hashlib.sha256(corpus.encode()).hexdigest()
    assert record["config"] == {k: v for k, v in pretrain_tiny.PRETRAIN.items()} | {
        "max_steps": record["steps"], "checkpoint_every": record["steps"]}
    assert record["loss_last"] < record["loss_first"] / 3


def test_the_corpus_holds_no_sample_answer_and_fits_the_sequence(docs):
    import sentencepiece as spm

    pretrain_tiny.check_no_sample_answers(docs)  # raises SystemExit on a leak
    with pytest.raises(SystemExit, match="sample-dataset answers"):
        pretrain_tiny.check_no_sample_answers(docs + ["The secret word is pineapple."])
    sp = spm.SentencePieceProcessor(model_file=os.path.join(pretrain_tiny.DATA, "tiny_tokenizer.model"))
    lengths = [len(sp.encode(d)) for d in docs]
    assert max(lengths) <= 120  # + BOS and EOS within max_seq_len 128: nothing truncated
    seen = collections.Counter(t for d in docs for t in sp.encode(d))
    with open(sample_dataset_path(), encoding="utf-8") as f:
        used = {t for r in map(json.loads, f) for t in sp.encode(r["prompt"] + r["response"])}
    # Fine-tuning meets no token whose embedding pretraining never trained.
    assert not [sp.id_to_piece(t) for t in used if not seen[t]]


@pytest.mark.slow
def test_the_script_runs_and_writes_weights_tiny_loads(tmp_path):
    from gemma_ft_widgets.train import models

    out = tmp_path / "base.npz"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "pretrain_tiny.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    net = models.build_network(table.TINY)
    params = models.load_npz_params(str(out), net, "float32")
    assert models.param_count(params) == table.TINY.params
    record = json.loads((tmp_path / "base.json").read_text())
    assert record["steps"] == 20 and record["made_by"] == "scripts/pretrain_tiny.py"
