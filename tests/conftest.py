"""Shared pytest configuration.

Tests never download anything: UHOP_OFFLINE=1 is set for the whole session (and inherited by the
papermill kernels started from here). MPLBACKEND is left alone: notebook kernels must keep
matplotlib's inline backend so that figures appear in the executed notebooks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ["UHOP_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one torch thread.

    The unit-test problems are tiny: a second intra-op thread only adds hand-off overhead, and on
    a shared 2-core machine it slowed such tests down 10-40x when measured. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
