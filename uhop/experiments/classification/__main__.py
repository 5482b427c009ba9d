"""``python -m uhop.experiments.classification``: the command line of
:mod:`uhop.experiments.classification.cli`."""

from .cli import main

raise SystemExit(main())
