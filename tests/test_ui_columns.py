"""The bulk parse of metrics.jsonl (ui/columns.py) against the plain one (json.loads per line,
contract.JsonlTail): on every kind of line, valid or not, the curves, the events, the corrupt
count and the last step must come out the same. And the incremental decimation (plots.Decimator)
against the contract of `decimate`."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs.metrics import MetricsBlocks
from gemma_ft_widgets.ui import plots
from gemma_ft_widgets.ui.columns import FIELDS, BlockParser, MetricsBatch
from gemma_ft_widgets.ui.series import RunSeries


def step_line(i: int, rng: random.Random, compact: bool = True, **over) -> str:
    e = {"event": "step", "time": 1.7e9 + 0.0123 * i, "step": i, "loss": 2.0 / (1 + i) + rng.random() * 0.01,
         "lr": 3e-4, "tokens_per_s": round(20000 + rng.random() * 100, 1), "step_time_s": 0.0123,
         "elapsed_s": round(0.0123 * i, 3), "device_mem_bytes": None, "host_rss_bytes": 812345678}
    e.update(over)
    return json.dumps(e, separators=(",", ":") if compact else None)


ODD_STEP_LINES = [
    # values of every kind in the fields the curves read
    '{"event":"step","time":1,"step":7,"loss":NaN,"lr":1,"tokens_per_s":Infinity,"step_time_s":-Infinity}',
    '{"event":"step","time":1,"step":7,"loss":null,"lr":1,"tokens_per_s":null,"step_time_s":1e-05}',
    '{"event":"step","time":1,"step":7,"loss":-0.0,"lr":1,"tokens_per_s":1E+3,"step_time_s":0}',
    '{"event":"step","time":1,"step":7,"loss":true,"lr":1,"tokens_per_s":false,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":"2.5","lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1 ,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":-3,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":0,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":123456789012345678901,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1.00000000000000000000000000000000000001,"lr":1,'
    '"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1e999,"lr":1,"tokens_per_s":-1e999,"step_time_s":1}',
    # not a step for the curves (the step is not an int)
    '{"event":"step","time":1,"step":7.0,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":null,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":true,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":"7","loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":1e2,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    # other layouts: other order, a missing or an extra key, spaces, a nested value
    '{"event":"step","time":1,"loss":1.5,"step":8,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":9,"loss":1.5,"lr":1,"step_time_s":1}',
    '{"event":"step","time":1,"step":9,"loss":1.5,"lr":1,"tokens_per_s":3,"step_time_s":1,"grad_norm":2}',
    '{"event": "step", "time": 1, "step": 10, "loss": 1.5, "lr": 1, "tokens_per_s": 3, "step_time_s": 1}',
    '{"event":"step","time":1,"step":11,"loss":1.5,"lr":1,"tokens_per_s":3,"step_time_s":1,"x":{"a":1,"b":2}}',
    '{"event":"step","time":1,"step":12,"loss":1.5,"lr":1,"tokens_per_s":3,"step_time_s":1 }',
    '{"event":"step","time":1,"step":12,"loss":1.5,"loss":2.5,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":13,"loss":1.5,"lr":1,"tokens_per_s":3,"step_time_s":1}\r',
    '  {"event":"step","time":1,"step":14,"loss":1.5,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":"now","step":15,"loss":1.5,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":16,"loss":1.5,"lr":[1],"tokens_per_s":3,"step_time_s":1}',
    # corrupt: not JSON, in the fields the curves read or around them
    '{"event":"step","time":1,"step":07,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":01.5,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1.,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":.5,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":+1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1.2.3,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1e,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":--1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":-,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":nan,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1 2}',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}}',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":\x00\x00,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}'
    '{"event":"step","time":1,"step":8,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}garbage',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1,}',
    '{"event":"step","time":1,"step":7,"loss":1,"lr":1,"tokens_per_s":3,"step_time_s":1,"":1}',
    '{"event":"step","time":1,"step":7,"lo\u00e9ss":1,"lr":1,"tokens_per_s":3,"step_time_s":1}',
]

EVAL = '{"event":"eval","time":1,"step":50,"eval_loss":0.9}'
DATA = '{"event":"data","time":1,"format":"text","train_examples":900,"eval_examples":100,"truncated":0}'
COMPILE = '{"event":"compile","time":1,"seconds":3.0}'
FINAL = '{"event":"final","time":1,"state":"FINISHED","step":7,"checkpoint":null}'
START_RESUME = '{"event":"start","time":1,"attempt":2,"resume_step":5,"max_steps":100,"pid":1}'
START = '{"event":"start","time":1,"attempt":3,"resume_step":null,"max_steps":100,"pid":1}'
OTHER_LINES = [
    EVAL, DATA, COMPILE, FINAL, START_RESUME, START,
    '{"event":"eval","time":1,"step":50.5,"eval_loss":0.9}',
    '{"event":"eval","time":1,"step":50,"eval_loss":NaN}',
    '{"event":"eval","time":1,"step":50,"eval_loss":null}',
    '{"event":"eval","time":1,"step":50,"eval_loss":"x"}',
    '{"event":"eval","time":1,"step":50,"eval_loss":01}',
    '{"event":"eval","time":1,"step":null,"eval_loss":1}',
    '{"event": "eval", "time": 1, "step": 60, "eval_loss": 0.5}',
    '{"event":"eval","time":1,"step":60,"eval_loss":0.5,"eval_accuracy":0.1}',
    '{"event":"eval","time":1,"step":60,"eval_loss":0.5',
    '{"event":"checkpoint","time":1,"step":100,"path":"checkpoints/step_100"}',
    '{"note":"no event key, with a step","step":3}',
    '[1,2]', '"just a string"', '42', 'not json at all', '\xff\xfe', '', '   ', '{"event":"step"',
    '{"event":"caf\u00e9","text":"\u65e5\u672c"}',
]


def write(path, lines: list[str]) -> None:
    with open(path, "wb") as f:
        for line in lines:
            f.write(line.encode("utf-8", errors="surrogateescape") if isinstance(line, str) else line)
            f.write(b"\n")


def reference(path) -> tuple[MetricsBatch, int, int]:
    tail = contract.JsonlTail(path)
    events = tail.read_new()
    return MetricsBatch.from_events(events), tail.corrupt_lines, tail.offset


BULK_ROWS: list[int] = []  # per bulk parse: step lines read in bulk


def bulk(path, block_size: int) -> tuple[MetricsBatch, int]:
    reader = MetricsBlocks(path)
    parser = BlockParser()
    batch = parser.parse(reader.read(block_size))
    BULK_ROWS.append(parser.bulk_rows)
    return batch, reader.offset


def assert_same(path, block_size: int = 4096) -> MetricsBatch:
    ref, corrupt, offset = reference(path)
    got, got_offset = bulk(path, block_size)
    assert got_offset == offset
    assert got.corrupt_lines == corrupt
    assert got.events == ref.events
    assert len(got) == len(ref)
    for name in FIELDS:
        np.testing.assert_array_equal(got.columns[name], ref.columns[name], err_msg=name)
    assert len(got.evals) == len(ref.evals)
    for name in ("step", "eval_loss"):
        np.testing.assert_array_equal(got.evals[name], ref.evals[name], err_msg=name)
    assert [e for _, e in got.others] == [e for _, e in ref.others]
    # The steps and evals before each other event (a start cuts the curves there).
    for (gl, _), (rl, _) in zip(got.others, ref.others):
        assert np.searchsorted(got.line, gl) == np.searchsorted(ref.line, rl)
        assert np.searchsorted(got.evals.line, gl) == np.searchsorted(ref.evals.line, rl)
    if len(ref):
        assert got.step_event(-1) == ref.step_event(-1)
    return got


def test_bulk_parse_of_a_plain_history_matches_json(tmp_path):
    rng = random.Random(0)
    lines = [START] + [step_line(i, rng) for i in range(1, 3001)]
    lines[1000:1000] = [EVAL] * 5
    path = tmp_path / "m.jsonl"
    write(path, lines)
    got = assert_same(path)
    assert len(got) == 3000 and got.step[-1] == 3000
    assert BULK_ROWS[-1] >= 2990


@pytest.mark.parametrize("seed", range(6))
def test_bulk_parse_matches_json_on_every_kind_of_line(tmp_path, seed):
    rng = random.Random(seed)
    lines: list[str] = []
    for i in range(1, 2500):
        r = rng.random()
        if r < 0.80:
            lines.append(step_line(i, rng, compact=rng.random() < 0.9))
        elif r < 0.93:
            lines.append(rng.choice(ODD_STEP_LINES))
        else:
            lines.append(rng.choice(OTHER_LINES))
    path = tmp_path / "m.jsonl"
    write(path, lines)
    for block_size in (300, 4096, 1 << 20):  # lines longer than a block, many blocks, one
        assert_same(path, block_size)
        assert BULK_ROWS[-1] > 1500


def test_each_odd_line_alone_among_plain_ones(tmp_path):
    rng = random.Random(1)
    plain = [step_line(i, rng) for i in range(1, 40)]
    for odd in ODD_STEP_LINES + OTHER_LINES:
        path = tmp_path / "m.jsonl"
        write(path, plain + [odd] + plain)
        assert_same(path)
        assert BULK_ROWS[-1] >= 70


TEMPLATE = ('{{"event":"step","time":{time},"step":{step},"loss":{loss},"lr":{lr},"grad_norm":{grad_norm},'
            '"tokens_per_s":{tokens_per_s},"step_time_s":{step_time_s},"elapsed_s":1,"device_mem_bytes":null,'
            '"host_rss_bytes":5}}')
OK_VALUES = {"time": "1.5", "step": "7", "loss": "1.5", "lr": "0.1", "grad_norm": "0.5", "tokens_per_s": "3",
             "step_time_s": "0.5"}


@pytest.mark.parametrize("field", FIELDS)
def test_a_value_that_is_not_a_json_number_in_the_curves_fields_is_never_taken(tmp_path, field):
    rng = random.Random(2)
    bad = ["01", "-01", "1.", ".5", "+1", "1e", "1e+", "--1", "1.2.3", "0x10", "1_0", "1 2", "nan", "inf",
           "Nan", "nul", "Infinit", "-", "1-2", "1e5.0"]
    for value in bad:
        fields = {**OK_VALUES, field: value}
        path = tmp_path / "m.jsonl"
        write(path, [step_line(i, rng) for i in range(1, 30)] + [TEMPLATE.format(**fields)])
        got = assert_same(path)
        assert got.corrupt_lines == 1, (field, value)


PLAIN = TEMPLATE.format(**OK_VALUES)


@pytest.mark.parametrize("bad", [
    PLAIN[:-1],  # no closing brace
    PLAIN.replace('"host_rss_bytes":5}', '"host_rss_bytes":55'),
    PLAIN.replace('"lr":0.1', '"lr":NaN0'),  # a literal and more
    PLAIN.replace('"lr":0.1', '"lr":Infinity5'),
    PLAIN.replace('"loss":1.5', '"loss":Infinityy'),
    PLAIN.replace('"loss":1.5', '"loss":nulll'),
    PLAIN + "}",
    PLAIN.replace('"lr":0.1', '"lr":0.1x'),  # the values the curves do not read: still checked
    PLAIN.replace('"lr":0.1', '"lr":\x00\x00'),
    PLAIN.replace('"lr":0.1', '"lr":.1'),
    PLAIN.replace('"lr":0.1', '"lr":+1'),
    PLAIN.replace('"lr":0.1', '"lr":1.'),
    PLAIN.replace('"lr":0.1', '"lr":'),
    PLAIN.replace('"lr":0.1', '"lr":nul'),
    PLAIN.replace('"time":1.5', '"time":1 5'),
    PLAIN.replace('"host_rss_bytes":5', '"host_rss_bytes":5e'),
    PLAIN.replace('"device_mem_bytes":null', '"device_mem_bytes":nulll'),
    PLAIN.replace('"lr"', '"lx"').replace('"lx":0.1', '"lx":0.1,'),
])
def test_a_line_of_the_known_layout_that_is_not_json_is_skipped(tmp_path, bad):
    rng = random.Random(6)
    path = tmp_path / "m.jsonl"
    write(path, [step_line(i, rng) for i in range(1, 30)] + [bad])
    got = assert_same(path)
    assert got.corrupt_lines == 1 and len(got) == 29


@pytest.mark.parametrize("odd", [PLAIN[:-1] + ',"x":1}', PLAIN.replace('"device_mem_bytes":null', '"device_mem_bytes":"x"'),
                                 PLAIN.replace('"lr":0.1', '"lr":true'), PLAIN.replace('"lr":0.1', '"lr":[0.1]')])
def test_a_valid_line_that_does_not_fit_the_layout_is_parsed_one_by_one(tmp_path, odd):
    rng = random.Random(8)
    path = tmp_path / "m.jsonl"
    write(path, [step_line(i, rng) for i in range(1, 30)] + [odd])
    got = assert_same(path)
    assert got.corrupt_lines == 0 and len(got) == 30 and BULK_ROWS[-1] >= 29


def test_literals_in_the_values_the_curves_do_not_read(tmp_path):
    rng = random.Random(7)
    ok = [PLAIN.replace('"lr":0.1', f'"lr":{v}') for v in ("NaN", "Infinity", "-Infinity", "null", "-0", "1E-7")]
    path = tmp_path / "m.jsonl"
    write(path, [step_line(i, rng) for i in range(1, 30)] + ok)
    got = assert_same(path)
    # NaN / Infinity literals are not JSON: those lines take the slow path (no writer makes them
    # since metrics.jsonl became strict JSON, null plus a `nonfinite` flag), and agree with it.
    assert got.corrupt_lines == 0 and len(got) == 29 + len(ok) and BULK_ROWS[-1] == len(got) - 3


def test_series_read_matches_series_extend(tmp_path):
    rng = random.Random(3)
    lines = [START, DATA, COMPILE]
    lines += [step_line(i, rng) for i in range(1, 400)] + [EVAL]
    lines += ['{"event":"start","time":1,"attempt":2,"resume_step":300,"max_steps":500,"pid":1}']
    lines += [step_line(i, rng) for i in range(301, 500)] + [FINAL]
    path = tmp_path / contract.METRICS_NAME
    write(path, lines)
    a = RunSeries(str(tmp_path))
    assert a.read()
    b = RunSeries(str(tmp_path))
    b.extend(contract.read_jsonl(path))
    for name in ("step", "loss", "tokens_per_s", "step_time", "lr", "grad_norm", "time", "eval_step", "eval_loss"):
        np.testing.assert_array_equal(getattr(a, name).values, getattr(b, name).values)
    assert list(a.step.values[:3]) == [1, 2, 3] and a.step.values[-1] == 499 and len(a) == 499
    assert a.last_step == b.last_step and a.final == b.final and a.last_start == b.last_start
    assert a.last_data == b.last_data and a.last_compile == b.last_compile and a.events == b.events
    assert a.generation == 1  # the resume cut the curves
    assert a.offset == os.path.getsize(path)


def test_series_read_reads_appended_lines_only_and_restarts_on_a_new_file(tmp_path):
    path = tmp_path / contract.METRICS_NAME
    rng = random.Random(4)
    write(path, [step_line(i, rng) for i in range(1, 11)])
    s = RunSeries(str(tmp_path))
    assert s.read() and len(s) == 10
    v, gen = s.version, s.generation
    assert not s.read() and s.version == v  # nothing new
    with open(path, "a") as f:
        f.write(step_line(11, rng) + "\n" + step_line(12, rng)[:20])  # the last line incomplete
    assert s.read() and len(s) == 11 and s.generation == gen
    with open(path, "a") as f:
        f.write(step_line(12, rng)[20:] + "\n")
    assert s.read() and list(s.step.values[-2:]) == [11, 12]
    write(path, [step_line(i, rng) for i in range(1, 4)])  # replaced by a shorter file
    assert s.read() and list(s.step.values) == [1, 2, 3] and s.generation > gen


def test_a_long_history_is_read_in_bulk(tmp_path):
    """Big blocks take the bulk path with the module's own thresholds."""
    rng = random.Random(5)
    path = tmp_path / contract.METRICS_NAME
    write(path, [START] + [step_line(i, rng) for i in range(1, 20001)])
    parser = BlockParser()
    batch = parser.parse(MetricsBlocks(path).read(1 << 20))
    assert parser.bulk_rows == 20000 and len(batch) == 20000
    ref, _, _ = reference(path)
    np.testing.assert_array_equal(batch.loss, ref.loss)


# -- incremental decimation ----------------------------------------------------------------
def check_decimated(x, y, dx, dy, max_points):
    assert len(dx) == len(dy) <= max(max_points, 4)
    assert dx[0] == x[0] and dx[-1] == x[-1]
    assert np.all(np.diff(dx) > 0) and set(dx).issubset(set(x))
    assert np.nanmax(dy) == np.nanmax(y) and np.nanmin(dy) == np.nanmin(y)


@pytest.mark.parametrize("max_points", [4, 7, 500, 2000])
def test_decimator_grows_point_by_point_like_a_fresh_one(max_points):
    rng = np.random.default_rng(0)
    n = 6000
    x = np.arange(1, n + 1, dtype=float)
    y = np.sin(x / 300) + rng.normal(0, 0.1, n)
    y[1234], y[4321] = 50.0, -50.0
    y[2000:2100] = np.nan
    y[3000] = np.inf
    dec = plots.Decimator(max_points)
    sizes = list(range(1, 50)) + list(range(50, n + 1, 37)) + [n]
    for m in sizes:
        dx, dy = dec.update(x[:m], y[:m], key="a")
        fx, fy = plots.Decimator(max_points).update(x[:m], y[:m], key="a")
        np.testing.assert_array_equal(dx, fx)  # incremental == built at once
        np.testing.assert_array_equal(dy, fy)
        if m > max(max_points, 4):
            check_decimated(x[:m], y[:m], dx, dy, max_points)
        else:
            np.testing.assert_array_equal(dx, x[:m])


def test_decimator_keeps_each_buckets_min_and_max_and_whole_nan_buckets():
    n = 100_000
    x = np.arange(n, dtype=float)
    y = np.random.default_rng(1).random(n)
    y[50_000:60_000] = np.nan
    dec = plots.Decimator(1000)
    dx, dy = dec.update(x, y)
    w = dec.width
    kept = set(dx.astype(int))
    for a in range(0, n, w * 7):
        seg = y[a:a + w]
        if np.isnan(seg).all():
            assert a in kept
        else:
            assert a + int(np.nanargmin(seg)) in kept and a + int(np.nanargmax(seg)) in kept
    assert np.isnan(dy).any() and len(dx) <= 1000


def test_decimator_starts_over_for_another_series_or_a_shorter_one():
    dec = plots.Decimator(100)
    x = np.arange(5000, dtype=float)
    dec.update(x, x, key=(1, 0))
    dx, dy = dec.update(x[:3000], -x[:3000], key=(1, 0))  # shorter: rebuilt
    assert dy.min() == -2999 and dx[-1] == 2999
    dx, dy = dec.update(x, x * 2, key=(1, 1))  # another generation: rebuilt
    assert dy.max() == 2 * 4999


def test_vectorised_decimate_equals_the_per_bucket_definition():
    rng = np.random.default_rng(2)
    for n, max_points in [(5000, 2000), (10_001, 7), (3333, 100)]:
        x = np.arange(n, dtype=float)
        y = rng.random(n)
        y[rng.integers(0, n, 50)] = np.nan
        y[rng.integers(0, n, 5)] = np.inf
        y[100:400] = np.nan
        buckets = (max_points - 2) // 2
        edges = 1 + (np.arange(buckets + 1) * (n - 2)) // buckets
        want = [0]
        for a, b in zip(edges[:-1], edges[1:]):
            seg = y[a:b]
            if np.isnan(seg).all():
                want.append(a)
                continue
            i, j = a + int(np.nanargmin(seg)), a + int(np.nanargmax(seg))
            want += [min(i, j)] + ([max(i, j)] if i != j else [])
        want.append(n - 1)
        dx, _ = plots.decimate(x, y, max_points)
        assert list(dx.astype(int)) == want
        assert not any(math.isnan(v) for v in dx)
