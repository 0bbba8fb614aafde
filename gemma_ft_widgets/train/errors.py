"""The trainer's own failures, each with its exit code (train/loop.py `run()` maps them), and the
check that raises FolderGone."""

from __future__ import annotations

import math

from .. import contract


class SetupError(Exception):
    """A problem of the config, data or model found before training: exit 2."""


class NoAcceleratorError(Exception):
    """The machine has a GPU or TPU that jax does not see: exit 4, before any weights load."""


class FolderGone(Exception):
    """The run folder was moved or deleted while training: exit 6, never re-create it."""


def check_folder(run_dir: str, folder_id) -> None:
    """Before each save: is the run folder still the one this attempt started in (`folder_id`)?"""
    if contract.folder_identity(run_dir) == folder_id:
        return
    moved = contract.where_now(1)  # our stdout is the run folder's trainer_stdout.log
    if moved and moved != run_dir and contract.folder_identity(moved) == folder_id:
        raise FolderGone(f"the run folder {run_dir} was moved to {moved} while training")
    raise FolderGone(f"the run folder {run_dir} was deleted or replaced while training")


class Diverged(Exception):
    """The loss or gradient norm became NaN/Infinity: the run fails (exit 5), and nothing
    from that step on is saved."""

    def __init__(self, what: str, value: float, step: int):
        self.what, self.value, self.step = what, value, step
        super().__init__(f"{what} became {nonfinite_name(value)} at step {step}")


def nonfinite_name(value: float) -> str:
    """"NaN", "Infinity" or "-Infinity", as messages name a non-finite value."""
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def first_nonfinite(first_step: int, losses, grad_norms) -> Diverged | None:
    """The first step of a window whose loss or gradient norm is not finite."""
    for i, (loss, norm) in enumerate(zip(losses, grad_norms)):
        if not math.isfinite(loss):
            return Diverged("loss", loss, first_step + i)
        if not math.isfinite(norm):
            return Diverged("gradient norm", norm, first_step + i)
    return None
