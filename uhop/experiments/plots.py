"""Axis helpers for the book's figures.

:mod:`uhop.experiments.report` holds the book's figure and table style, the method plots and the results-file
handling; this module holds small helpers that shape one axis of any matplotlib figure.
"""

from __future__ import annotations

__all__ = ["symlog_from_zero"]


def symlog_from_zero(ax, which: str = "x", linthresh: float = 1.0) -> None:
    """Put the ``which`` axis (``"x"`` or ``"y"``) of ``ax`` on a symmetric-log scale that starts at 0, with
    ticks written as plain numbers (0, 1, 10, 100 rather than powers of ten).

    For quantities that are exactly 0 somewhere and span decades elsewhere: Stage-I steps with N = 0 (the untrained
    model) among N = 1 ... 100, or a retrieval error that is exactly 0 for a perfect recall. A log axis drops the
    zeros; the symlog axis is linear on [0, ``linthresh``] and logarithmic above it, so both stay readable.
    """
    if which not in ("x", "y"):
        raise ValueError(f"which must be 'x' or 'y', got {which!r}")
    if which == "x":
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter("{x:g}")
    else:
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter("{x:g}")
