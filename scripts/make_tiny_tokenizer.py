"""Write gemma_ft_widgets/data/tiny_tokenizer.model: the `tiny` model's tokenizer.

A 512-piece sentencepiece BPE model laid out like Gemma 3's, so gm.text.Gemma3Tokenizer,
the turn format and the samplers work unchanged:

    pad 0, eos 1, bos 2, unk 3, <mask> 4, [multimodal] 5, <unused0..98> 6..104,
    <start_of_turn> 105, <end_of_turn> 106, then byte-fallback pieces and BPE merges.

Trained on the sample dataset rendered in Gemma's turn format plus a generated corpus of
templated English (the trainer needs enough distinct text for 512 pieces). Deterministic:
one thread, fixed seed, fixed input order. `\\n` survives (identity normalisation, no dummy
prefix, extra whitespace kept), which the turn format relies on.

    python scripts/make_tiny_tokenizer.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
DATA = os.path.join(ROOT, "gemma_ft_widgets", "data")

VOCAB_SIZE = 512
USER_SYMBOLS = ["<mask>", "[multimodal]"] + [f"<unused{i}>" for i in range(99)] + [
    "<start_of_turn>", "<end_of_turn>"]


def corpus_lines(dataset_path: str, seed: int = 0) -> list[str]:
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import make_sample_dataset as msd  # noqa: E402  (script beside this one)

    lines: list[str] = []
    with open(dataset_path, encoding="utf-8") as f:
        for raw in f:
            row = json.loads(raw)
            lines.append(f"<start_of_turn>user\n{row['prompt']}<end_of_turn>\n"
                         f"<start_of_turn>model\n{row['response']}<end_of_turn>")
    # A generated corpus of plain templated English, for coverage beyond the dataset.
    rng = random.Random(seed)
    subjects = ["The cat", "A dog", "My friend", "The teacher", "Our team", "The model",
                "A small bird", "The old man", "Every student", "The river"]
    verbs = ["walks to", "looks at", "writes about", "thinks of", "runs past", "talks with",
             "learns from", "waits for", "reads about", "sings to"]
    objects = ["the house", "a green tree", "the city", "some water", "the moon", "a book",
               "the market", "the answer", "a quiet room", "the mountain"]
    for _ in range(3000):
        lines.append(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}.")
    for word in msd.WORDS:
        lines.append(f"{word} {word.upper()} {word.capitalize()} {word[::-1]}")
    for country, city in msd.CAPITALS:
        lines.append(f"{city} is a city in {country}.")
    for i, w in enumerate(msd.NUMBER_WORDS):
        lines.append(f"{i} {w} {w.capitalize()} {i * 7} {i + 100}")
    lines.append("0123456789 .,:;!?'\"()[]{}<>-+*/=_%&#@$")
    return lines


def train(out_path: str, dataset_path: str) -> None:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines(dataset_path)),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=USER_SYMBOLS,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_digits=True,
        character_coverage=1.0,
        num_threads=1,
        seed_sentencepiece_size=100_000,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    with open(out_path, "wb") as f:
        f.write(model.getvalue())

    # Check the layout the rest of the package relies on.
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    expected = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>", 5: "[multimodal]",
                6: "<unused0>", 104: "<unused98>", 105: "<start_of_turn>", 106: "<end_of_turn>"}
    for i, piece in expected.items():
        got = sp.IdToPiece(i)
        if got != piece:
            raise SystemExit(f"tokenizer layout: id {i} is {got!r}, expected {piece!r}")
    assert sp.GetPieceSize() == VOCAB_SIZE, sp.GetPieceSize()
    text = "<start_of_turn>user\nHi there!<end_of_turn>\n<start_of_turn>model\n"
    ids = sp.EncodeAsIds(text)
    assert ids[0] == 105 and 106 in ids, ids
    assert sp.DecodeIds(ids) == text, sp.DecodeIds(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(DATA, "tiny_tokenizer.model"))
    parser.add_argument("--dataset", default=os.path.join(DATA, "sample_dataset.jsonl"))
    args = parser.parse_args(argv)
    train(args.out, args.dataset)
    print(f"wrote {os.path.normpath(args.out)} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
