"""Memory sets and corrupted queries of the retrieval experiments (the data side of a grid cell)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..._checks import check_choice, check_nonnegative
from ...corruptions import gaussian_noise, random_mask
from .registry import (
    CORRUPTIONS,
    DATASETS,
    NOISE_MODES,
    PROTOCOLS,
    SYNTHETIC_POOL,
    SYNTHETIC_SHAPE,
    derive_seed,
)

__all__ = ["MemoryData", "ImagePool", "load_memory_set", "make_queries", "data_note"]


@dataclass
class MemoryData:
    """A memory set with what the results must report about its source."""

    memories: torch.Tensor      # (M, d) float32 in [0, 1]
    indices: torch.Tensor       # positions in the pool
    image_shape: tuple
    dataset: str
    variant: str
    exact: bool


class ImagePool:
    """All images of a dataset split as uint8 (loaded once per run)."""

    def __init__(self, dataset: str, variant: str = "auto", split: str = "train"):
        self.dataset = dataset
        self.key = (dataset, variant, split)  # what it was asked for (a worker reuses a pool with the same key)
        if dataset == "synthetic":
            g = torch.Generator().manual_seed(20240721)
            on = torch.rand((SYNTHETIC_POOL,) + SYNTHETIC_SHAPE, generator=g) < 0.35
            level = torch.randint(64, 256, (SYNTHETIC_POOL,) + SYNTHETIC_SHAPE, generator=g)
            self.images = (on * level).to(torch.uint8)
            self.image_shape, self.variant, self.exact = SYNTHETIC_SHAPE, "synthetic", True
        else:
            from ...data import load_images

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the approximate-data warning: recorded in every row instead
                data = load_images(dataset, split, variant=variant)
            self.images = data.images
            self.image_shape, self.variant, self.exact = tuple(data.image_shape), data.variant, bool(data.exact)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, idx: torch.Tensor) -> MemoryData:
        mem = self.images[idx].reshape(len(idx), -1).to(torch.float32).div_(255.0)
        return MemoryData(mem, idx, self.image_shape, self.dataset, self.variant, self.exact)

    def sample(self, M: int, seed: int) -> MemoryData:
        """The M memories of ``uhop.data.sample_memories(dataset, M, seed)`` (same permutation)."""
        self.check_size(M)
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed)))[:M]
        return self.take(idx)

    def heldout(self, M: int, seed: int, exclude: torch.Tensor) -> MemoryData:
        """M memories drawn with a different seed, disjoint from ``exclude`` (the test memories)."""
        self.check_size(M, held_out=True)
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(derive_seed(seed, "heldout-memories")))
        taken = torch.zeros(len(self), dtype=torch.bool)
        taken[exclude] = True
        idx = perm[~taken[perm]][:M]
        return self.take(idx)

    def check_size(self, M: int, held_out: bool = False) -> None:
        """Refuse an M larger than the images allow (2 M for a held-out set as well)."""
        need = 2 * M if held_out else M
        if need > len(self):
            extra = " (the tuned protocol needs 2 M images: M test + M disjoint held-out memories)" if held_out else ""
            raise ValueError(f"sizes: M={M} exceeds what the {len(self)} images of {self.dataset} "
                             f"(variant {self.variant!r}) allow{extra}")


def load_memory_set(dataset: str, M: int, seed: int, variant: str = "auto", split: str = "train") -> MemoryData:
    """M memories of ``dataset`` for ``seed`` (identical to ``uhop.data.sample_memories``)."""
    check_choice(dataset, "dataset", DATASETS)
    return ImagePool(dataset, variant, split).sample(int(M), int(seed))


def make_queries(memories: torch.Tensor, image_shape, protocol: str, corruption: str, level: float,
                 noise_mode: str = "total_norm", seed: int = 0, stream: str = "query") -> torch.Tensor:
    """Corrupted queries of a protocol: the same random numbers for every ``level`` of a seed."""
    proto = PROTOCOLS[check_choice(protocol, "protocol", tuple(PROTOCOLS))]
    check_choice(corruption, "corruption", CORRUPTIONS)
    level = check_nonnegative(level, "noise level")
    g = torch.Generator().manual_seed(derive_seed(seed, stream))
    x = memories.detach().cpu()
    if corruption == "mask":
        q = random_mask(x, p=level, per=proto.mask_per, rescale=proto.mask_rescale, generator=g,
                        shape=tuple(image_shape))
    else:
        q = gaussian_noise(x, level, mode=check_choice(noise_mode, "noise_mode", NOISE_MODES), clamp=True,
                           generator=g)
    return q.to(memories.device)


def data_note(dataset: str, variant: str, exact: bool) -> str:
    """What the results must say about the copy of the data set they were computed on."""
    if dataset == "synthetic":
        return f"synthetic: {SYNTHETIC_POOL} random sparse 8x8 patterns (seeded), for tests only"
    if dataset == "cifar10" and variant == "jpeg":
        return ("CIFAR-10 from the 60k JPEG re-encoding (lossy: mean abs. pixel error ~6/255 against the "
                "canonical pixels), not the canonical binary files")
    return f"{dataset} ({variant}{'' if exact else ', approximate copy'})"
