"""`python -m gemma_ft_widgets.train RUN_DIR`: the training process the supervisor starts.

Leaves with `os._exit(code)` once `main()` has returned: by then every checkpoint is complete
and fsynced (no save in flight), metrics.jsonl is written (one write(2) per event), the
TensorBoard writer is closed and stdout/stderr are flushed below. A normal interpreter
shutdown with jax, orbax and TensorFlow loaded takes 1.5-2.3 s more (module teardown, library
threads), which a graceful stop would otherwise wait for. An exception escaping `main()` (it
catches the trainer's own) takes the normal path.
"""

import logging
import os
import sys

from .loop import main

code = main()
logging.shutdown()  # absl / library log handlers
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except (OSError, ValueError):
        pass
os._exit(code if isinstance(code, int) else 1)
