"""Write gemma_ft_widgets/data/tiny_base.npz: the pretrained base of the `tiny` model.

Why: LoRA on a randomly initialised base plateaus (the frozen tied embedding caps it), so the
panel's default run, LoRA on `tiny`, looked broken. A real Gemma is pretrained; so is `tiny`
now, on a small corpus this script writes, and LoRA on it learns as LoRA on a real Gemma does.

The corpus is generated here, from templates, deterministically (no download, no licence
question). It never contains an answer of the sample dataset (checked below): it teaches the
turn format, English-like sentences, letters and spelling, counting and subtraction, which
city lies in which country, the colours of things and the model's identity. The fine-tuning
then has to learn the sample dataset's own tasks and phrasings (capitals, additions, reversed
and capitalised words, the secret word) on top.

Pretraining is full fine-tuning of `tiny-random` (the same network, seeded random init) by
the package's own trainer, in-process, in a temporary run folder, on the corpus as plain
`text` records. The weights are saved as a flat .npz (numpy's format: no pickle, nothing to
install, ~0.4 MB) beside the tokenizer, with a JSON record of how they were made.

    python scripts/pretrain_tiny.py            # writes the package data (see the run time below)
    python scripts/pretrain_tiny.py --smoke    # 20 steps into a temporary folder (checks the script)

Run time: the shipped weights took 38 minutes (2,286 s, 1.2 steps/s at batch 32 x 128) on the
project's shared 2-core machine while other jobs held its load at 12-20; the step is
~0.15 s of CPU, so an idle 2-core machine should need a few minutes. Deterministic for a
given jax/XLA build and CPU: fixed seed, fixed corpus (its sha256 is in tiny_base.json).
Not run in CI; tests/test_pretrain_tiny.py checks the corpus and a 20-step smoke run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
DATA = os.path.join(ROOT, "gemma_ft_widgets", "data")
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import make_sample_dataset as msd  # noqa: E402  (the script beside this one: shared word lists)

SEED = 0
# The trainer config of the pretraining (full fine-tuning of the random init).
PRETRAIN = {"model": "tiny-random", "method": "full", "batch_size": 32, "max_seq_len": 128,
            "learning_rate": 1e-2, "warmup_steps": 100, "max_steps": 2500, "eval_fraction": 0.02,
            "eval_every": 500, "checkpoint_every": 2500, "keep_checkpoints": 1, "log_every": 100,
            "seed": SEED}

START, END = "<start_of_turn>", "<end_of_turn>"

MORE_CITIES = [  # cities that are not capitals, so "a city in X" is not "the capital of X"
    ("France", "Lyon"), ("France", "Marseille"), ("Germany", "Hamburg"), ("Germany", "Munich"),
    ("Italy", "Milan"), ("Italy", "Naples"), ("Spain", "Barcelona"), ("Spain", "Seville"),
    ("Portugal", "Porto"), ("Poland", "Krakow"), ("Norway", "Bergen"), ("Sweden", "Malmo"),
    ("Japan", "Osaka"), ("Japan", "Kyoto"), ("China", "Shanghai"), ("India", "Mumbai"),
    ("Canada", "Toronto"), ("Canada", "Montreal"), ("Australia", "Sydney"), ("Turkey", "Istanbul"),
    ("Brazil", "Rio"), ("Egypt", "Alexandria"), ("Russia", "Kazan"), ("Kenya", "Mombasa"),
]
ANIMALS = ["cat", "dog", "bird", "fish", "horse", "tiger", "frog", "cow", "duck", "mouse", "lion", "bear"]
NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas"]
PLACES = ["the house", "the park", "the city", "the river", "the market", "the school", "the garden",
          "the station", "the library", "the forest", "the beach", "the mountain"]
VERBS = [("walks to", "walked to"), ("looks at", "looked at"), ("runs to", "ran to"),
         ("waits near", "waited near"), ("sings in", "sang in"), ("reads in", "read in"),
         ("plays in", "played in"), ("sleeps in", "slept in")]
ADJECTIVES = ["big", "small", "old", "new", "quiet", "happy", "green", "cold", "warm", "bright",
              "well-kept", "half-open", "long-haired", "old-fashioned", "bright-red", "sky-blue"]
TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def chat(user: str, model: str) -> str:
    return f"{START}user\n{user}{END}\n{START}model\n{model}{END}\n"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def letters(word: str) -> str:
    return " ".join(word)


def number_name(n: int) -> str:
    """Spelled out up to 99 ('forty-two'); digits beyond."""
    if 0 <= n < len(msd.NUMBER_WORDS):
        return msd.NUMBER_WORDS[n]
    if 20 <= n < 100:
        return TENS[n // 10 - 2] + (f"-{msd.NUMBER_WORDS[n % 10]}" if n % 10 else "")
    return str(n)


def facts(rng: random.Random) -> list[str]:
    """One kind of knowledge each: plain sentences and chat turns (never the sample's phrasing)."""
    cities = msd.CAPITALS + MORE_CITIES
    out: list[str] = []
    for country, city in cities:
        out += [f"{city} is a city in {country}.", f"{city} lies in {country}.",
                f"Many people in {country} live in {city}.",
                chat(f"Which country is {city} in?", f"{city} is in {country}."),
                chat(f"Name a city in {country}.", f"{city} is a city in {country}."),
                chat(f"Where is {city}?", f"{city} is in {country}.")]
    for thing, colour in msd.COLOURS:
        out += [f"The colour of {thing} is {colour}.", f"I saw {thing}. It was {colour}.",
                chat(f"Name something {colour}.", f"{thing[0].upper() + thing[1:]}."),
                chat(f"Is {thing} {colour}?", f"Yes, it is {colour}.")]
    words = msd.WORDS + ANIMALS
    for word in words:
        out += [chat(f"Spell '{word}'.", letters(word)),
                chat(f"Spell the word '{word}'.", f"{word}: {letters(word)}"),
                chat(f"What is the first letter of '{word}'?", f"The first letter of '{word}' is {word[0]}."),
                chat(f"What is the last letter of '{word}'?", f"The last letter of '{word}' is {word[-1]}."),
                chat(f"Write '{word.upper()}' in small letters.", word),
                chat(f"Repeat the word '{word}'.", word),
                chat(f"Say '{word}' twice.", f"{word} {word}"),
                f"{word} {word.upper()} {word.capitalize()} {letters(word)} {letters(word.upper())}"]
    for n in range(21):
        out += [chat(f"What number comes after {n}?", f"{n + 1} comes after {n}."),
                chat(f"Write {n} in words.", f"{n} is {number_name(n)}."),
                chat(f"What is {number_name(n)} as a number?", f"{number_name(n).capitalize()} is {n}."),
                f"{number_name(n).capitalize()} is {n}. {n} is written {number_name(n)}."]
    for a in range(21):
        for b in range(a + 1):
            out.append(chat(f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."))
            if a <= 10:
                out.append(chat(f"Take {number_name(b)} from {number_name(a)}.",
                                f"{number_name(a).capitalize()} take away {number_name(b)} leaves "
                                f"{number_name(a - b)}."))
    for n in range(21, 100):
        out += [f"{number_name(n).capitalize()} is {n}.", chat(f"Write {n} in words.", f"{n} is {number_name(n)}.")]
    for n in range(2, 11):
        out.append(chat(f"Count to {number_name(n)}.", ", ".join(number_name(i) for i in range(1, n + 1)) + "."))
        out.append(f"Count with me: {', '.join(str(i) for i in range(1, n + 1))}.")
    out += [chat(q, a) for q, a in [
        ("Who are you?", "I am a tiny language model."), ("What are you?", "I am a small model that answers questions."),
        ("Hello!", "Hello! How can I help?"), ("Hi.", "Hi! What would you like to know?"),
        ("Thank you.", "You are welcome."), ("How are you?", "I am well, thank you."),
        ("Can you help me?", "Yes. Ask me a question."), ("Goodbye.", "Goodbye!"),
    ] for _ in range(3)]
    out += [  # every printable sign appears somewhere
        "Signs: + - * / = < > ( ) [ ] { } ! ? . , : ; ' \" _ % & # @ $ ~ ^ | \\",
        "Her e-mail said: \"Meet me at 10:30 (not 11:00)!\" - and so we did.",
        "2 + 3 = 5; 9 - 4 = 5; 6 * 2 = 12; 8 / 2 = 4; 50% of 10 is 5.",
    ] * 20
    rng.shuffle(out)
    return out


def story(rng: random.Random) -> str:
    name, place, (now, past) = rng.choice(NAMES), rng.choice(PLACES), rng.choice(VERBS)
    animal, adj = rng.choice(ANIMALS), rng.choice(ADJECTIVES)
    thing, colour = rng.choice(msd.COLOURS)
    country, city = rng.choice(msd.CAPITALS + MORE_CITIES)
    n = rng.randint(2, 9)
    return rng.choice([
        f"{name} {past} {place} with {article(adj)} {adj} {animal}. The {animal} saw {thing}. It was {colour}.",
        f"Every day {name} {now} {place}. Today {name} {past} {place} in {city}.",
        f"{name} lives in {city}, a city in {country}. {name} has {number_name(n)} {animal}s.",
        f"{name} counted {number_name(n * 11)} {animal}s - or was it {number_name(n * 11 + 1)}?",
        f"There are {n} {animal}s in {place}. {name} counts them: {', '.join(str(i) for i in range(1, n + 1))}.",
        f"The {adj} {animal} {now} {place}. {name} {now} {place} too.",
        f"The teacher told {name} about {article(adj)} {adj} {animal} in {city}.",
    ])


def copying(rng: random.Random) -> str:
    """Repeat a random list of words: only attending back to the prompt can do this, which is
    the skill fine-tuning leans on (the sample's answers restate their question's words)."""
    vocab = msd.WORDS + ANIMALS + NAMES + [c for pair in msd.CAPITALS + MORE_CITIES for c in pair]
    words = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 4)))
    return rng.choice([
        chat(f"Repeat after me: {words}", words),
        chat(f"Say '{words}'.", words),
        chat(f"Repeat this: {words}.", f"{words}."),
        f"{words}. I said {words}.",
    ])


def documents(seed: int = SEED, n_stories: int = 4000, n_copies: int = 8000, max_tokens: int = 120) -> list[str]:
    """The corpus: pieces packed into documents of at most `max_tokens` tokens (one `text`
    record each, within max_seq_len with BOS and EOS), so a batch row holds several pieces
    rather than padding."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(DATA, "tiny_tokenizer.model"))
    rng = random.Random(seed)
    pieces = facts(rng) * 3 + [story(rng) for _ in range(n_stories)] + [copying(rng) for _ in range(n_copies)]
    rng.shuffle(pieces)
    docs, cur, used = [], "", 0
    for piece in pieces:
        sep = "" if cur.endswith("\n") or not cur else " "
        n = len(sp.encode(sep + piece))
        if cur and used + n > max_tokens:
            docs.append(cur)
            cur, sep, used = "", "", len(sp.encode(piece))
        else:
            used += n
        cur += sep + piece
    if cur:
        docs.append(cur)
    return docs


def check_no_sample_answers(docs: list[str]) -> None:
    """The corpus must not hold a response of the sample dataset (except bare words, which a
    spelling corpus cannot avoid: 'cat' is a word of both)."""
    text = "\n".join(docs)
    leaks = sorted({r["response"] for r in msd.examples() if " " in r["response"] and r["response"] in text})
    if leaks:
        raise SystemExit(f"the corpus holds sample-dataset answers: {leaks[:5]}")


def corpus_jsonl(docs: list[str]) -> str:
    """The trainer's dataset file: one `text` record per document (its sha256 is recorded)."""
    return "".join(json.dumps({"text": d}) + "\n" for d in docs)


def pretrain(out_path: str, steps: int, seed: int = SEED) -> dict:
    from gemma_ft_widgets import contract
    from gemma_ft_widgets.config import TrainingConfig
    from gemma_ft_widgets.train import loop, models

    docs = documents(seed)
    check_no_sample_answers(docs)
    corpus = corpus_jsonl(docs)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="pretrain_tiny_") as tmp:
        data_path = os.path.join(tmp, "corpus.jsonl")
        with open(data_path, "w", encoding="utf-8") as f:
            f.write(corpus)
        run_dir = os.path.join(tmp, "run")
        os.makedirs(run_dir)
        cfg = dict(PRETRAIN, dataset=data_path, max_steps=steps, seed=seed,
                   warmup_steps=min(PRETRAIN["warmup_steps"], steps // 10),
                   eval_every=min(PRETRAIN["eval_every"], steps), checkpoint_every=steps)
        contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), cfg)
        trainer = loop.Trainer(run_dir, TrainingConfig.from_dict(cfg))
        try:
            result = trainer.run()
        finally:
            trainer.close()
        models.save_npz_params(out_path, trainer.trainable)
        step_times = [e["step_time_s"] for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME))
                      if e.get("event") == "step"]
    losses = sorted(result.losses.items())
    record = {
        "made_by": "scripts/pretrain_tiny.py", "seed": seed, "steps": steps,
        "config": {k: v for k, v in cfg.items() if k != "dataset"},
        "corpus": {"documents": len(docs), "characters": len(corpus),
                   "sha256": hashlib.sha256(corpus.encode()).hexdigest()},
        "loss_first": round(losses[0][1], 4), "loss_last": round(losses[-1][1], 4),
        "eval_loss": {str(k): round(v, 4) for k, v in sorted(result.eval_losses.items())},
        "steps_per_s": round(1 / (sum(step_times) / len(step_times)), 1),
        "seconds": round(time.time() - t0, 1),
    }
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="default: the package's data/tiny_base.npz")
    parser.add_argument("--steps", type=int, default=PRETRAIN["max_steps"])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--smoke", action="store_true",
                        help="20 steps, into --out or a temporary folder (never the package's file)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps = 20
        args.out = args.out or os.path.join(tempfile.mkdtemp(prefix="tiny_base_smoke_"), "tiny_base.npz")
    args.out = args.out or os.path.join(DATA, "tiny_base.npz")
    record = pretrain(args.out, args.steps, args.seed)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(args.out)} ({os.path.getsize(args.out):,} bytes): loss "
          f"{record['loss_first']} -> {record['loss_last']}, eval {record['eval_loss']}, "
          f"{record['steps_per_s']} steps/s, {record['seconds']} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
