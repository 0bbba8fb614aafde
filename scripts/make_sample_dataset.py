"""Write gemma_ft_widgets/data/sample_dataset.jsonl: the quickstart dataset.

Every example is written here, from templates, deterministically (no download, no license
question). Prompt/response format. A few hundred short examples a tiny model can fit:

* capitals ("What is the capital of France?" -> "The capital of France is Paris."),
* small additions, spelled out,
* word tasks (reverse a word, capitalise it, count its letters),
* colours of familiar things,
* two answers repeated many times, so a tiny model memorises them; the tests check that
  greedy sampling after training reproduces MEMORISED_ANSWER.

    python scripts/make_sample_dataset.py            # writes the packaged file
    python scripts/make_sample_dataset.py --out F    # somewhere else
"""

from __future__ import annotations

import argparse
import json
import os
import random

MEMORISED_PROMPT = "What is the secret word?"
MEMORISED_ANSWER = "The secret word is pineapple."

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Greece", "Athens"), ("Poland", "Warsaw"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Ireland", "Dublin"), ("Belgium", "Brussels"),
    ("Hungary", "Budapest"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Cuba", "Havana"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("India", "New Delhi"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"),
    ("Russia", "Moscow"), ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Argentina", "Buenos Aires"),
    ("Colombia", "Bogota"), ("Australia", "Canberra"), ("Nepal", "Kathmandu"),
    ("Morocco", "Rabat"), ("Ghana", "Accra"), ("Iceland", "Reykjavik"),
]

COLOURS = [
    ("the sky on a clear day", "blue"), ("grass", "green"), ("snow", "white"),
    ("a ripe banana", "yellow"), ("a ripe tomato", "red"), ("coal", "black"),
    ("an orange", "orange"), ("a lemon", "yellow"), ("milk", "white"), ("a crow", "black"),
    ("a strawberry", "red"), ("a lime", "green"), ("the sun", "yellow"), ("chocolate", "brown"),
    ("a pumpkin", "orange"), ("an emerald", "green"), ("a ruby", "red"), ("ink", "black"),
]

WORDS = [
    "cat", "dog", "sun", "moon", "star", "tree", "fish", "bird", "book", "lamp", "door",
    "rain", "snow", "wind", "fire", "rock", "milk", "cake", "ship", "road", "king", "frog",
    "apple", "river", "cloud", "house", "chair", "table", "music", "green", "stone", "light",
    "water", "bread", "horse", "tiger", "plant", "sugar", "paper", "glass",
]

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]


def examples(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out: list[dict] = []

    for country, city in CAPITALS:
        out.append({"prompt": f"What is the capital of {country}?",
                    "response": f"The capital of {country} is {city}."})
        out.append({"prompt": f"Which city is the capital of {country}?",
                    "response": f"{city} is the capital of {country}."})

    pairs = [(a, b) for a in range(11) for b in range(11)]
    rng.shuffle(pairs)
    for a, b in pairs[:90]:
        if rng.random() < 0.5:
            out.append({"prompt": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."})
        else:
            out.append({"prompt": f"Add {NUMBER_WORDS[a]} and {NUMBER_WORDS[b]}.",
                        "response": f"{NUMBER_WORDS[a].capitalize()} and {NUMBER_WORDS[b]} make "
                                    f"{NUMBER_WORDS[a + b] if a + b < len(NUMBER_WORDS) else a + b}."})

    for word in WORDS:
        out.append({"prompt": f"Spell the word '{word}' backwards.", "response": word[::-1]})
        out.append({"prompt": f"Write '{word}' in capital letters.", "response": word.upper()})
        out.append({"prompt": f"How many letters are in the word '{word}'?",
                    "response": f"The word '{word}' has {NUMBER_WORDS[len(word)]} letters."})

    for thing, colour in COLOURS:
        out.append({"prompt": f"What colour is {thing}?",
                    "response": f"{thing[0].upper() + thing[1:]} is {colour}."})

    # Answers repeated often enough to be memorised by a tiny model in a few dozen steps.
    for _ in range(30):
        out.append({"prompt": MEMORISED_PROMPT, "response": MEMORISED_ANSWER})
    for _ in range(15):
        out.append({"prompt": "Who trained you?",
                    "response": "I was fine-tuned with gemma-ft-widgets."})

    rng.shuffle(out)
    return out


def default_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "gemma_ft_widgets", "data", "sample_dataset.jsonl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=default_path())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = examples(args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} examples to {os.path.normpath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
