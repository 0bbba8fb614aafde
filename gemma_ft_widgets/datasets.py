"""Dataset files: the four formats, detection, validation by line, and Gemma's turn layout.

No jax: the config validator and the panel's preview use this in the kernel; the trainer
tokenises what `render_example` returns.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator

FORMATS = ("text", "prompt_response", "alpaca", "chat")
START, END = "<start_of_turn>", "<end_of_turn>"
# Gemma 4 names its turn tokens differently (ids 105/106 of its vocabulary, as gemma's
# Gemma4Tokenizer says). Examples are rendered with START/END for every family, and the
# tokenizer of a Gemma 4 model maps them (`for_family`), so that it sees its own turn tokens.
GEMMA4_START, GEMMA4_END = "<|turn>", "<turn|>"


def for_family(text: str, family: str) -> str:
    """`text`'s turn markers as the model family's tokenizer names them."""
    if family != "gemma4":
        return text
    return text.replace(START, GEMMA4_START).replace(END, GEMMA4_END)


def from_family(text: str, family: str) -> str:
    """The inverse of `for_family`: a decoded Gemma 4 text with the markers the rest of the
    package reads."""
    if family != "gemma4":
        return text
    return text.replace(GEMMA4_START, START).replace(GEMMA4_END, END)
MAX_LINE_BYTES = 16 * 1024 * 1024  # a longer line is reported, never loaded whole
_ROLES = {"system", "user", "assistant", "model"}
MAX_EVAL_EXAMPLES = 1024  # eval cost stays bounded on big datasets


class DatasetError(ValueError):
    """A dataset problem, with every message naming the file and, where it can, the line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:20]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__("\n".join(shown) + more)


def detect_format(record: dict) -> str | None:
    """The format a record looks like, or None."""
    if "messages" in record:
        return "chat"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "response" in record:
        return "prompt_response"
    if "text" in record:
        return "text"
    return None


def record_problem(record: object, fmt: str) -> str | None:
    """Why `record` is not a valid example of `fmt`, or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    required = {"text": ("text",), "prompt_response": ("prompt", "response"),
                "alpaca": ("instruction", "output"), "chat": ("messages",)}[fmt]
    missing = [k for k in required if k not in record]
    if missing:
        return f"missing field(s) {', '.join(map(repr, missing))} for format {fmt!r}" + _found_keys(record)
    if fmt == "chat":
        return _chat_problem(record["messages"])
    for key in required + (("input",) if fmt == "alpaca" and "input" in record else ()):
        if not isinstance(record[key], str):
            return f"field {key!r} must be a string, got {type(record[key]).__name__}"
    if fmt != "text" and not record[required[-1]].strip():
        return f"field {required[-1]!r} is empty"
    if fmt == "text" and not record["text"].strip():
        return "field 'text' is empty"
    return None


def _found_keys(record: object, limit: int = 8) -> str:
    """'; found keys 'a', 'b'': what the line has instead (a renamed column is then obvious)."""
    if not isinstance(record, dict):
        return ""
    if not record:
        return "; the line has no keys"
    keys = [repr(str(k)) for k in list(record)[:limit]]
    more = f" and {len(record) - limit} more" if len(record) > limit else ""
    return f"; found key(s) {', '.join(keys)}{more}"


def _chat_problem(messages: object) -> str | None:
    if isinstance(messages, str):  # CSV cells hold the list as JSON text
        try:
            messages = json.loads(messages)
        except ValueError:
            return "field 'messages' is not a JSON list"
    if not isinstance(messages, list) or not messages:
        return "field 'messages' must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"messages[{i}] needs 'role' and 'content'"
        if m["role"] not in _ROLES:
            return f"messages[{i}] has role {m['role']!r}; expected system, user or assistant"
        if not isinstance(m["content"], str):
            return f"messages[{i}].content must be a string"
    if messages[-1]["role"] not in ("assistant", "model"):
        return "the last message must be from the assistant (it is what the model learns)"
    return None


def _iter_jsonl(path: str) -> Iterator[tuple[int, object | None, str | None]]:
    """(line number, parsed object or None, problem or None) per non-blank line."""
    with open(path, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the giant line
                    raw = f.readline(MAX_LINE_BYTES)
                limit = (f"{MAX_LINE_BYTES // 2**20} MiB" if MAX_LINE_BYTES >= 2**20 else f"{MAX_LINE_BYTES} bytes")
                yield lineno, None, f"line longer than {limit}; split it or shorten it"
                continue
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw), None
            except (ValueError, UnicodeDecodeError) as e:
                yield lineno, None, f"not valid JSON ({getattr(e, 'msg', e)})"


def _iter_csv(path: str) -> Iterator[tuple[int, object | None, str | None]]:
    # utf-8-sig: spreadsheet programs' "CSV UTF-8" starts with a byte-order mark, which would
    # otherwise become part of the first column's name.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            return
        for row in reader:
            if None in row:
                yield reader.line_num, None, "more cells than header columns"
                continue
            yield reader.line_num, {k: v for k, v in row.items() if v is not None}, None


def iter_lines(path: str) -> Iterator[tuple[int, object | None, str | None]]:
    """(line number, record or None, problem or None) for each record of a JSONL or CSV file."""
    if path.lower().endswith(".csv"):
        return _iter_csv(path)
    return _iter_jsonl(path)


def check_readable(path: str) -> str | None:
    """Why the file cannot be used at all, or None."""
    if not path:
        return "no dataset file given"
    if not os.path.exists(path):
        return f"file not found: {path}"
    if os.path.isdir(path):
        return f"is a directory, not a file: {path}"
    if not os.access(path, os.R_OK):
        return f"file is not readable: {path}"
    if os.path.getsize(path) == 0:
        return f"file is empty: {path}"
    return None


def load_records(path: str, fmt: str = "auto", limit: int | None = None) -> tuple[list[dict], str]:
    """Read and validate a dataset file. Returns (records, format).

    Raises DatasetError listing every bad line (file and line number), not just the first.
    `limit` stops after that many good records (for previews).
    """
    problem = check_readable(path)
    if problem:
        raise DatasetError([problem])
    records, problems = [], []
    name = os.path.basename(path)
    try:
        for lineno, obj, problem in iter_lines(path):
            if problem is None and fmt == "auto":
                detected = detect_format(obj) if isinstance(obj, dict) else None
                if detected is None:
                    problem = ("cannot tell the format: expected 'text', 'prompt'+'response', "
                               "'instruction'+'output' or 'messages'" + _found_keys(obj))
                else:
                    fmt = detected
            if problem is None:
                problem = record_problem(obj, fmt)
            if problem:
                problems.append(f"{name} line {lineno}: {problem}")
            else:
                records.append(_normalise(obj, fmt))
                if limit is not None and len(records) >= limit:
                    break
    except (UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{name}: cannot be read as text ({e})")
    if not records and not problems:
        problems.append(f"{name}: no examples in the file")
    if problems:
        raise DatasetError(problems)
    return records, fmt


def cut_note(summary: dict) -> str:
    """What max_seq_len did to the examples, from the trainer's `data` event ("" when nothing):
    how many were truncated of how many read, and how many were dropped (no response token
    left to learn from) and from which split."""
    cut, dropped = summary.get("truncated") or 0, summary.get("dropped") or 0
    if not cut and not dropped:
        return ""
    n = (summary.get("train_examples") or 0) + (summary.get("eval_examples") or 0) + dropped
    limit = summary.get("max_seq_len")
    note = f"{cut} of {n} examples truncated" + (f" to max_seq_len {limit}" if limit else "")
    if dropped:
        where = ", ".join(f"{k} from {split}" for split, k in
                          (("train", summary.get("dropped_train")), ("eval", summary.get("dropped_eval"))) if k)
        note += (f"; {dropped} dropped" + (f" ({where})" if where else "")
                 + ": the prompt fills max_seq_len, no response token is left to learn")
    return note


def split_indices(n: int, eval_fraction: float, seed: int):
    """(train, eval) indices, sorted numpy arrays: a seeded shuffle, then the first
    round(n * eval_fraction) examples are held out. The trainer's split, and the check before
    start's (length_check.py); numpy, imported here only when a split is made."""
    import numpy as np

    perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
    n_eval = int(round(n * eval_fraction)) if eval_fraction > 0 else 0
    if eval_fraction > 0 and n >= 2:
        n_eval = max(1, n_eval)
    n_eval = min(n_eval, n - 1, MAX_EVAL_EXAMPLES)
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


def _normalise(record: dict, fmt: str) -> dict:
    if fmt == "chat" and isinstance(record["messages"], str):
        record = dict(record, messages=json.loads(record["messages"]))
    return record


def _turn(role: str, text: str) -> str:
    return f"{START}{role}\n{text}{END}\n"


def render_example(record: dict, fmt: str) -> tuple[str, str]:
    """(prompt, response) laid out in Gemma's turn format; the loss covers the response only.

    The prompt ends with `<start_of_turn>model\\n`, the response with `<end_of_turn>`. Gemma
    has no system role: a system message is put before the first user turn's text. In chat,
    every turn before the last assistant message is prompt.
    """
    if fmt == "text":
        return "", record["text"]
    if fmt == "prompt_response":
        return _turn("user", record["prompt"]) + f"{START}model\n", record["response"] + END
    if fmt == "alpaca":
        user = record["instruction"]
        if record.get("input", "").strip():
            user += "\n\n" + record["input"]
        return _turn("user", user) + f"{START}model\n", record["output"] + END
    if fmt == "chat":
        messages = record["messages"]
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] != "system"]
        prompt = io.StringIO()
        pending_system = system
        for m in turns[:-1]:
            text = m["content"]
            if m["role"] == "user" and pending_system:
                text, pending_system = pending_system + "\n\n" + text, ""
            prompt.write(_turn("user" if m["role"] == "user" else "model", text))
        prompt.write(f"{START}model\n")
        return prompt.getvalue(), turns[-1]["content"] + END
    raise ValueError(f"unknown dataset format {fmt!r}")


def render_prompt(user_text: str) -> str:
    """A single user turn, ready for the model to answer (the playground uses it)."""
    return _turn("user", user_text) + f"{START}model\n"


def render_conversation(messages: list[dict]) -> str:
    """A conversation ({"role": "user" | "assistant" | "system", "content"} messages, the last
    one the user's), laid out as training lays out a chat record, ready for the model's answer."""
    return render_example({"messages": list(messages) + [{"role": "assistant", "content": ""}]}, "chat")[0]
