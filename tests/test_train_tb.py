"""TensorBoard scalars (train/tb.py): rate-limited points that fold what they skip into a mean."""

from __future__ import annotations

import os
import struct

import pytest

from gemma_ft_widgets.train.tb import ScalarWriter


def read_points(logdir: str) -> list[tuple[int, dict[str, float]]]:
    """(step, {tag: value}) of every scalar event, read as TFRecords (no TensorFlow)."""
    from tensorboard.compat.proto import event_pb2

    out = []
    for name in sorted(os.listdir(logdir)):
        if not name.startswith("events.out.tfevents"):
            continue
        data = open(os.path.join(logdir, name), "rb").read()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            if ev.HasField("summary"):
                out.append((ev.step, {v.tag: v.simple_value for v in ev.summary.value}))
    return out


def test_points_between_writes_are_folded_into_their_mean(tmp_path):
    w = ScalarWriter(str(tmp_path), min_interval=3600)
    for step in range(1, 101):
        w.scalars(step, {"loss": float(step), "lr": 0.5})
    w.scalars(100, {"eval_loss": 7.0}, force=True)  # an eval is written at once
    w.scalars(101, {"loss": 1.0})
    w.close()  # writes what is pending
    points = read_points(str(tmp_path))
    assert [s for s, _ in points] == [1, 100, 101]
    assert points[0][1] == {"loss": 1.0, "lr": 0.5}
    assert points[1][1] == pytest.approx({"loss": sum(range(2, 101)) / 99, "lr": 0.5, "eval_loss": 7.0})
    assert points[2][1] == {"loss": 1.0}


def test_without_a_rate_limit_every_call_is_a_point(tmp_path):
    w = ScalarWriter(str(tmp_path), min_interval=0)
    for step in range(1, 6):
        w.scalars(step, {"loss": step / 10})
    w.close()
    assert [(s, round(v["loss"], 6)) for s, v in read_points(str(tmp_path))] == [(i, i / 10) for i in range(1, 6)]
