"""What accelerator this machine has, and which jax packages are installed, read without
importing jax: the kernel stays light, and the answer holds even when jax is broken.

Two questions are kept apart on purpose:
  * `detect()`: is there a GPU or TPU on this machine at all (nvidia-smi, /dev/nvidia*,
    /dev/accel*, a TPU runtime's environment)?
  * `jax_stack()`: which jax, jaxlib and accelerator plugins are installed, and do their
    versions agree?
The trainer puts them together (`no_accelerator_message`) when jax itself sees only a CPU.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
from importlib import metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

# Read only by `detect()`: lets a test say "this machine has an accelerator" on a CPU box.
FAKE_ENV = "GEMMA_FT_FAKE_ACCELERATOR"

# Environment variables that TPU runtimes set (Cloud TPU VMs, Colab and Kaggle TPU).
_TPU_ENV = ("TPU_ACCELERATOR_TYPE", "TPU_NAME", "COLAB_TPU_ADDR", "TPU_WORKER_HOSTNAMES")

# The plugins jax loads for an accelerator; each must match jaxlib's version.
PLUGINS = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt",
           "jax-rocm7-plugin", "jax-rocm7-pjrt", "libtpu")


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """This machine's accelerator; kind "cpu" when there is none."""

    kind: str                   # "gpu", "tpu" or "cpu"
    name: str                   # "Tesla T4", "TPU v5 lite", the CPU model
    count: int                  # devices (GPUs, TPU chips) or CPU cores
    memory_bytes: int | None    # per device; host RAM for "cpu"
    evidence: str               # what told us: "nvidia-smi", "/dev/accel0", "TPU_ACCELERATOR_TYPE=v5e-8"

    @property
    def present(self) -> bool:
        """Whether there is a GPU or TPU."""
        return self.kind != "cpu"

    def describe(self) -> str:
        """One line for people, e.g. "1 × Tesla T4 (15 GiB each), found by nvidia-smi"."""
        gib = f"{self.memory_bytes / 2**30:.0f} GiB" if self.memory_bytes else ""
        if self.kind == "cpu":
            return f"no GPU or TPU; CPU: {self.count} cores" + (f", {gib} RAM" if gib else "")
        return f"{self.count} × {self.name}" + (f" ({gib} each)" if gib else "") + f", found by {self.evidence}"


def detect() -> Accelerator:
    """The machine's accelerator, cheaply: a few file checks, at most one nvidia-smi call."""
    fake = os.environ.get(FAKE_ENV, "").strip()
    if fake:
        kind, _, name = fake.partition(":")
        return Accelerator(kind if kind in ("gpu", "tpu") else "gpu", name or "faked accelerator", 1,
                           None, FAKE_ENV)
    gpu = _nvidia_gpus()
    if gpu is not None:
        return gpu
    tpu = _tpu()
    if tpu is not None:
        return tpu
    return _cpu()


def _nvidia_gpus() -> Accelerator | None:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            out = None
        rows = [r.split(",") for r in (out.stdout.splitlines() if out and out.returncode == 0 else [])]
        rows = [[c.strip() for c in r] for r in rows if len(r) == 2]
        if rows:
            mib = rows[0][1]
            return Accelerator("gpu", rows[0][0], len(rows),
                               int(float(mib)) * 2**20 if re.fullmatch(r"[\d.]+", mib) else None, "nvidia-smi")
    nodes = sorted(p for p in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", p))
    if nodes:
        return Accelerator("gpu", "NVIDIA GPU", len(nodes), None, nodes[0])
    return None


def _tpu() -> Accelerator | None:
    for var in _TPU_ENV:
        value = os.environ.get(var)
        if value:
            chips = len(glob.glob("/dev/accel*")) or len(glob.glob("/dev/vfio/[0-9]*")) or 1
            name = os.environ.get("TPU_ACCELERATOR_TYPE") or "TPU"
            return Accelerator("tpu", name, chips, None, f"{var}={value}")
    accel = sorted(glob.glob("/dev/accel*"))
    if accel:
        return Accelerator("tpu", "TPU", len(accel), None, accel[0])
    return None


def _cpu() -> Accelerator:
    name = "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:  # not Linux: the generic name will do
        pass
    try:
        import psutil

        ram = int(psutil.virtual_memory().total)
    except (ImportError, OSError):
        ram = None
    return Accelerator("cpu", name, os.cpu_count() or 1, ram, "no GPU or TPU found")


@dataclasses.dataclass(frozen=True)
class JaxStack:
    """The installed jax packages (distribution name -> version), and what disagrees."""

    versions: dict[str, str]
    problems: list[str]

    @property
    def jax(self) -> str | None:
        """jax's installed version, or None."""
        return self.versions.get("jax")

    def plugins(self) -> dict[str, str]:
        """The installed accelerator plugins (PLUGINS) with their versions."""
        return {n: v for n, v in self.versions.items() if n in PLUGINS}

    def describe(self) -> str:
        """One line for people: jax, jaxlib and the plugins with their versions."""
        if self.jax is None:
            return "jax is not installed"
        parts = [f"jax {self.jax}", f"jaxlib {self.versions.get('jaxlib', 'missing')}"]
        parts += [f"{n} {v}" for n, v in self.plugins().items()]
        return ", ".join(parts)


def jax_stack() -> JaxStack:
    """Versions from the installed distributions' metadata; jax is not imported."""
    versions = {}
    for name in ("jax", "jaxlib") + PLUGINS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    problems = []
    jaxlib = versions.get("jaxlib")
    if "jax" in versions and jaxlib is None:
        problems.append("jaxlib is missing")
    if "jax" in versions and jaxlib is not None:
        need = _jaxlib_requirement()
        if need is not None and not _satisfies(jaxlib, need):
            problems.append(f"jax {versions['jax']} needs jaxlib {need}, found {jaxlib}")
    for name in PLUGINS:
        if name in versions and name != "libtpu" and jaxlib is not None and _release(versions[name]) != _release(jaxlib):
            problems.append(f"{name} {versions[name]} does not match jaxlib {jaxlib}")
    return JaxStack(versions, problems)


def fix_command(accel: Accelerator, stack: JaxStack) -> str:
    """The pip line that makes jax use `accel`, keeping the installed jax version."""
    pin = f"=={stack.jax}" if stack.jax else ""
    if accel.kind == "tpu":
        return f'pip install -U "jax[tpu]{pin}"'
    cuda = "cuda13" if any(n.startswith("jax-cuda13") for n in stack.versions) else "cuda12"
    return f'pip install -U "jax[{cuda}]{pin}"'


def no_accelerator_message(accel: Accelerator, stack: JaxStack) -> str:
    """Why a run refuses to start when the machine has an accelerator that jax does not see."""
    what = "GPU" if accel.kind == "gpu" else "TPU"
    plugins = stack.plugins()
    have = (" with " + ", ".join(f"{n} {v}" for n, v in plugins.items())) if plugins else \
        f" with no {what} plugin installed"
    jax = f"jax {stack.jax or '?'}" + (f" (jaxlib {stack.versions['jaxlib']})" if "jaxlib" in stack.versions else "")
    msg = (f"jax sees no {what}: {jax}{have}; this machine has {accel.describe()}. "
           f"Fix with: {fix_command(accel, stack)} (then restart the kernel), "
           "or set allow_cpu: true to train on the CPU on purpose")
    if stack.problems:
        msg += ". Version problems: " + "; ".join(stack.problems)
    return msg


# -- versions, read with `packaging` (the library pip itself uses) ------------------------------
def _release(version: str) -> tuple[int, ...]:
    try:
        return Version(version).release
    except InvalidVersion:
        return ()


def _jaxlib_requirement() -> SpecifierSet | None:
    """The jaxlib range the installed jax declares."""
    try:
        reqs = metadata.requires("jax") or []
    except metadata.PackageNotFoundError:
        return None
    for line in reqs:
        req = Requirement(line)
        if req.name == "jaxlib" and req.marker is None:
            return req.specifier
    return None


def _satisfies(version: str, spec: SpecifierSet) -> bool:
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False
