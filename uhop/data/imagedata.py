"""The common return type of the image loaders.

Every image loader returns an :class:`ImageData`: the whole split as one uint8 tensor plus the facts a result
must report (which variant of the data was used, and whether its pixels are exact).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.utils.data import Dataset

__all__ = ["ImageData", "ImageTensorDataset", "ApproximateDataWarning"]


class ApproximateDataWarning(UserWarning):
    """Issued (once per dataset/variant per process) when a loader returns lossy, re-encoded pixels."""


_WARNED: set[tuple[str, str]] = set()


def announce_approximate(name: str, variant: str, note: str) -> None:
    """Warn once per process that ``name``/``variant`` is approximate (lossy)."""
    if (name, variant) not in _WARNED:
        _WARNED.add((name, variant))
        warnings.warn(f"{name} variant {variant!r} is APPROXIMATE: {note}. Say so when reporting results.",
                      ApproximateDataWarning, stacklevel=4)


@dataclass(repr=False)
class ImageData:
    """One split of an image dataset, fully in memory.

    Attributes
    ----------
    images : torch.Tensor
        uint8, shape ``(N, C, H, W)``, values 0..255 (RGB for colour sets, ``C = 1`` for MNIST).
    labels : torch.Tensor
        int64, shape ``(N,)``, values ``0 .. len(classes) - 1``.
    classes : list[str]
        Class names; ``classes[k]`` is the name of label ``k``.
    name, split : str
        Dataset name (``"mnist"``, ``"cifar10"``, ``"cifar100"``, ``"tiny_imagenet"``) and split.
    variant : str
        Which copy of the data this is, e.g. ``"torchvision"`` (canonical files), ``"jpeg"`` (CIFAR-10 JPEG
        re-encoding), ``"exact_subset"``, ``"full"``, ``"subset50"`` (Tiny ImageNet).
    exact : bool
        True when the pixels are the canonical ones; False for lossy re-encodings (report it!).
    source : str
        The file or folder the data came from.
    note : str
        Human-readable caveats (subset sizes, order, lossiness).
    indices : torch.Tensor or None
        int64 ``(N,)`` positions of these images in the canonical split order when known (e.g. the exact subset
        holds train images 0..199); None when the order is the loader's own (documented in ``note``).
    meta : dict
        Extra per-dataset facts, e.g. ``meta["wnids"]`` for Tiny ImageNet.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    variant: str
    exact: bool
    source: str
    note: str = ""
    indices: Optional[torch.Tensor] = field(default=None)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def float(self) -> torch.Tensor:
        """Images as float32 in [0, 1], shape ``(N, C, H, W)`` (no normalisation)."""
        return self.images.to(torch.float32).div_(255.0)

    def describe(self) -> str:
        """One line for logs and result tables, always naming the variant and exactness."""
        q = "exact" if self.exact else "APPROXIMATE (lossy)"
        return (f"{self.name}/{self.split}: {len(self)} images {self.image_shape}, {self.num_classes} classes, "
                f"variant={self.variant} [{q}]" + (f"; {self.note}" if self.note else ""))

    def __repr__(self) -> str:
        return f"ImageData({self.describe()}; source={self.source})"

    def subset(self, index: torch.Tensor | list[int]) -> "ImageData":
        """A new ImageData holding the rows ``index`` (same variant/exactness)."""
        idx = torch.as_tensor(index, dtype=torch.int64)
        base = self.indices if self.indices is not None else torch.arange(len(self))
        return ImageData(self.images[idx], self.labels[idx], list(self.classes), self.name, self.split, self.variant,
                         self.exact, self.source, self.note, base[idx], dict(self.meta))

    def to_dataset(self, transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> "ImageTensorDataset":
        """A ``torch.utils.data.Dataset`` yielding ``(image, label)`` for training.

        ``image`` is float32 ``(C, H, W)`` in [0, 1] before ``transform`` (applied per item), ``label`` an int.
        """
        return ImageTensorDataset(self, transform)


class ImageTensorDataset(Dataset):
    """Map-style dataset over an :class:`ImageData` (see :meth:`ImageData.to_dataset`)."""

    def __init__(self, data: ImageData, transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.data = data
        self.transform = transform
        self.variant = data.variant
        self.exact = data.exact
        self.classes = data.classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.data.images[i].to(torch.float32).div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.data.labels[i])

    def __repr__(self) -> str:
        return f"ImageTensorDataset({self.data.describe()})"


def read_rgb(path, size: int):
    """One image file as uint8 ``(3, size, size)`` (grayscale converted to RGB); a file of another
    size is a :class:`~uhop.data.errors.DataIntegrityError`, never silently resized."""
    import numpy as np
    from PIL import Image

    from .errors import DataIntegrityError

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if a.shape != (size, size, 3):
        raise DataIntegrityError(path, f"a {size}x{size} RGB image", f"shape {a.shape}", what="image shape")
    return a.transpose(2, 0, 1)
