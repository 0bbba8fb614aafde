"""`python -m gemma_ft_widgets.train RUN_DIR`: the training process the supervisor starts."""

import sys

from .loop import main

sys.exit(main())
