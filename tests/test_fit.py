"""The fit advisor (gemma_ft_widgets/fit.py, ui/fit.py): verdicts per target, the make-it-fit
ladder, this machine's detection, the form's Start gate and "Start anyway" through the manager."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gemma_ft_widgets import accelerator, contract, fit
from gemma_ft_widgets.config import ConfigError, sample_dataset_path
from gemma_ft_widgets.estimate import estimate
from gemma_ft_widgets.runs import State
from gemma_ft_widgets.ui.form import ConfigForm

from .conftest import wait_state

T4 = fit.TARGETS["t4"]

# model, method, target, quantization, remat -> fits as is, make-it-fit's changes (None: nothing
# on the ladder fits). Batch 4 x 512, LoRA rank 8 (docs/estimate.md has the numbers behind them).
VERDICTS = [
    ("gemma3-1b", "lora", "t4", "none", "none", True, []),
    ("gemma3-1b", "full", "t4", "none", "none", True, []),
    ("gemma3-4b", "lora", "t4", "none", "none", False, [("remat", "none", "block")]),
    ("gemma3-4b", "lora", "t4", "int8", "none", False, [("remat", "none", "block")]),
    ("gemma3-4b", "lora", "t4", "none", "block", True, []),
    ("gemma3-4b", "lora", "l4", "none", "none", True, []),
    ("gemma3-4b", "lora", "tpu-v5e-1", "none", "none", False, [("remat", "none", "block")]),
    ("gemma3-4b", "full", "t4", "none", "none", False, None),
    ("gemma3-4b", "full", "a100-80", "none", "none", True, []),
    ("gemma3-12b", "lora", "t4", "none", "none", False, [("quantization", "none", "int4"), ("remat", "none", "block")]),
    ("gemma3-12b", "lora", "l4", "none", "none", False, [("quantization", "none", "int8"), ("remat", "none", "block")]),
    ("gemma3-12b", "lora", "l4", "int4", "block", True, []),
    ("gemma3-12b", "lora", "a100-40", "none", "none", False, [("remat", "none", "block")]),
    ("gemma3-27b", "lora", "t4", "none", "none", False, None),
    ("gemma3-27b", "lora", "l4", "none", "none", False, [("quantization", "none", "int4"), ("remat", "none", "block")]),
    ("gemma3-27b", "lora", "a100-80", "none", "none", False, [("remat", "none", "block")]),
    ("gemma3-27b", "lora", "h200", "none", "none", True, []),
    ("gemma3-27b", "lora", "tpu-v5e-8", "none", "none", False, [("fsdp", False, True), ("remat", "none", "block")]),
    ("gemma2-2b", "full", "l4", "none", "none", False,
     [("remat", "none", "block"), ("batch_size", 4, 1), ("max_seq_len", 512, 128)]),
    ("gemma2-9b", "lora", "tpu-v3-8", "none", "none", False, [("fsdp", False, True)]),
]


@pytest.mark.parametrize("model,method,target,quant,remat,fits,changes", VERDICTS)
def test_the_advisors_verdicts(model, method, target, quant, remat, fits, changes):
    cfg = {"model": model, "method": method, "batch_size": 4, "max_seq_len": 512, "quantization": quant,
           "remat": remat}
    v = fit.verdict(cfg, fit.TARGETS[target])
    assert v.fits is fits, v.text
    assert v.text.startswith("fits " if fits else "does not fit ") and fit.TARGETS[target].label in v.text
    found = fit.make_it_fit(cfg, fit.TARGETS[target])
    if changes is None:
        assert found is None
        return
    assert found.changes == changes
    assert found.verdict.fits and fit.verdict(found.values, fit.TARGETS[target]).fits
    assert {k: found.values[k] for k, _, new in changes} == {k: new for k, _, new in changes}


def test_the_ladder_never_quantizes_what_cannot_be_quantized_nor_goes_back():
    # Gemma 4 has no int layers yet (config.py refuses it), so only remat and batch are tried.
    found = fit.make_it_fit({"model": "gemma4-e2b", "batch_size": 4, "max_seq_len": 512}, T4)
    assert found is not None and all(k != "quantization" for k, _, _ in found.changes)
    # Already int4: never back to int8 or none; num_processes bounds the batch halving.
    found = fit.make_it_fit({"model": "gemma3-12b", "quantization": "int4", "batch_size": 8,
                             "max_seq_len": 2048, "num_processes": 4}, T4)
    assert found.values["quantization"] == "int4" and found.values["batch_size"] % 4 == 0
    assert fit.make_it_fit({"model": "gemma3-1b"}, fit.Target("x", "x", "gpu", 1, None)) is None
    # A smaller micro-batch keeps the effective batch by accumulating, where that fits.
    found = fit.make_it_fit({"model": "gemma3-1b", "batch_size": 32, "max_seq_len": 2048}, T4)
    assert found.changes == [("quantization", "none", "int4"), ("remat", "none", "block"), ("batch_size", 32, 16),
                             ("grad_accum_steps", 1, 2)]


def test_this_machine_from_what_accelerator_detect_found():
    t4 = fit.this_machine(accelerator.Accelerator("gpu", "Tesla T4", 2, 15360 * 2**20, "nvidia-smi"))
    assert (t4.kind, t4.count, t4.memory_bytes) == ("gpu", 2, T4.memory_bytes) and "2 × Tesla T4" in t4.label
    tpu = fit.this_machine(accelerator.Accelerator("tpu", "v5litepod-8", 8, None, "TPU_ACCELERATOR_TYPE"))
    assert (tpu.kind, tpu.count, tpu.memory_bytes) == ("tpu", 8, 16 * 2**30)
    cpu = fit.this_machine(accelerator.Accelerator("cpu", "Xeon", 2, 8 * 2**30, "none"), ram_bytes=8 * 2**30)
    assert (cpu.kind, cpu.memory_bytes) == ("cpu", 8 * 2**30) and "CPU, 8 GiB RAM" in cpu.label
    # A CPU machine runs in f32: the verdict uses the CPU estimate.
    assert fit.verdict({"model": "gemma3-1b"}, cpu).need_bytes == estimate({"model": "gemma3-1b"}, device="cpu").total_bytes
    here = fit.this_machine()  # the real detection, without jax
    assert here.key == fit.THIS_MACHINE and here.kind in ("cpu", "gpu", "tpu")


@pytest.fixture
def t4_form(tmp_path):
    started = []
    f = ConfigForm(str(tmp_path / "uploads"), defaults={"dataset": sample_dataset_path()},
                   on_start=lambda cfg, **kw: started.append((cfg, kw)),
                   machine=fit.this_machine(accelerator.Accelerator("gpu", "Tesla T4", 1, 15360 * 2**20, "nvidia-smi")))
    f.started = started
    yield f
    f.close()


def test_the_form_blocks_start_on_this_machine_and_makes_it_fit(t4_form):
    f = t4_form
    assert [k for _, k in f.fit.target.options][:3] == ["this", "t4", "l4"] and len(f.fit.target.options) == 10
    assert "1 × Tesla T4" in f.fit.target.options[0][0]
    assert "✔" in f.fit.verdict.value and not f.start_button.disabled  # tiny fits
    f.set_values({"model": "gemma3-4b", "batch_size": 4, "max_seq_len": 512})
    assert f.valid and f.start_button.disabled and "does not fit this machine" in f.start_button.tooltip
    assert "✘" in f.fit.verdict.value and "Start anyway" in f.blocked_note.value
    assert f.fit.anyway_button.layout.display == "" and not f.fit.make_fit_button.disabled
    f._start_clicked()
    assert f.started == []  # Start does nothing while blocked
    # Another target changes the verdict shown, not the gate (that is about this machine).
    f.fit.target.value = "h200"
    assert "fits H200" in f.fit.verdict.value and f.start_button.disabled
    f.fit.target.value = "this"
    f.fit.make_fit_button.click()
    assert f.fields["remat"].value == "block" and f.fields["quantization"].value == "none"
    assert "changed: remat none → block" in f.fit.message.value
    assert not f.start_button.disabled and f.fit.anyway_button.layout.display == "none"
    assert f.blocked_note.value == ""
    f.set_values({"model": "gemma3-27b", "remat": "none"})
    f.fit.make_fit_button.click()
    assert "Nothing fits" in f.fit.message.value and f.fields["model"].value == "gemma3-27b"
    f.fit.anyway_button.click()
    assert len(f.started) == 1 and f.started[0][1] == {"start_anyway": True}
    assert f.started[0][0].model == "gemma3-27b"


def test_start_anyway_passes_the_managers_refusal_and_is_written_in_status_log(manager, dataset):
    cfg = {"model": "tiny", "dataset": dataset, "lora_rank": 10**8, "max_steps": 3}  # terabytes
    with pytest.raises(ConfigError, match="lora_rank: cannot fit this machine"):
        manager.start(cfg)
    assert not os.path.exists(os.path.join(manager.workspace, contract.LOCK_NAME))
    run = manager.start(cfg, start_anyway=True)
    with open(os.path.join(run.run_dir, contract.STATUS_LOG_NAME), encoding="utf-8") as f:
        log = f.read()
    assert "started anyway, on the user's word: does not fit this machine" in log, log
    assert wait_state(manager, [State.FINISHED], run=run, timeout=120).state is State.FINISHED
    # The CLI's way: `gemma-ft start --anyway`.
    path = os.path.join(manager.workspace, "big.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "start", path, "--anyway",
                          "--workspace", manager.workspace], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with open(os.path.join(out.stdout.strip(), contract.STATUS_LOG_NAME), encoding="utf-8") as f:
        assert "started anyway" in f.read()
    wait_state(manager, [State.FINISHED], timeout=120)
