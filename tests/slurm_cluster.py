"""A real single-node Slurm for tests: Debian's munged, slurmctld and slurmd, started in the
foreground as our own children with a generated slurm.conf (this host, free ports, its own
munge socket and key), so nothing of the machine's own configuration is used or changed.

Needs root (slurmd starts the tasks as the job's user) and `apt-get install slurm-wlm munge`
(scripts/setup.sh does it on CI). proctrack/linuxproc and task/none: no cgroups needed, which
a container may not give.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel")


def missing() -> str | None:
    """Why a Slurm cannot be started here, or None."""
    if os.geteuid() != 0:
        return "not root (slurmd runs the jobs' tasks as their user)"
    gone = [d for d in DAEMONS if shutil.which(d) is None and not os.path.exists(f"/usr/sbin/{d}")]
    return f"not installed: {', '.join(gone)} (apt-get install slurm-wlm munge)" if gone else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    def __init__(self, root: str, cpus: int = 4):
        self.root = root
        self.conf = os.path.join(root, "slurm.conf")
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        self.cpus = cpus
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        r = self.root
        for d in ("state", "spool", "munge"):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        key, sock = os.path.join(r, "munge", "munge.key"), os.path.join(r, "munge", "munge.sock")
        subprocess.run([_exe("mungekey"), "--create", "--force", f"--keyfile={key}"], check=True)
        os.chmod(key, 0o600)
        host = socket.gethostname()
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "ClusterName=gemmaft", f"SlurmctldHost={host}", f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}", "AuthType=auth/munge", f"AuthInfo=socket={sock}",
                "CredType=cred/munge", "SlurmUser=root", "SlurmdUser=root",
                f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
                f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
                f"SlurmctldLogFile={r}/slurmctld.log", f"SlurmdLogFile={r}/slurmd.log",
                "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none", "SchedulerType=sched/builtin", "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU", "ReturnToService=2", "MpiDefault=none", "KillWait=30",
                "MinJobAge=600", "SlurmdParameters=config_overrides",
                f"NodeName={host} CPUs={self.cpus} State=UNKNOWN",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        log = open(os.path.join(r, "daemons.log"), "ab")
        self.procs.append(subprocess.Popen(
            [_exe("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/munge/munged.log", f"--seed-file={r}/munge/seed"],
            stdout=log, stderr=log))
        self._wait(lambda: os.path.exists(sock), timeout, "munged")
        self.procs.append(subprocess.Popen([_exe("slurmctld"), "-D", "-f", self.conf], stdout=log, stderr=log, env=self.env))
        self.procs.append(subprocess.Popen([_exe("slurmd"), "-D", "-f", self.conf], stdout=log, stderr=log, env=self.env))
        self._wait(self._idle, timeout, "the node to be idle")
        return self

    def _idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Slurm did not come up ({what}; exited: {dead}); see {self.root}/*.log")
            time.sleep(0.2)

    def stop(self) -> None:
        for p in reversed(self.procs):  # our own children, by their Popen handles
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
