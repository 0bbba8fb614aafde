"""The device check: a machine with a GPU/TPU that jax cannot see fails the run at once, with
the fix; `allow_cpu` lets it train; `gemma-ft doctor` and `status` say what jax trains on.

"Accelerator present" is faked with GEMMA_FT_FAKE_ACCELERATOR, which only
`accelerator.detect()` reads: the jax underneath is this machine's real CPU-only jax, and the
trainer is the real one, in a real detached run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gemma_ft_widgets import accelerator, contract
from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
from gemma_ft_widgets.runs import RunManager, State

from .conftest import _cleanup, wait_state

JAX = accelerator.jax_stack().jax


def gemma_ft(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def real_workspace(tmp_path, monkeypatch):
    """A workspace whose runs use the real trainer."""
    monkeypatch.delenv(contract.TRAINER_ENV, raising=False)
    monkeypatch.delenv(accelerator.FAKE_ENV, raising=False)
    ws = str(tmp_path / "ws")
    yield ws
    _cleanup(ws)


def tiny(**overrides) -> TrainingConfig:
    return TrainingConfig.from_dict({"model": "tiny", "dataset": sample_dataset_path(), "max_steps": 6,
                                     "warmup_steps": 0, "eval_every": 3, "checkpoint_every": 3,
                                     "batch_size": 4, **overrides})


def test_the_jax_stack_is_read_without_importing_jax():
    code = ("import sys; from gemma_ft_widgets import accelerator as a; s = a.jax_stack(); "
            "print(s.jax, s.problems, 'jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == JAX and out.strip().endswith("[] False")


def test_this_machine_has_no_accelerator_and_the_fake_says_gpu_or_tpu(monkeypatch):
    monkeypatch.delenv(accelerator.FAKE_ENV, raising=False)
    here = accelerator.detect()
    assert here.kind == "cpu" and not here.present and here.count == os.cpu_count()
    monkeypatch.setenv(accelerator.FAKE_ENV, "gpu:Tesla T4")
    assert accelerator.detect() == accelerator.Accelerator("gpu", "Tesla T4", 1, None, accelerator.FAKE_ENV)
    monkeypatch.setenv(accelerator.FAKE_ENV, "tpu")
    assert accelerator.detect().kind == "tpu"


def test_the_message_names_the_versions_and_the_fix():
    gpu = accelerator.Accelerator("gpu", "Tesla T4", 1, 15 * 2**30, "nvidia-smi")
    stack = accelerator.JaxStack({"jax": "0.10.0", "jaxlib": "0.10.0", "jax-cuda12-plugin": "0.12.0.1",
                                  "jax-cuda12-pjrt": "0.12.0.1"}, ["jax-cuda12-plugin 0.12.0.1 does not "
                                                                    "match jaxlib 0.10.0"])
    msg = accelerator.no_accelerator_message(gpu, stack)
    assert msg.startswith("jax sees no GPU: jax 0.10.0 (jaxlib 0.10.0) with jax-cuda12-plugin 0.12.0.1")
    assert 'pip install -U "jax[cuda12]==0.10.0"' in msg and "allow_cpu: true" in msg
    assert "does not match jaxlib 0.10.0" in msg
    tpu = accelerator.Accelerator("tpu", "v5litepod-8", 8, None, "TPU_ACCELERATOR_TYPE=v5litepod-8")
    msg = accelerator.no_accelerator_message(tpu, accelerator.JaxStack({"jax": "0.12.0.1"}, []))
    assert msg.startswith("jax sees no TPU: jax 0.12.0.1 with no TPU plugin installed")
    assert 'pip install -U "jax[tpu]==0.12.0.1"' in msg


def test_mismatched_plugin_versions_are_problems():
    assert accelerator._release("0.12.0.1") == (0, 12, 0, 1)
    assert accelerator._satisfies("0.11.2", accelerator.SpecifierSet(">=0.11.2,<=0.12.0.1"))
    assert not accelerator._satisfies("0.10.0", accelerator.SpecifierSet(">=0.11.2,<=0.12.0.1"))


@pytest.mark.slow
def test_a_faked_accelerator_with_cpu_only_jax_fails_before_any_weights_load(real_workspace, monkeypatch):
    monkeypatch.setenv(accelerator.FAKE_ENV, "gpu:Tesla T4")
    m = RunManager(real_workspace)
    run = m.start(tiny())
    st = wait_state(m, {State.FAILED, State.FINISHED}, timeout=180)
    assert st.state == State.FAILED, st.reason
    assert st.reason.startswith(f"jax sees no GPU: jax {JAX}"), st.reason
    assert 'pip install -U "jax[cuda12]' in st.reason and "Tesla T4" in st.reason
    assert st.exit_code == contract.EXIT_NO_ACCELERATOR
    kinds = [e["event"] for e in contract.read_jsonl(os.path.join(run.run_dir, contract.METRICS_NAME))]
    assert kinds == ["start"]  # no devices, no data, no step: nothing was loaded
    stdout = open(os.path.join(run.run_dir, contract.STDOUT_NAME)).read()
    assert "params from" not in stdout  # the model-loaded line
    assert not st.checkpoints and not st.can_resume
    out = gemma_ft("status", "--workspace", real_workspace)
    assert "FAILED" in out.stdout and "jax sees no GPU" in out.stdout


@pytest.mark.slow
def test_allow_cpu_trains_and_status_shows_the_devices(real_workspace, monkeypatch):
    monkeypatch.setenv(accelerator.FAKE_ENV, "gpu:Tesla T4")
    m = RunManager(real_workspace)
    m.start(tiny(allow_cpu=True))
    st = wait_state(m, {State.FAILED, State.FINISHED}, timeout=300)
    assert st.state == State.FINISHED, st.reason
    assert st.devices == {"platform": "cpu", "device_kind": "cpu", "count": 1, "processes": 1}
    out = gemma_ft("status", "--workspace", real_workspace)
    assert "devices:    1 × cpu" in out.stdout
    as_json = json.loads(gemma_ft("status", "--json", "--workspace", real_workspace).stdout)
    assert as_json["devices"]["platform"] == "cpu"
    from gemma_ft_widgets.ui.dashboard import Dashboard

    dashboard = Dashboard()
    dashboard.show_status(st, None)
    assert '<span class="gft-devices" style="color:#666">1 × cpu</span>' in dashboard.run_label.value


def test_allow_cpu_is_a_validated_config_field():
    assert TrainingConfig().allow_cpu is False
    with pytest.raises(Exception, match="allow_cpu: expected true or false"):
        TrainingConfig.from_dict({"dataset": sample_dataset_path(), "allow_cpu": "yes"})


@pytest.mark.slow
def test_doctor_on_this_machine(tmp_path):
    out = gemma_ft("doctor", "--workspace", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line and not line.startswith(" "))
    assert lines["python"].split()[0] == ".".join(map(str, sys.version_info[:3]))
    assert f"jax {JAX}" in lines["jax"]
    assert "no GPU or TPU found" in lines["machine"] and f"{os.cpu_count()} cores" in lines["machine"]
    assert lines["jax sees"].strip().startswith("1 × cpu")
    assert lines["workspace"].strip() == str(tmp_path)
    assert "GiB free" in lines["filesystem"]
    assert out.stdout.rstrip().endswith("ok: this environment can train on the CPU")
    data = json.loads(gemma_ft("doctor", "--json", "--workspace", str(tmp_path)).stdout)
    assert data["ok"] and data["jax_sees"]["platform"] == "cpu" and data["workspace"]["fstype"]


@pytest.mark.slow
def test_doctor_reports_a_gpu_that_jax_does_not_see(tmp_path):
    out = gemma_ft("doctor", "--workspace", str(tmp_path), env={accelerator.FAKE_ENV: "gpu:Tesla T4"})
    assert out.returncode == 1
    assert "machine:     1 × Tesla T4, found by GEMMA_FT_FAKE_ACCELERATOR" in out.stdout
    assert "problems:\n  - jax sees no GPU" in out.stdout


def test_doctor_without_probe_does_not_start_jax(tmp_path):
    out = gemma_ft("doctor", "--no-probe", "--json", "--workspace", str(tmp_path / "new"),
                   env={accelerator.FAKE_ENV: "tpu"})
    data = json.loads(out.stdout)
    assert data["jax_sees"] is None and not data["workspace"]["exists"]
    assert any(p.startswith("jax sees no TPU") for p in data["problems"]) and out.returncode == 1


def test_the_form_shows_the_environment_line(tmp_path, monkeypatch):
    from gemma_ft_widgets.ui.form import ConfigForm

    monkeypatch.delenv(accelerator.FAKE_ENV, raising=False)
    form = ConfigForm(str(tmp_path))
    assert f"jax {JAX}" in form.environment_line.value and "no GPU or TPU" in form.environment_line.value
    monkeypatch.setenv(accelerator.FAKE_ENV, "gpu:Tesla T4")
    form = ConfigForm(str(tmp_path))
    assert "jax will not see it" in form.environment_line.value and "#b45309" in form.environment_line.value
    assert "allow_cpu" in form.fields
