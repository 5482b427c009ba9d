"""Where :class:`uhop.nn.BilevelTrainer` gets its mini-batches: the :class:`BatchSource` protocol and its
in-memory implementation :class:`TensorBatches`.

Algorithm 2 of the paper draws two kinds of batch: the task batches of one epoch (size ``B_2``, line 6) and
the random inner batches of Stage I (size ``B_1``, line 3).  A source provides both, from its own seeded
generator, so that a run is reproducible and resumable from the generator's state.  The forecasting windows
(:class:`uhop.experiments.forecasting.data.WindowBatches`) are another source.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, runtime_checkable

import torch

from .._checks import check_int

__all__ = ["BatchSource", "TensorBatches"]


@runtime_checkable
class BatchSource(Protocol):
    """What the trainer needs from its data: ``epoch()`` yields one epoch's ``(x, y)`` task batches,
    ``sample(b)`` returns one random ``(x, y)`` batch of ``b`` rows (the inner batches), ``batch_size`` is the
    size ``sample`` is called with, ``len()`` is the number of batches per epoch (for progress bars), and
    ``get_state()`` / ``set_state(state)`` save and restore the generator(s) (tensors or plain Python data, so
    that checkpoints load with ``weights_only=True``).  An optional ``set_epoch(epoch)`` is called before
    every epoch (a random augmentation reseeded per epoch resumes exactly)."""

    batch_size: int

    def __len__(self) -> int: ...

    def epoch(self) -> Iterator: ...

    def sample(self, b: int): ...

    def get_state(self): ...

    def set_state(self, state) -> None: ...


class TensorBatches:
    """Seeded mini-batches over in-memory tensors ``(X, y)`` (much faster than a per-item DataLoader).

    ``epoch()`` yields a fresh permutation's batches; ``sample(b)`` draws ``b`` distinct random rows.
    ``transform`` is applied to each X batch (e.g. uint8 -> normalised float on the device).
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0,
                 transform: Callable | None = None, drop_last: bool = False):
        if len(X) != len(y):
            raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
        if len(X) == 0:
            raise ValueError("the training set is empty")
        self.X, self.y = X, y
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.transform = transform
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.X)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _get(self, idx):
        x = self.X[idx]
        return (self.transform(x) if self.transform is not None else x), self.y[idx]

    def epoch(self) -> Iterator:
        perm = torch.randperm(len(self.X), generator=self.generator)
        for i in range(len(self)):
            yield self._get(perm[i * self.batch_size:(i + 1) * self.batch_size])

    def sample(self, b: int):
        n = len(self.X)
        idx = torch.randperm(n, generator=self.generator)[:min(b, n)]
        return self._get(idx)

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to ``transform`` if it has ``set_epoch`` (a per-epoch reseeded augmentation)."""
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
