"""Shared pytest configuration.

Tests never download anything: UHOP_OFFLINE=1 is set for the whole session (and inherited by the
papermill kernels started from here). Matplotlib uses a non-interactive backend.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["UHOP_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
