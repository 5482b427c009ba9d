"""The images of a classification run: the train and test splits as uint8 tensors with their channel
statistics (:func:`load_data`), the seeded nested training subsets, and the per-batch transform (normalisation
and, with ``augment``, a random crop and flip per image)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..._checks import check_choice
from ...data import load_cifar10, load_cifar100, load_tiny_imagenet
from .config import DATASETS


#: Random-crop padding of ``augment=True`` (pixels on each side), the usual CIFAR value.
CROP_PADDING = 4


@dataclass
class ClassificationData:
    """uint8 train/test images and labels plus the facts a result must report."""

    train_X: torch.Tensor
    train_y: torch.Tensor
    test_X: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor
    variant: str
    exact: bool
    description: str
    train_index: torch.Tensor = field(repr=False, default=None)

    def subset(self, n: int | None, seed: int) -> "ClassificationData":
        """The first ``n`` rows of a seeded permutation of the training set (nested: a smaller size is a
        prefix of a larger one, so every stage and variant sees the same images)."""
        if n is None or n >= len(self.train_y):
            return self
        perm = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(seed))[:n]
        return replace(self, train_X=self.train_X[perm], train_y=self.train_y[perm],
                       train_index=self.train_index[perm])


def load_data(dataset: str, *, test_size: int | None = None, seed: int = 0, variant: str = "auto",
              root=None) -> ClassificationData:
    """Train and test splits of ``dataset`` as uint8 tensors, channel mean/std of the training split.

    ``test_size`` keeps a seeded random subset of the test (Tiny ImageNet: val) split.
    """
    check_choice(dataset, "dataset", DATASETS)
    if dataset == "cifar10":
        train, test = load_cifar10("train", root, variant), load_cifar10("test", root, variant)
    elif dataset == "cifar100":
        train, test = load_cifar100("train", root, variant), load_cifar100("test", root, variant)
    else:
        train, test = load_tiny_imagenet("train", root, variant), load_tiny_imagenet("val", root, variant)
    if len(train) < 1000 and variant == "auto":
        raise ValueError(f"{dataset}: only {len(train)} training images were found ({train.describe()}); "
                         "classification needs the full training split")
    tx, ty, vx, vy = train.images, train.labels, test.images, test.labels
    if test_size is not None and test_size < len(vy):
        keep = torch.randperm(len(vy), generator=torch.Generator().manual_seed(seed + 10_000))[:test_size]
        vx, vy = vx[keep], vy[keep]
    mean, std = _channel_stats(tx)
    desc = f"train: {train.describe()} | test: {test.describe()}"
    return ClassificationData(tx, ty, vx, vy, train.num_classes, int(tx.shape[-1]), mean, std, train.variant,
                              bool(train.exact and test.exact), desc, torch.arange(len(ty)))


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks (no full float copy)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.pow(2).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean.pow(2)).clamp_min(0).mul(n / max(n - 1, 1)).sqrt()
    return mean.to(torch.float32), std.to(torch.float32)


class _Transform:
    """uint8 batch -> normalised float batch on ``device``; with ``augment``, then a random crop of the image
    padded by :data:`CROP_PADDING` pixels and a random horizontal flip, per image, from a generator reseeded
    from ``(seed, epoch)`` at every epoch (:meth:`set_epoch`, called by the trainer): paired variants see the
    same augmentations and a resumed run continues exactly."""

    def __init__(self, data: ClassificationData, device, augment: bool = False, seed: int = 0):
        self.mean = data.mean.view(1, -1, 1, 1).to(device)
        self.std = data.std.view(1, -1, 1, 1).to(device)
        self.device, self.augment, self.seed = device, augment, seed
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 100_003 + epoch)

    def __call__(self, x):
        x = (x.to(self.device).to(torch.float32).div_(255.0) - self.mean) / self.std
        return random_crop_flip(x, CROP_PADDING, self.generator) if self.augment else x


def make_transform(data: ClassificationData, device, augment: bool = False, seed: int = 0) -> _Transform:
    """The per-batch transform of ``data`` (:class:`_Transform`)."""
    return _Transform(data, device, augment, seed)


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random crop of ``x`` (``(B, C, H, W)``) zero-padded by ``padding`` on each side, then a random
    horizontal flip: one gather for the whole batch (no per-image Python loop).  Padding with zeros after
    normalisation pads with the channel mean."""
    B, C, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (B,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (B,), generator=generator).to(x.device)
    flip = (torch.rand(B, generator=generator) < 0.5).to(x.device)
    cols = torch.arange(W, device=x.device)
    cols = torch.where(flip[:, None], W - 1 - cols, cols) + dx[:, None]          # (B, W)
    rows = torch.arange(H, device=x.device) + dy[:, None]                         # (B, H)
    b = torch.arange(B, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
