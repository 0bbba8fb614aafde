"""Data parallel and FSDP on 4 forced host devices give the losses of one device.

XLA_FLAGS must be set before jax is imported, so the sharded runs happen in a subprocess;
the one-device reference runs in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax  # required: a missing jax is a broken install and must fail, not skip
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
from gemma_ft_widgets.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
CASES = {  # name: (method, fsdp)
    "lora_dp": ("lora", False),
    "lora_fsdp": ("lora", True),
    "full_dp": ("full", False),
    "full_fsdp": ("full", True),
}

SCRIPT = r"""
import json, os, sys
import jax
from gemma_ft_widgets.config import TrainingConfig
from gemma_ft_widgets.train import loop, sharding
assert len(jax.devices()) == 4, jax.devices()
out = {}
for name, run_dir in json.loads(sys.argv[1]).items():
    cfg = TrainingConfig.from_json_file(os.path.join(run_dir, "model_config.json"))
    tr = loop.Trainer(run_dir, cfg, log=lambda m: None, fsdp_min_bytes=0)
    res = tr.run()
    out[name] = {"losses": res.losses, "eval": res.eval_losses,
                 "trainable": sharding.describe(tr.trainable), "frozen": sharding.describe(tr.frozen),
                 "opt": sharding.describe(tr.opt_state),
                 "batch_spec": list(tr.b_sh.spec), "mesh": tr.mesh.devices.size}
# FSDP applies at load time too: a kagglehub checkpoint is restored straight into shards.
import dataclasses, tempfile
sys.path.insert(0, "tests")
os.environ["KAGGLEHUB_CACHE"] = tempfile.mkdtemp()
from test_train_models import HANDLE, write_kaggle_cache
from gemma_ft_widgets import models as table
from gemma_ft_widgets.train import models
want, _ = write_kaggle_cache(os.environ["KAGGLEHUB_CACHE"])
mesh = sharding.make_mesh()
spec = dataclasses.replace(table.TINY, name="tiny-kaggle", kaggle_handle=HANDLE)
got = models.load_model("tiny-kaggle", spec=spec, param_sharding=lambda t: sharding.fsdp_shardings(t, mesh, 0))
out["fsdp_load"] = {"layout": sharding.describe(got.params),
                    "equal": bool(jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), got.params, want)))}
print("RESULT " + json.dumps(out))
"""


def make_run(parent, name, method, fsdp):
    run_dir = os.path.join(str(parent), name)
    os.makedirs(run_dir)
    cfg = {"model": "tiny", "dataset": sample_dataset_path(), "method": method, "fsdp": fsdp,
           "max_steps": STEPS, "log_every": 1, "eval_every": STEPS, "checkpoint_every": 1000,
           "learning_rate": 3e-3, "warmup_steps": 2, "sample_tokens": 0}
    with open(os.path.join(run_dir, contract.CONFIG_NAME), "w") as f:
        json.dump(cfg, f)
    return run_dir


@pytest.mark.slow
def test_sharded_training_matches_one_device(tmp_path):
    sharded_dirs = {name: make_run(tmp_path / "sharded", name, m, f) for name, (m, f) in CASES.items()}
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(sharded_dirs)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference = {}  # one device, same configs, while the subprocess runs
    assert len(jax.devices()) == 1
    for method in ("lora", "full"):
        run_dir = make_run(tmp_path / "single", method, method, False)
        cfg = TrainingConfig.from_json_file(os.path.join(run_dir, contract.CONFIG_NAME))
        res = loop.Trainer(run_dir, cfg, log=lambda m: None).run()
        reference[method] = (res.losses, res.eval_losses)

    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    results = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert results["fsdp_load"] == {"layout": {"sharded": 24, "replicated": 0}, "equal": True}
    for name, (method, fsdp) in CASES.items():
        got = results[name]
        assert got["mesh"] == 4 and got["batch_spec"] == ["data"]
        losses = {int(k): v for k, v in got["losses"].items()}
        want_losses, want_eval = reference[method]
        assert sorted(losses) == list(range(1, STEPS + 1))
        for s in losses:
            assert abs(losses[s] - want_losses[s]) < 1e-5, (name, s, losses[s], want_losses[s])
        assert abs(got["eval"][str(STEPS)] - want_eval[STEPS]) < 1e-5
        if not fsdp:  # data parallel: every parameter replicated
            assert got["trainable"]["sharded"] == 0 and got["frozen"]["sharded"] == 0
        elif method == "lora":  # FSDP shards the frozen base; adapters stay replicated
            assert got["frozen"]["sharded"] > 0 and got["trainable"]["sharded"] == 0
        else:  # full: params and the optimizer state that follows them
            assert got["trainable"]["sharded"] > 0 and got["opt"]["sharded"] > 0
