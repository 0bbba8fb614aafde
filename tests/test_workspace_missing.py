"""A workspace folder that does not exist yet: IDLE with no runs when the caller says that is
fine (a panel opened before the first start), a clear error otherwise (the CLI), and nothing
is created either way."""

from __future__ import annotations

import pytest

from gemma_ft_widgets.runs import RunError, RunManager, State


def test_a_missing_workspace_is_idle_when_asked_and_an_error_otherwise(tmp_path):
    missing = tmp_path / "not-yet"
    manager = RunManager(missing)
    st = manager.status(missing_ok=True)
    assert st.state is State.IDLE and not st.active and st.run_dir is None
    assert st.reason == "no runs in this workspace"
    assert manager.runs(missing_ok=True) == []
    with pytest.raises(RunError, match="does not exist"):
        manager.status()
    with pytest.raises(RunError, match="does not exist"):
        manager.runs()
    with pytest.raises(RunError, match="unknown run|does not exist"):
        manager.status("some-run", missing_ok=True)  # a named run is never IDLE: it is not there
    assert not missing.exists()
