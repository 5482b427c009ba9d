"""``python -m uhop.reproduce``: the command line of :mod:`uhop.reproduce.cli`."""

import sys

from .cli import main

sys.exit(main())
