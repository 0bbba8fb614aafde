"""Smoke runs of every benchmark in benchmarks/ (tiny sizes, `--smoke`), so none of them rots.

These check that each script runs to the end and prints its RESULT lines; they never assert a
measured figure (benchmarks are not timed tests; the machines are shared and noisy). The ones
that start jax are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULT = re.compile(r"^RESULT (\S+) (ratio|value)=(\S+) target=(\S+) met=(True|False|n/a)", re.M)

sys.path.insert(0, str(BENCH))
import _common  # noqa: E402


def run_bench(script: str, tmp_path, *args: str, timeout: float = 300) -> tuple[dict[str, str], dict]:
    out_json = tmp_path / f"{script}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMMA_FT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--smoke", "--json", str(out_json), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    results = {m.group(1): m.group(3) for m in RESULT.finditer(proc.stdout)}
    assert results, f"{script} printed no RESULT line\n{proc.stdout[-4000:]}"
    data = json.loads(out_json.read_text())
    assert data["smoke"] is True and data["machine"]["cores"]
    assert {r["name"] for r in data["results"]} == set(results)
    return results, data


def test_refresh_cost_smoke(tmp_path):
    results, _ = run_bench("refresh_cost", tmp_path, "--lines", "5000", "--rounds", "3")
    assert {"refresh_big_vs_small", "first_attach_big", "first_attach_decimated",
            "refresh_many_vs_few_runs", "refresh_many_vs_few_runs_one_open"} <= set(results)


def test_columns_parser_smoke(tmp_path):
    results, _ = run_bench("columns_parser", tmp_path, "--lines", "3000", "--rounds", "1")
    assert "columns_parser_msgspec_vs_hand" in results


def test_import_attach_smoke(tmp_path):
    results, data = run_bench("import_attach", tmp_path, "--rounds", "1")
    assert {"import_attach_s", "import_attach_heavy_modules", "import_attach_vs_import_jax"} <= set(results)
    assert all(a["state"] == "RUNNING" for a in data["a"])


def test_start_stop_smoke(tmp_path):
    results, _ = run_bench("start_stop", tmp_path)
    assert {"start_to_starting_sim", "start_to_first_step_sim", "graceful_stop_sim", "forced_stop_sim",
            "stop_group_gone_sim"} <= set(results)


def test_monitoring_overhead_smoke(tmp_path):
    results, data = run_bench("monitoring_overhead", tmp_path)
    assert "monitoring_overhead" in results
    assert data["panels"]["poll_errors"] == [0, 0]


@pytest.mark.slow
def test_trainer_overhead_smoke(tmp_path):
    results, _ = run_bench("trainer_overhead", tmp_path, timeout=600)
    assert {"trainer_overhead_tiny", "trainer_overhead_tiny_per_step", "trainer_step_vs_bare_tiny",
            "chunked_loss_tiny", "host_sync_tiny", "loop_python_tiny"} <= set(results)


@pytest.mark.slow
def test_data_parallel_smoke(tmp_path):
    results, data = run_bench("data_parallel", tmp_path, timeout=600)
    assert {"dp_devices_seen_1", "dp_devices_seen_2", "dp_speed_2_vs_1", "dp_loss_agreement_2"} <= set(results)
    assert data["devices_seen"] == {"N=1": 1, "N=2": 2}


@pytest.mark.slow
def test_multiprocess_smoke(tmp_path):
    results, data = run_bench("multiprocess", tmp_path, timeout=600)
    assert {"mp_speed_2x2_vs_1x4", "mp_loss_agreement"} <= set(results)
    assert data["common_steps"] > 0


@pytest.mark.slow
def test_gpu_mfu_smoke(tmp_path):
    results, data = run_bench("gpu_mfu", tmp_path, timeout=600)
    assert {"accel_tokens_per_s", "accel_mfu", "accel_peak_mem_gb", "accel_estimate_error"} <= set(results)
    assert data["model"] == "tiny" and data["tokens_per_s"] > 0


# -- the helpers the figures rest on (pure, instant) ---------------------------------------------

def test_sliced_intervals_count_only_within_one_turn():
    slices = [("a", 0.0, 1.0), ("b", 1.0, 2.0), ("a", 2.0, 3.0)]
    intervals = [(0.1, 0.5, 4), (0.5, 0.9, 4),  # turn 0 of a: 8 units in 0.8 s
                 (0.9, 2.2, 100),  # spans b's turn (a was frozen): never counted
                 (2.2, 2.7, 5)]  # turn 2 of a: 5 units in 0.5 s
    r = _common.sliced_intervals(intervals, slices, "a")
    assert r["turns"] == 2
    assert sorted(r["per_turn"]) == pytest.approx([10.0, 10.0])
    assert r["pooled"] == pytest.approx(13 / 1.3)
    assert _common.sliced_intervals(intervals, slices, "b")["turns"] == 0


def test_paired_ratios_compare_the_two_turns_of_each_cycle():
    """Each cycle's ratio is taken between its own two turns (neighbours in time share the
    machine's load), whichever came first; a cycle missing a side is left out."""
    slices = [("on", 0, 1), ("off", 1, 2), ("off", 2, 3), ("on", 3, 4), ("on", 4, 5), ("off", 5, 6)]
    on = {"by_turn": {0: 10.0, 3: 30.0, 4: 8.0}}
    off = {"by_turn": {1: 20.0, 2: 30.0}}
    assert _common.paired_ratios(slices, on, off) == pytest.approx([0.5, 1.0])
    assert _common.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)


def test_result_lines(capsys):
    assert _common.result("x", ratio=0.5, target=0.95) is False
    assert _common.result("y", value=0.4, unit="s", target=1.0, op="<=") is True
    assert _common.result("z", value=None, unit="GB") is None
    out = capsys.readouterr().out
    assert [m.group(1, 2, 3, 4, 5) for m in RESULT.finditer(out)] == [
        ("x", "ratio", "0.5", ">=0.95", "False"), ("y", "value", "0.4s", "<=1", "True"),
        ("z", "value", "nan", "none", "n/a")]


def test_extension_polling_smoke(tmp_path):
    results, data = run_bench("extension_polling", tmp_path)
    assert {"extension_polling", "extension_poll_latency_ms"} <= set(results)
    assert data["client"]["polls"] > 0 and data["client"]["errors"] == 0


@pytest.mark.slow
def test_memory_plan_smoke(tmp_path):
    results, data = run_bench("memory_plan", tmp_path, timeout=600)
    assert {"remat_temp_vs_none", "remat_plan_vs_none"} <= set(results)
    assert data["plans"]["none"]["temp_size_in_bytes"] > 0


@pytest.mark.slow
def test_quantized_memory_smoke(tmp_path):
    results, data = run_bench("quantized_memory", tmp_path, timeout=900)
    assert {"base_bytes_int8_vs_bf16", "base_bytes_int4_vs_bf16", "peak_rss_int4_vs_none"} <= set(results)
    assert float(results["base_bytes_int4_vs_bf16"]) < float(results["base_bytes_int8_vs_bf16"]) < 1


@pytest.mark.slow
def test_eval_samples_smoke(tmp_path):
    results, _ = run_bench("eval_samples", tmp_path, timeout=600)
    assert {"eval_samples_share_tiny", "eval_samples_steady_share_tiny", "eval_samples_wall_tiny",
            "eval_samples_run_tiny", "eval_samples_run_tiny_warm"} <= set(results)


@pytest.mark.slow
def test_estimate_vs_plan_smoke(tmp_path):
    results, data = run_bench("estimate_vs_plan", tmp_path, timeout=600)
    assert set(results) == {"tiny_int8_block_estimate_vs_plan"}
    assert all(row["plan"] > 0 and row["estimate"] > 0 for row in data["rows"])
