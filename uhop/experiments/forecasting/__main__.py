"""``python -m uhop.experiments.forecasting``: see :func:`uhop.experiments.forecasting.cli.main`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
