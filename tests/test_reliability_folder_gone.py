"""Issue 11, defect 4: a run folder renamed or deleted while its run goes on. Before the fix,
status said STARTING for a path that no longer existed, and the trainer kept appending to the
renamed folder while it re-created checkpoints/ under the old name (the run split in two).
Now the trainer checks its folder's identity at each save and stops, FAILED with the reason,
never re-creating it; the supervisor writes the result into the moved folder."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.runs import RunManager, State, lockfile

from .conftest import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def real_manager(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("GEMMA_FT_"):
            monkeypatch.delenv(key)
    m = RunManager(str(tmp_path / "ws"), trainer=contract.DEFAULT_TRAINER)
    yield m
    if lockfile.read_lock(m.workspace).present and m.status().active:
        m.stop(force=True)


def start_and_wait_for_a_checkpoint(m):
    run = m.start({"model": "tiny", "dataset": sample_dataset_path(), "max_steps": 10**6, "batch_size": 2,
                   "checkpoint_every": 200, "eval_every": 10**6})
    wait_for(lambda: contract.checkpoint_steps(run.run_dir), 300, what="a checkpoint")
    return run


def test_a_run_folder_renamed_while_training_fails_with_the_reason_and_is_never_recreated(real_manager):
    m = real_manager
    run = start_and_wait_for_a_checkpoint(m)
    moved = run.run_dir + "-moved"
    os.rename(run.run_dir, moved)
    st = m.status()
    assert "its run folder no longer exists at" in st.reason, (st.state, st.reason)
    wait_for(lambda: not lockfile.read_lock(m.workspace).present, 120, what="the lock cleared")
    assert not os.path.exists(run.run_dir)  # nothing re-created under the old name
    st = m.status(os.path.basename(moved))
    assert st.state == State.FAILED and st.exit_code == contract.EXIT_FOLDER_GONE, (st.state, st.reason)
    assert f"the run folder {run.run_dir} was moved to {moved} while training" in st.reason
    events = contract.read_jsonl(os.path.join(moved, contract.METRICS_NAME))
    assert events[-1]["event"] == "folder_gone"
    assert contract.checkpoint_steps(moved)  # the checkpoints made before the move are all there
    assert st.can_resume


def remove_as_a_user_would(path: str) -> None:
    """`rm -rf`, run again while it says "Directory not empty": the trainer may be writing its
    next checkpoint into the folder at that moment (a checkpoint appearing is when people act)."""
    deadline = time.monotonic() + 60
    while os.path.exists(path):
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError:
            assert time.monotonic() < deadline, f"{path} could not be removed"
            time.sleep(0.05)


def test_a_run_folder_deleted_while_training_stops_the_run_and_leaves_nothing(real_manager):
    m = real_manager
    run = start_and_wait_for_a_checkpoint(m)
    remove_as_a_user_would(run.run_dir)
    wait_for(lambda: not lockfile.read_lock(m.workspace).present, 120, what="the lock cleared")
    assert not os.path.exists(run.run_dir)
    assert m.status().state == State.IDLE


def test_a_background_save_that_failed_because_its_folder_went_is_folder_gone(tmp_path):
    """The trainer's translation of a failed background save, deterministically: the folder
    moved while the save ran (its write then misses its path) -> FolderGone, exit 6; any other
    failure of a save, with the folder in place, stays what it was (disk full, ...)."""
    from types import SimpleNamespace

    from gemma_ft_widgets.train import loop

    run_dir = tmp_path / "run"
    run_dir.mkdir()

    class FailedSave:
        def __init__(self, error):
            self.error = error

        def wait(self):
            raise self.error

        check = wait

    trainer = SimpleNamespace(run_dir=str(run_dir), folder_id=contract.folder_identity(str(run_dir)))
    trainer.saver = FailedSave(OSError(28, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        loop.Trainer._saves_done(trainer, wait=True)
    os.rename(run_dir, tmp_path / "moved")
    trainer.saver = FailedSave(FileNotFoundError(2, "No such file or directory"))
    for wait in (True, False):
        with pytest.raises(loop.FolderGone, match="deleted or replaced while training"):
            loop.Trainer._saves_done(trainer, wait=wait)
