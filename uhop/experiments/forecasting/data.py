"""The windows of one split (start indices into the series, gathered without a DataLoader), the training
batches drawn from them (:class:`WindowBatches`, a batch source of :class:`uhop.nn.BilevelTrainer`) and the
splits a configuration asks for."""

from __future__ import annotations

import torch

from ..._checks import check_int
from ...data import time_series_splits
from .config import ForecastConfig

__all__ = ["Windows", "WindowBatches", "load_splits", "evenly_spaced", "check_splits"]


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


class WindowBatches:
    """Seeded training batches of :class:`Windows` for :class:`uhop.nn.BilevelTrainer` (a
    :class:`uhop.nn.batches.BatchSource`).

    ``epoch()`` yields the batches of a fresh permutation of the windows, cut to its first ``epoch_windows``
    (a fresh random sample every epoch; ``None``: all); ``sample(b)`` draws ``b`` windows uniformly *with*
    replacement (the inner batches of Algorithm 2).  Both use the one generator seeded with ``seed``.
    """

    def __init__(self, windows: Windows, batch_size: int, seed: int, epoch_windows: int | None = None):
        if len(windows) == 0:
            raise ValueError("the training split has no windows")
        self.windows = windows
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.epoch_windows = None if epoch_windows is None else check_int(epoch_windows, "epoch_windows", minimum=1)
        self.generator = torch.Generator().manual_seed(check_int(seed, "seed"))

    def __len__(self) -> int:
        n = len(self.windows) if self.epoch_windows is None else min(len(self.windows), self.epoch_windows)
        return -(-n // self.batch_size)

    def epoch(self):
        w = self.windows
        perm = w.starts[torch.randperm(len(w), generator=self.generator)]
        if self.epoch_windows is not None:
            perm = perm[:self.epoch_windows]
        for i in range(0, len(perm), self.batch_size):
            yield w.batch(perm[i:i + self.batch_size])

    def sample(self, b: int):
        w = self.windows
        return w.batch(w.starts[torch.randint(len(w), (b,), generator=self.generator)])

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


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
