"""Kernel-independent run lifecycle: lock file, detached supervisor, derived state, metrics.

Stdlib + psutil only. A run outlives the kernel that started it; any later kernel or terminal
reads what it is doing from the workspace alone. See docs/ARCHITECTURE.md.

    from gemma_ft_widgets.runs import RunManager
    m = RunManager("gemma_ft_runs")
    run = m.start(config)          # returns once the supervisor runs (STARTING)
    m.status()                     # RunStatus(state=..., step=..., loss=..., reason=...)
    m.stop()                       # SIGINT -> checkpoint -> ABORTED; escalates if needed
"""

from .errors import Code, Remedy, RunError
from .manager import Run, RunManager, default_workspace
from .metrics import MetricsReader
from .state import ACTIVE_STATES, ENDED_STATES, Facts, Proc, State, derive_state
from .status import RunStatus
from .stopping import StopReport

__all__ = [
    "ACTIVE_STATES", "Code", "ENDED_STATES", "Facts", "MetricsReader", "Proc", "Remedy", "Run", "RunError",
    "RunManager", "RunStatus", "State", "StopReport", "default_workspace", "derive_state",
]
