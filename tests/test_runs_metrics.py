"""runs/metrics.py: the status summary read from the end of a long history agrees with the one
folded from every event; MetricsBlocks hands out whole lines, appended bytes only."""

from __future__ import annotations

import json
import os
import random

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs.metrics import MetricsBlocks, MetricsSummary, summary_from_end

FIELDS = ("last_step", "last_eval", "last_start", "last_checkpoint", "last_final", "first_time", "stepped")


def forward(run_dir) -> MetricsSummary:
    s = MetricsSummary(str(run_dir))
    s.FROM_END_BYTES = 1 << 62  # never from the end
    return s.refresh()


def from_end(run_dir, block_size: int = 1 << 20) -> MetricsSummary:
    s = MetricsSummary(str(run_dir))
    s.FROM_END_BYTES = 0  # always from the end
    s.FROM_END_BLOCK = block_size
    return s.refresh()


def same(a: MetricsSummary, b: MetricsSummary) -> None:
    for name in FIELDS:
        assert getattr(a, name) == getattr(b, name), name
    assert a.reader.offset == b.reader.offset


def ev(kind, **kw) -> str:
    return json.dumps({"event": kind, "time": kw.pop("time", 1.7e9), **kw}, separators=(",", ":"))


def history(rng: random.Random, attempts: int = 3, steps: int = 300) -> list[str]:
    lines, step = [], 0
    for attempt in range(1, attempts + 1):
        lines.append(ev("start", attempt=attempt, resume_step=step or None, max_steps=10_000, pid=1))
        lines.append(ev("data", train_examples=9, eval_examples=1))
        for _ in range(rng.randint(0, steps)):
            step += 1
            lines.append(ev("step", step=step, loss=rng.random(), note='a "step" and "start" in a string'))
            if rng.random() < 0.05:
                lines.append(ev("eval", step=step, eval_loss=rng.random()))
            if rng.random() < 0.03:
                lines.append(ev("checkpoint", step=step, path=f"checkpoints/step_{step}"))
            if rng.random() < 0.01:
                lines.append(rng.choice(["garbage", "", "[1]", '{"event":"step","step":"x"}',
                                         '{"event":"step","step":1.5}', '{"event":"final"', "\xff"]))
        if rng.random() < 0.6:
            lines.append(ev("final", state=rng.choice(["FINISHED", "ABORTED"]), step=step))
    return lines


def write(path, lines, tail: str = "") -> None:
    with open(path, "wb") as f:
        f.write(("\n".join(lines) + "\n" + tail).encode("utf-8", errors="surrogateescape"))


@pytest.mark.parametrize("seed", range(12))
def test_summary_from_the_end_equals_the_folded_one(tmp_path, seed):
    rng = random.Random(seed)
    lines = history(rng, attempts=rng.randint(1, 4))
    if seed % 3 == 0:
        lines = [ln for ln in lines if '"eval"' not in ln]  # a kind that never occurs
    if seed % 4 == 1:
        lines = ['{"no":"time"}', "junk"] + lines  # the first event with a time is not the first line
    write(tmp_path / contract.METRICS_NAME, lines, tail='{"event":"step","st' if seed % 2 else "")
    ref = forward(tmp_path)
    for block_size in (64, 1000, 1 << 20):
        same(from_end(tmp_path, block_size), ref)


def test_summary_from_the_end_of_a_file_without_a_start_or_a_complete_line(tmp_path):
    path = tmp_path / contract.METRICS_NAME
    write(path, [ev("step", step=1, loss=1.0), ev("step", step=2, loss=0.5), ev("final", state="FINISHED")])
    same(from_end(tmp_path, 16), forward(tmp_path))
    with open(path, "wb") as f:
        f.write(b'{"event":"step","step":1')  # no newline yet
    s = from_end(tmp_path)
    assert s.last_step is None and s.reader.offset == 0
    assert summary_from_end(path) is None


def test_a_final_before_the_last_start_does_not_count(tmp_path):
    write(tmp_path / contract.METRICS_NAME, [ev("start", attempt=1), ev("step", step=1), ev("final", state="ABORTED"),
                                             ev("start", attempt=2, resume_step=1)])
    s = from_end(tmp_path, 32)
    assert s.last_final is None and not s.stepped and s.last_step["step"] == 1
    same(s, forward(tmp_path))


def test_a_long_history_is_summarised_from_its_end_then_followed(tmp_path):
    path = tmp_path / contract.METRICS_NAME
    lines = [ev("start", attempt=1, max_steps=100_000, time=100.0)]
    lines += [ev("step", step=i, loss=1.0 / i) for i in range(1, 30_001)]
    write(path, lines)
    assert os.path.getsize(path) > MetricsSummary.FROM_END_BYTES
    s = MetricsSummary(str(tmp_path)).refresh()
    assert s.last_step["step"] == 30_000 and s.stepped and s.first_time == 100.0
    assert s.value("start", "max_steps") == 100_000 and s.last_final is None
    assert s.events < 100  # only the lines it needed were parsed
    assert s.reader.offset == os.path.getsize(path)
    with open(path, "a") as f:
        f.write(ev("step", step=30_001, loss=0.1) + "\n" + ev("final", state="FINISHED", step=30_001) + "\n")
    s.refresh()
    assert s.last_step["step"] == 30_001 and s.last_final["state"] == "FINISHED"
    same(s, forward(tmp_path))
    write(path, lines[:10])  # replaced by a shorter file: read again from the start
    s.refresh()
    assert s.last_step["step"] == 9 and s.last_final is None


def test_metrics_blocks_yield_whole_lines_and_keep_a_partial_one(tmp_path):
    path = tmp_path / contract.METRICS_NAME
    lines = [ev("step", step=i, pad="x" * (i % 50)) for i in range(1, 200)]
    write(path, lines, tail='{"event":"step","st')
    reader = MetricsBlocks(str(tmp_path))
    blocks = list(reader.read(100))
    assert all(b.endswith(b"\n") for b in blocks)
    assert b"".join(blocks).decode().splitlines() == lines
    assert reader.offset == os.path.getsize(path) - len('{"event":"step","st')
    assert list(reader.read()) == [] and not reader.restarted
    with open(path, "a") as f:
        f.write('ep":200}\n')
    assert b"".join(reader.read()) == b'{"event":"step","step":200}\n'
    write(path, lines[:3])
    assert b"".join(reader.read()).decode().splitlines() == lines[:3] and reader.restarted
    assert list(MetricsBlocks(str(tmp_path / "missing")).read()) == []
