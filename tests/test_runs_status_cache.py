"""Issue 11, defect 8: polling cost. Ended runs do not change, so their status is kept, keyed by
their result file's identity, and the folder listing by the workspace folder's: a poll re-reads
only the runs that have not ended. These tests prove the cache is used and never stale across
real transitions (a resume, a new start, a delete); benchmarks/refresh_cost.py measures the cost
(1,000 runs vs 10)."""

from __future__ import annotations

import os
import time

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunManager, State

from .conftest import wait_state


def test_an_ended_runs_status_is_reused_until_its_result_file_changes(manager, make_config, workspace):
    run = manager.start(make_config(max_steps=5))
    wait_state(manager, State.FINISHED)
    time.sleep(1.1)  # a folder changed less than a second ago is listed again at every poll
    first = manager.runs()
    assert [r.state for r in first] == [State.FINISHED]
    assert manager.runs() is first  # nothing changed: the very same list, no file re-read
    # A change that is not the result's (metrics appended by hand) is not re-read...
    contract.append_jsonl(os.path.join(run.run_dir, contract.METRICS_NAME), {"event": "step", "step": 99, "time": 1})
    assert manager.status(run.name).step == 5
    # ...until the result file is replaced (a new identity), here with the same content.
    result = contract.read_json(os.path.join(run.run_dir, contract.RESULT_NAME))
    contract.atomic_write_json(os.path.join(run.run_dir, contract.RESULT_NAME), result)
    assert manager.status(run.name).step == 5  # final_step of the result wins for an ended run
    assert RunManager(workspace).status(run.name).step == manager.status(run.name).step


def test_the_cache_follows_resume_new_runs_and_delete(manager, make_config, workspace, sim_env):
    run = manager.start(make_config(max_steps=100_000, checkpoint_every=5))
    wait_state(manager, State.RUNNING)
    manager.stop()
    assert [r.state for r in manager.runs()] == [State.ABORTED]
    manager.resume(run.name)  # the result is set aside: the cached ABORTED must not be served
    assert manager.runs()[0].state in (State.STARTING, State.RUNNING)
    wait_state(manager, State.RUNNING)
    manager.stop()
    other = manager.start(make_config(max_steps=3))
    wait_state(manager, State.FINISHED, run=other.name)
    states = {r.run_name: r.state for r in manager.runs()}
    assert states == {run.name: State.ABORTED, other.name: State.FINISHED}
    assert manager.status(run.name).attempt == 2
    manager.delete(other.name)
    assert [r.run_name for r in manager.runs()] == [run.name]
