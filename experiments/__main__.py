"""``python -m experiments``: the ``edgebloom`` command without its console script."""

import sys

from experiments.cli import main

sys.exit(main())
