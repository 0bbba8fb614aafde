"""Issue 11, defect 2: divergence. A non-finite loss or gradient norm fails the run ("loss
became NaN at step N"), keeps the last finite checkpoint and never saves a non-finite one;
non-finite config values are refused; every JSON the package writes is strict (null plus a
`nonfinite` flag), and sampling a NaN checkpoint is an error, not an empty answer.

Before the fix, learning_rate 1e4 trained to the end as FINISHED (exit 0) with NaN
checkpoints, `learning_rate: Infinity` passed validation, metrics.jsonl and `status --json`
held bare NaN, and `gemma-ft sample` printed an empty answer with exit 0."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import ConfigError, TrainingConfig, sample_dataset_path
from gemma_ft_widgets.runs import RunManager, State

from .conftest import wait_state


def strict_loads(text: str):
    """JSON as JavaScript's JSON.parse reads it: NaN and Infinity are errors."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def gemma_ft(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True,
                          text=True, timeout=kw.pop("timeout", 300), **kw)


@pytest.fixture
def real_manager(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    m = RunManager(str(tmp_path / "ws"), trainer=contract.DEFAULT_TRAINER)
    yield m
    if os.path.isdir(m.workspace) and m.status().active:
        m.stop(force=True)


@pytest.mark.slow
def test_a_diverging_run_fails_keeps_its_last_finite_checkpoint_and_writes_strict_json(real_manager, tmp_path):
    import jax
    import numpy as np
    from orbax import checkpoint as ocp

    from gemma_ft_widgets.train import checkpoints

    # lr 1e4: NaN within a few steps. log_every 3 with checkpoint_every 2: the save at an
    # unlogged step must check those steps too.
    run = real_manager.start({"model": "tiny", "dataset": sample_dataset_path(), "method": "full",
                              "learning_rate": 1e4, "warmup_steps": 0, "max_steps": 40, "log_every": 3,
                              "checkpoint_every": 2, "eval_every": 1000, "keep_checkpoints": 50})
    st = wait_state(real_manager, [State.FAILED, State.FINISHED], timeout=300)
    m = re.search(r"(loss|gradient norm) became (NaN|Infinity|-Infinity) at step (\d+)", st.reason)
    assert st.state == State.FAILED and m, (st.state, st.reason)
    bad_step = int(m.group(3))
    assert st.exit_code == contract.EXIT_DIVERGED and "Try a lower learning_rate" in st.reason
    steps = contract.checkpoint_steps(run.run_dir)
    assert steps and max(steps) < bad_step, (steps, bad_step)
    assert f"the last finite checkpoint is checkpoints/step_{max(steps)}" in st.reason
    for s in steps:  # every checkpoint on disk is finite
        tree = ocp.StandardCheckpointer().restore(os.path.join(contract.checkpoint_path(run.run_dir, s),
                                                               checkpoints.STATE_DIR))
        assert checkpoints.nonfinite_count(tree) == 0, s

    # strict JSON everywhere: metrics.jsonl, result.json, status --json
    with open(os.path.join(run.run_dir, contract.METRICS_NAME)) as f:
        events = [strict_loads(line) for line in f]
    diverged = [e for e in events if e["event"] == "diverged"]
    assert diverged and diverged[0]["step"] == bad_step and diverged[0]["checkpoint"] == max(steps)
    strict_loads(open(os.path.join(run.run_dir, contract.RESULT_NAME)).read())
    out = gemma_ft("status", "--json", "--workspace", real_manager.workspace)
    assert out.returncode == 0 and strict_loads(out.stdout)["state"] == "FAILED"

    # A NaN checkpoint (made by hand: the trainer never writes one) is refused by the sampler.
    tree = ocp.StandardCheckpointer().restore(os.path.join(contract.checkpoint_path(run.run_dir, max(steps)),
                                                           checkpoints.STATE_DIR))
    poisoned = jax.tree.map(lambda x: np.full_like(x, np.nan) if np.issubdtype(x.dtype, np.floating) else x,
                            tree["params"])
    checkpoints.save(run.run_dir, 99, poisoned, tree["opt_state"], 0, {}, keep=50)
    out = gemma_ft("sample", run.name, "Hello", "--checkpoint", "99", "--max-new-tokens", "4",
                   "--workspace", real_manager.workspace)
    assert out.returncode == 1 and out.stdout == "", (out.returncode, out.stdout)
    assert "step_99 holds" in out.stderr and "non-finite weights" in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("field,value", [("learning_rate", "Infinity"), ("learning_rate", "NaN"),
                                         ("eval_fraction", "-Infinity")])
def test_non_finite_config_values_are_refused_before_anything_starts(tmp_path, field, value):
    path = tmp_path / "cfg.json"
    path.write_text('{"model": "tiny", "dataset": "%s", "%s": %s}' % (sample_dataset_path(), field, value))
    with pytest.raises(ConfigError, match=f"{field}: must be a finite number"):
        TrainingConfig.from_json_file(str(path))
    ws = tmp_path / "ws"
    out = gemma_ft("start", str(path), "--workspace", str(ws))
    assert out.returncode == 1 and "must be a finite number" in out.stderr and not ws.exists()


def test_metrics_and_status_json_are_strict_even_for_a_run_with_bare_nan(tmp_path):
    """A metrics.jsonl written before the fix (bare NaN, as Python's json writes it) still
    gives strict JSON from `status --json` and `list --json`; appending writes null + flag."""
    ws = tmp_path / "ws"
    run_dir = ws / "tiny-old"
    run_dir.mkdir(parents=True)
    contract.atomic_write_json(run_dir / contract.CONFIG_NAME, {"model": "tiny", "max_steps": 5})
    with open(run_dir / contract.METRICS_NAME, "w") as f:
        f.write('{"event":"start","attempt":1,"max_steps":5,"time":1}\n')
        f.write('{"event":"step","step":1,"loss":NaN,"lr":Infinity,"time":2}\n')
    contract.append_jsonl(run_dir / contract.METRICS_NAME, {"event": "step", "step": 2, "loss": float("nan"),
                                                            "lr": float("-inf"), "time": 3})
    last = strict_loads(open(run_dir / contract.METRICS_NAME).read().splitlines()[-1])
    assert last["loss"] is None and last["nonfinite"] == {"loss": "NaN", "lr": "-Infinity"}
    contract.append_status(str(run_dir), "FAILED", "test")
    for args in (("status", "--json"), ("list", "--json")):
        out = gemma_ft(*args, "--workspace", str(ws))
        assert out.returncode == 0, out.stderr
        strict_loads(out.stdout)


def test_strict_keeps_finite_values_and_flags_the_others():
    obj = {"a": 1.5, "b": float("inf"), "c": [float("nan"), 2.0], "d": {"e": float("-inf")}}
    out = contract.strict(obj)
    assert out == {"a": 1.5, "b": None, "c": [None, 2.0], "d": {"e": None, "nonfinite": {"e": "-Infinity"}},
                   "nonfinite": {"b": "Infinity"}}
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in out["c"])
