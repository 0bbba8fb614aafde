"""Issue 16: after `jax.distributed.initialize`, a SIGTERM still reaches the trainer's stop flag.
jax's preemption service installs its own SIGTERM handler; with it, a plain `scancel` (and the
supervisor's SIGTERM escalation) never reached the loop, and the trainers ran on until SIGKILL.
A real trainer-side initialize through jax's Slurm detection (one process, SLURM_* set as srun
sets them), a real SIGTERM."""

from __future__ import annotations

import socket
import subprocess
import sys

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs.launch import package_env

CODE = """
import os, signal, time
from gemma_ft_widgets.train import distributed
from gemma_ft_widgets.train.loop import StopFlag
stop = StopFlag().install()
print("processes", distributed.initialize())
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)
print("stop flag", stop.signum)
"""


def test_sigterm_reaches_the_stop_flag_after_jax_distributed_initialize():
    with socket.socket() as s:  # jax's SlurmCluster: port 61440 + job id mod 4096; pick a free one
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    env = {**package_env(), contract.DISTRIBUTED_ENV: "auto", "SLURM_JOB_ID": str(4096 * 1000 + free - 61440)
           if free >= 61440 else "4096000", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "1", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert "processes 1" in out.stdout, out.stderr[-3000:]
    assert "stop flag 15" in out.stdout, (out.stdout, out.stderr[-3000:])
