"""Memory sets for the retrieval experiments (U-Hop Section 4.1, Appendix F.2-F.3).

The official U-Hop code feeds ``transforms.ToTensor()`` images (pixels in [0, 1], no normalisation), flattened
C x H x W (MNIST 784, CIFAR-10 3072), as the stored patterns.  :func:`sample_memories` does the same, drawing the
M memories without replacement with a seeded ``torch.Generator`` so that a (dataset, variant, split, M, seed)
tuple always gives the same memory set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .registry import load_images

__all__ = ["MemorySet", "sample_memories"]


@dataclass
class MemorySet:
    """M stored patterns drawn from an image dataset.

    ``memories``: float32 ``(M, d)`` in [0, 1], ``d = C*H*W`` (row-major C, H, W; reshape with ``image_shape``).
    ``indices``: int64 ``(M,)`` positions of the memories in the loaded split (distinct).
    ``labels``: int64 ``(M,)``.  ``image_shape``: ``(C, H, W)``.  ``variant``/``exact``: which copy of the data.
    """

    memories: torch.Tensor
    indices: torch.Tensor
    labels: torch.Tensor
    image_shape: tuple[int, int, int]
    name: str
    split: str
    variant: str
    exact: bool
    seed: int

    @property
    def M(self) -> int:
        return int(self.memories.shape[0])

    @property
    def d(self) -> int:
        return int(self.memories.shape[1])

    def images(self) -> torch.Tensor:
        """The memories as images, float32 ``(M, C, H, W)`` in [0, 1]."""
        return self.memories.reshape(self.M, *self.image_shape)


def sample_memories(name: str, M: int, seed: int, split: str = "train", root=None, variant: str = "auto",
                    download: bool | None = None) -> MemorySet:
    """Draw ``M`` distinct images of ``name``/``split`` as flattened float32 patterns in [0, 1].

    ``indices = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:M]`` over the N images of the
    loaded split, so the set is reproducible for a given torch version, dataset variant and split (the variant
    matters: the JPEG CIFAR-10 train split has 50,000 images, the exact subset 200).
    Raises ValueError if ``M`` is not in ``1..N``.
    """
    if int(M) != M or M < 1:
        raise ValueError(f"M must be a positive integer, got {M!r}")
    data = load_images(name, split, root=root, variant=variant, download=download)
    n = len(data)
    if M > n:
        raise ValueError(f"M={M} memories requested but {data.name}/{split} (variant {data.variant!r}) has only "
                         f"{n} images")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[: int(M)]
    mem = data.images[idx].reshape(int(M), -1).to(torch.float32).div_(255.0)
    return MemorySet(mem, idx, data.labels[idx].clone(), data.image_shape, data.name, split, data.variant, data.exact,
                     int(seed))
