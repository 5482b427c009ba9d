"""Shared pytest configuration.

Tests never download anything: UHOP_OFFLINE=1 is set for the whole session (and inherited by the
papermill kernels started from here). MPLBACKEND is left alone: notebook kernels must keep
matplotlib's inline backend so that figures appear in the executed notebooks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["UHOP_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
