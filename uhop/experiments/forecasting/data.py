"""The windows of one split (start indices into the series, gathered without a DataLoader) and the splits
a configuration asks for."""

from __future__ import annotations

import torch

from ...data import time_series_splits
from .config import ForecastConfig

__all__ = ["Windows", "load_splits", "evenly_spaced", "check_splits"]


class Windows:
    """Windows of one split as start indices into a ``(T, C)`` tensor; gathers batches without a DataLoader."""

    def __init__(self, dataset, starts: torch.Tensor, device):
        self.values = dataset.values.to(device)
        self.L, self.H = dataset.input_len, dataset.horizon
        self.target = dataset.target_index
        self.starts = starts
        self.ar_x = torch.arange(self.L, device=device)
        self.ar_y = torch.arange(self.L, self.L + self.H, device=device)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = starts.to(self.values.device)[:, None]
        x = self.values[s + self.ar_x]
        y = self.values[s + self.ar_y]
        if self.target is not None:
            y = y[..., self.target:self.target + 1]
        return x, y


def load_splits(config: ForecastConfig):
    """The splits ``config`` asks for (dataset, look-back, features, target, protocol)."""
    return time_series_splits(config.dataset, config.input_len, features=config.features, target=config.target,
                              protocol=config.protocol)


def evenly_spaced(n: int, cap: int | None) -> torch.Tensor:
    """Indices of ``cap`` evenly spaced windows out of ``n`` (all ``n`` when ``cap`` is None or not smaller)."""
    if cap is None or cap >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, cap).round().long().unique()


def check_splits(splits, config: ForecastConfig, what: str) -> None:
    """Refuse splits cut differently from what ``config`` asks for (dataset, look-back, features, protocol)."""
    got = (splits.name.lower(), splits.input_len, splits.features, splits.protocol)
    want = (config.dataset.lower(), config.input_len, config.features, config.protocol)
    if got != want:
        raise ValueError(f"splits (dataset, input_len, features, protocol) = {got} do not match {what}: {want}")
