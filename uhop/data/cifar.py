"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009).

Variants (``variant=`` argument; every returned :class:`ImageData` carries ``variant`` and ``exact``):

``"torchvision"``
    The canonical python pickles (``cifar-10-batches-py/`` / ``cifar-100-python/`` under ``<root>/cifar10``,
    ``<root>/cifar100``, ``<root>`` or the cache), read and md5-checked by ``torchvision.datasets.CIFAR10/100``;
    downloaded by torchvision when absent and downloading is allowed.  Exact, original order.
``"jpeg"`` (CIFAR-10 only)
    ``<root>/cifar10/cifar10-jpeg.tar.gz``: all 60,000 images re-encoded as JPEG (**lossy**, mean absolute error
    about 6/255).  Extracted once into the cache, decoded once into uint8 ``.npy`` arrays (later loads < 2 s).
    Training images are put back in the original CIFAR order with ``kaggle_trainLabels.csv`` (train image ``k`` is
    ``train/<label[k]>/<rank of k within its class>.jpg``); the original *test* order cannot be recovered, so the
    test split is grouped by class (class 0's 1,000 images first, each class in its original relative order).
``"exact_subset"``
    ``<root>/cifar10/cifar10_exact_subset.npz`` (train 0-199, test 0-19, exact pixels) and
    ``<root>/cifar100/cifar100_exact_subset.npz`` (test 0-19 only).

``variant="auto"``: CIFAR-10: torchvision files present -> JPEG archive present -> torchvision download (if allowed)
-> exact subset (with a warning: 200/20 images only) -> :class:`DatasetNotFoundError`.
CIFAR-100: torchvision files present -> download (if allowed) -> :class:`DatasetNotFoundError` (the 20-image subset is
only used when asked for explicitly with ``variant="exact_subset"``).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import torch

from .cache import build_once, extract_once, is_complete
from .checksums import KNOWN_FILES, verify_file
from .errors import DataIntegrityError, DatasetNotFoundError, unknown_name
from .imagedata import ImageData, announce_approximate, read_rgb
from .paths import cache_dir, data_root, download_allowed, download_status, is_writable

__all__ = ["load_cifar10", "load_cifar100", "CIFAR10_CLASSES", "CIFAR_SPLITS", "CIFAR10_VARIANTS", "CIFAR100_VARIANTS",
           "cifar10_jpeg_cache"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_SPLITS = ("train", "test")
CIFAR10_VARIANTS = ("auto", "torchvision", "jpeg", "exact_subset")
CIFAR100_VARIANTS = ("auto", "torchvision", "exact_subset")

CIFAR10_JPEG_PATH = "cifar10/cifar10-jpeg.tar.gz"
EXACT_SUBSET_PATHS = {"cifar10": "cifar10/cifar10_exact_subset.npz", "cifar100": "cifar100/cifar100_exact_subset.npz"}
TORCHVISION_FOLDERS = {"cifar10": ("cifar-10-batches-py", "CIFAR10"), "cifar100": ("cifar-100-python", "CIFAR100")}
_JPEG_NOTE = "CIFAR-10 re-encoded as JPEG, mean abs. pixel error ~6/255 vs the canonical pixels"
_DECODE_VERSION = "v1"


def _canonical_base(name: str, root: Path) -> Path | None:
    folder = TORCHVISION_FOLDERS[name][0]
    for base in (root / name, root, cache_dir() / name):
        if (base / folder).is_dir():
            return base
    return None


def _searched(name: str, root: Path, variant: str) -> list[Path]:
    folder = TORCHVISION_FOLDERS[name][0]
    paths = [root / name / folder, root / folder, cache_dir() / name / folder]
    if name == "cifar10" and variant in ("auto", "jpeg"):
        paths.append(root / CIFAR10_JPEG_PATH)
    if variant in ("auto", "exact_subset"):
        paths.append(root / EXACT_SUBSET_PATHS[name])
    return paths


def _load_torchvision(name: str, split: str, root: Path, download: bool | None, base: Path | None) -> ImageData:
    try:
        import torchvision.datasets as tvd
    except ImportError as e:  # pragma: no cover
        raise ImportError("the 'torchvision' CIFAR variant needs torchvision: pip install 'uhop[data]'") from e
    cls = getattr(tvd, TORCHVISION_FOLDERS[name][1])
    if base is None:  # download
        base = root / name if is_writable(root) else cache_dir() / name
        ds = cls(str(base), train=split == "train", download=True)
    else:
        try:
            ds = cls(str(base), train=split == "train", download=False)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
            raise DataIntegrityError(base / TORCHVISION_FOLDERS[name][0], "torchvision's md5 of every batch file", f"a mismatch ({e})",
                                     what="md5") from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ImageData(images, labels, list(ds.classes), name, split, "torchvision", True, str(base / TORCHVISION_FOLDERS[name][0]),
                     note="canonical pickles", indices=torch.arange(len(labels)))


def _load_exact_subset(name: str, split: str, root: Path) -> ImageData:
    path = verify_file(root / EXACT_SUBSET_PATHS[name], EXACT_SUBSET_PATHS[name])
    with np.load(path) as z:
        if f"x_{split}" not in z.files:
            raise DatasetNotFoundError(
                name, [path], detail=f"the {name} exact subset holds no {split!r} images (it has: "
                f"{', '.join(k[2:] for k in z.files if k.startswith('x_'))})",
                hint="Use split='test', or provide the canonical files / allow a download for the full set.")
        x = z[f"x_{split}"]
        y = z[f"y_{split}"]
        idx = z[f"{split}_index"]
        classes = [str(c) for c in z["classes"]]
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    n = len(y)
    return ImageData(images, torch.from_numpy(y.astype(np.int64)), classes, name, split, "exact_subset", True,
                     str(path), note=f"exact pixels of {split} images {int(idx[0])}-{int(idx[-1])} only ({n} images)",
                     indices=torch.from_numpy(idx.astype(np.int64)))


def cifar10_jpeg_cache(root=None) -> Path:
    """Extract (once) and decode (once) the CIFAR-10 JPEG archive; return the folder of decoded arrays.

    The folder holds ``{train,test}_images.npy`` (uint8 ``(N, 3, 32, 32)``) and ``{train,test}_labels.npy``
    (int64 ``(N,)``), written atomically.  The archive is sha256-checked before it is read.
    """
    root = data_root(root)
    archive = root / CIFAR10_JPEG_PATH
    if not archive.is_file():
        raise DatasetNotFoundError("cifar10", [archive], detail="variant 'jpeg' needs cifar10-jpeg.tar.gz")
    verify_file(archive, CIFAR10_JPEG_PATH)
    sha = KNOWN_FILES[CIFAR10_JPEG_PATH].sha256
    decoded = cache_dir() / f"cifar10-jpeg-{sha[:12]}-decoded"
    tag = f"cifar10-jpeg-decoded-{_DECODE_VERSION}:{sha}"
    if is_complete(decoded, tag):
        return decoded
    extracted = extract_once(archive, cache_dir() / f"cifar10-jpeg-{sha[:12]}", f"extract:{sha}")
    return build_once(decoded, tag, lambda tmp: _decode_cifar10_jpeg(extracted, tmp))


def _decode_cifar10_jpeg(extracted: Path, out: Path) -> None:
    base = extracted / "CIFAR-10-images"
    with open(extracted / "kaggle_trainLabels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    if rows[0] != ["id", "label"] or [r[0] for r in rows[1:]] != [str(i) for i in range(1, 50001)]:
        raise DataIntegrityError(extracted / "kaggle_trainLabels.csv", "header id,label and ids 1..50000",
                                 "something else", what="content")
    y_train = np.array([CIFAR10_CLASSES.index(r[1]) for r in rows[1:]], dtype=np.int64)
    x_train = np.empty((50000, 3, 32, 32), dtype=np.uint8)
    rank = [0] * 10
    for k, c in enumerate(y_train):  # train image k = train/<class>/<rank of k within its class>.jpg
        x_train[k] = read_rgb(base / "train" / CIFAR10_CLASSES[c] / f"{rank[c]:04d}.jpg", 32)
        rank[c] += 1
    for c, name in enumerate(CIFAR10_CLASSES):
        n_files = sum(1 for _ in (base / "train" / name).glob("*.jpg"))
        if n_files != rank[c]:
            raise DataIntegrityError(base / "train" / name, f"{rank[c]} images", f"{n_files}", what="image count")
    x_test = np.empty((10000, 3, 32, 32), dtype=np.uint8)
    y_test = np.repeat(np.arange(10, dtype=np.int64), 1000)
    for i, c in enumerate(y_test):
        x_test[i] = read_rgb(base / "test" / CIFAR10_CLASSES[c] / f"{i % 1000:04d}.jpg", 32)
    np.save(out / "train_images.npy", x_train)
    np.save(out / "train_labels.npy", y_train)
    np.save(out / "test_images.npy", x_test)
    np.save(out / "test_labels.npy", y_test)


def _load_jpeg(split: str, root: Path) -> ImageData:
    folder = cifar10_jpeg_cache(root)
    x = np.load(folder / f"{split}_images.npy")
    y = np.load(folder / f"{split}_labels.npy")
    announce_approximate("cifar10", "jpeg", _JPEG_NOTE)
    if split == "train":
        note, idx = _JPEG_NOTE + "; original training order", torch.arange(len(y))
    else:
        note, idx = _JPEG_NOTE + "; test images grouped by class (original test order unknown)", None
    return ImageData(torch.from_numpy(x), torch.from_numpy(y), list(CIFAR10_CLASSES), "cifar10", split, "jpeg", False,
                     str(root / CIFAR10_JPEG_PATH), note=note, indices=idx)


def _check_args(kind: str, split: str, variant: str, variants: tuple[str, ...]) -> None:
    if split not in CIFAR_SPLITS:
        raise unknown_name(f"{kind} split", split, CIFAR_SPLITS)
    if variant not in variants:
        raise unknown_name(f"{kind} variant", variant, variants)


def load_cifar10(split: str = "train", root=None, variant: str = "auto", download: bool | None = None) -> ImageData:
    """Load one CIFAR-10 split.

    Returns :class:`ImageData` with ``images`` uint8 ``(N, 3, 32, 32)`` RGB in 0..255, ``labels`` int64 in 0..9,
    the 10 class names; ``N`` = 50,000 / 10,000 (``torchvision``, ``jpeg``) or 200 / 20 (``exact_subset``).
    ``exact`` is False for ``variant="jpeg"`` (lossy).  See the module docstring for the ``auto`` order.
    """
    _check_args("CIFAR-10", split, variant, CIFAR10_VARIANTS)
    root = data_root(root)
    base = _canonical_base("cifar10", root)
    if variant in ("auto", "torchvision") and base is not None:
        return _load_torchvision("cifar10", split, root, download, base)
    if variant in ("auto", "jpeg") and (root / CIFAR10_JPEG_PATH).is_file():
        return _load_jpeg(split, root)
    if variant in ("auto", "torchvision") and download_allowed(download):
        return _load_torchvision("cifar10", split, root, download, None)
    if variant in ("auto", "exact_subset") and (root / EXACT_SUBSET_PATHS["cifar10"]).is_file():
        data = _load_exact_subset("cifar10", split, root)
        if variant == "auto":
            warnings.warn(f"CIFAR-10: only the exact subset was found ({len(data)} {split} images); "
                          f"pass variant='exact_subset' to silence this", UserWarning, stacklevel=2)
        return data
    raise DatasetNotFoundError("cifar10", _searched("cifar10", root, variant),
                               detail=f"variant={variant!r}, split={split!r}; {download_status(download)}")


def load_cifar100(split: str = "train", root=None, variant: str = "auto", download: bool | None = None) -> ImageData:
    """Load one CIFAR-100 split (fine labels).

    Returns :class:`ImageData` with ``images`` uint8 ``(N, 3, 32, 32)`` in 0..255, ``labels`` int64 in 0..99 and the
    100 fine class names; ``N`` = 50,000 / 10,000 (``torchvision``) or 20 test images (``exact_subset``).
    With only the exact subset present, ``auto`` raises :class:`DatasetNotFoundError`: ask for
    ``variant="exact_subset"`` explicitly.
    """
    _check_args("CIFAR-100", split, variant, CIFAR100_VARIANTS)
    root = data_root(root)
    base = _canonical_base("cifar100", root)
    if variant in ("auto", "torchvision") and base is not None:
        return _load_torchvision("cifar100", split, root, download, base)
    if variant in ("auto", "torchvision") and download_allowed(download):
        return _load_torchvision("cifar100", split, root, download, None)
    if variant == "exact_subset" and (root / EXACT_SUBSET_PATHS["cifar100"]).is_file():
        return _load_exact_subset("cifar100", split, root)
    hint = ""
    if variant != "exact_subset" and (root / EXACT_SUBSET_PATHS["cifar100"]).is_file():
        hint = ("Only the 20-image exact CIFAR-100 test subset is present; pass variant='exact_subset' to use it, "
                "or provide the canonical cifar-100-python/ folder (or allow a download: unset UHOP_OFFLINE).")
    raise DatasetNotFoundError("cifar100", _searched("cifar100", root, variant), hint=hint,
                               detail=f"variant={variant!r}, split={split!r}; {download_status(download)}")
