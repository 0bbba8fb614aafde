"""Gemma 4 names its turn tokens <|turn> / <turn|>, not <start_of_turn> / <end_of_turn>. Examples
are rendered with the Gemma 3 names for every family; a Gemma 4 tokenizer must see its own turn
tokens (before, it split "<start_of_turn>" into plain-text pieces and trained on those)."""

from __future__ import annotations

import sentencepiece as spm

from gemma_ft_widgets import datasets
from gemma_ft_widgets.datasets import END, START
from gemma_ft_widgets.train import models

TURN = f"{START}user\nWhat is the capital of France?{END}\n{START}model\nParis.{END}\n"


def gemma4_like_tokenizer(tmp_path) -> str:
    """A small sentencepiece model whose turn symbols are Gemma 4's (trained here, in a second)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"What is the capital of country {i}? It is city {i * 7}." for i in range(400)))
    prefix = str(tmp_path / "g4")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=prefix, vocab_size=400, byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                                   user_defined_symbols=[datasets.GEMMA4_START, datasets.GEMMA4_END],
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   minloglevel=2)
    return prefix + ".model"


def test_a_gemma4_tokenizer_encodes_the_rendered_turns_as_its_own_turn_tokens(tmp_path):
    path = gemma4_like_tokenizer(tmp_path)
    sp = spm.SentencePieceProcessor(model_file=path)
    start, end = sp.PieceToId(datasets.GEMMA4_START), sp.PieceToId(datasets.GEMMA4_END)
    g4 = models.make_tokenizer("gemma4", path)
    ids = g4.encode(TURN)
    assert ids.count(start) == 2 and ids.count(end) == 2
    assert "<start_of_turn>" not in "".join(sp.IdToPiece(i) for i in ids)
    assert g4.decode(ids) == TURN  # decoded back to the markers the package reads
    assert g4.encode([START, END]) == [start, end]  # a list of pieces is mapped too
    # The Gemma 3 tokenizer class on the same file leaves the text alone: no turn token.
    g3 = models.make_tokenizer("gemma3", path)
    assert start not in g3.encode(TURN)


def test_the_mapping_is_for_gemma4_only_and_round_trips():
    assert datasets.for_family(TURN, "gemma3") == TURN == datasets.from_family(TURN, "gemma2")
    g4 = datasets.for_family(TURN, "gemma4")
    assert START not in g4 and g4.count(datasets.GEMMA4_START) == 2 and datasets.from_family(g4, "gemma4") == TURN
