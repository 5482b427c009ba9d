"""Dataset names, a single image-loading entry point, and what a data root holds."""

from __future__ import annotations

from pathlib import Path

from .cifar import CIFAR10_JPEG_PATH, EXACT_SUBSET_PATHS, TORCHVISION_FOLDERS, load_cifar10, load_cifar100
from .errors import unknown_name
from .imagedata import ImageData
from .mnist import load_mnist
from .paths import cache_dir, data_root
from .time_series import TIME_SERIES
from .tiny_imagenet import SUBSET50_PATH, canonical_zips, full_folders, is_image_folder, load_tiny_imagenet

__all__ = ["IMAGE_DATASETS", "DATASETS", "canonical_name", "load_images", "available"]

IMAGE_DATASETS = {
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "tiny_imagenet": load_tiny_imagenet,
}
#: every dataset name the package knows (image sets, then time series)
DATASETS = tuple(IMAGE_DATASETS) + tuple(TIME_SERIES)

_ALIASES = {"tinyimagenet": "tiny_imagenet", "tiny-imagenet": "tiny_imagenet", "tiny-imagenet-200": "tiny_imagenet",
            "cifar-10": "cifar10", "cifar-100": "cifar100"}


def canonical_name(name: str) -> str:
    """Normalise a dataset name (case-insensitive, a few aliases such as ``"cifar-10"``); ValueError if unknown."""
    key = str(name).strip()
    low = key.lower()
    low = _ALIASES.get(low, low)
    for n in DATASETS:
        if n.lower() == low:
            return n
    raise unknown_name("dataset", name, DATASETS)


def load_images(name: str, split: str = "train", root=None, variant: str = "auto",
                download: bool | None = None) -> ImageData:
    """Load an image dataset by name (``mnist``, ``cifar10``, ``cifar100``, ``tiny_imagenet``); see each loader.

    MNIST has a single variant (``"torchvision"``; ``"auto"`` accepted).
    """
    n = canonical_name(name)
    if n not in IMAGE_DATASETS:
        raise ValueError(f"{n!r} is a time-series dataset, not an image dataset; use time_series_splits(). "
                         f"Image datasets: {', '.join(IMAGE_DATASETS)}")
    if n == "mnist":
        if variant not in ("auto", "torchvision"):
            raise unknown_name("MNIST variant", variant, ("auto", "torchvision"))
        return load_mnist(split, root=root, download=download)
    return IMAGE_DATASETS[n](split, root=root, variant=variant, download=download)


def available(root=None) -> dict[str, list[str]]:
    """Which datasets and variants are present locally under ``root`` (and the cache), without reading them.

    Returns e.g. ``{"mnist": ["torchvision"], "cifar10": ["jpeg", "exact_subset"], "cifar100": ["exact_subset"],
    "tiny_imagenet": ["subset50"], "ETTh1": ["csv"], ...}``; a dataset with nothing present maps to ``[]``.
    Presence only: use ``python -m uhop.data verify`` to check integrity.
    """
    root = data_root(root)
    cache = cache_dir(create=False)
    out: dict[str, list[str]] = {n: [] for n in DATASETS}
    for base in (root / "mnist", cache / "mnist"):
        raw = base / "MNIST" / "raw"
        names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")
        if all((raw / f"{n}.gz").is_file() or (raw / n).is_file() for n in names):
            out["mnist"] = ["torchvision"]
            break
    for name in ("cifar10", "cifar100"):
        folder = TORCHVISION_FOLDERS[name][0]
        if any((b / folder).is_dir() for b in (root / name, root, cache / name)):
            out[name].append("torchvision")
        if name == "cifar10" and (root / CIFAR10_JPEG_PATH).is_file():
            out[name].append("jpeg")
        if (root / EXACT_SUBSET_PATHS[name]).is_file():
            out[name].append("exact_subset")
    if any(is_image_folder(f) for f in full_folders(root)) or any(z.is_file() for z in canonical_zips(root)):
        out["tiny_imagenet"].append("full")
    if (root / SUBSET50_PATH).is_file():
        out["tiny_imagenet"].append("subset50")
    for name, spec in TIME_SERIES.items():
        if (root / spec["rel"]).is_file() or (root / Path(spec["rel"]).name).is_file():
            out[name].append("csv")
    return out
