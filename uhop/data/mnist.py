"""MNIST (LeCun et al., 1998) through ``torchvision.datasets.MNIST``.

Search order for ``load_mnist``:

1. ``<root>/mnist/MNIST/raw/`` (then ``<cache>/mnist/MNIST/raw/``) holding the four extracted idx files with their
   canonical sizes and md5s: read there by torchvision.
2. The same folders holding the four canonical ``.gz`` files (sha256-checked): they are decompressed once,
   atomically, into ``<cache>/mnist-idx-<sha>/MNIST/raw/`` (the data root may be read-only) and read there.
3. Otherwise, if downloading is allowed (see :func:`uhop.data.download_allowed`): torchvision downloads into
   ``<root>/mnist`` (or ``<cache>/mnist`` if the root is not writable), exactly what ``MNIST(download=True)`` does.
4. Otherwise :class:`~uhop.data.DatasetNotFoundError`.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import torch

from .cache import build_once
from .checksums import KNOWN_FILES, MNIST_IDX, verify_file
from .errors import DataIntegrityError, DatasetNotFoundError, unknown_name
from .imagedata import ImageData
from .paths import cache_dir, data_root, download_allowed, download_status, is_writable

__all__ = ["load_mnist", "MNIST_SPLITS"]

MNIST_SPLITS = ("train", "test")
_GZ = {name: f"mnist/MNIST/raw/{name}.gz" for name in MNIST_IDX}


def _bases(root: Path) -> list[Path]:
    out = []
    for b in (root / "mnist", cache_dir() / "mnist"):
        if b not in out:
            out.append(b)
    return out


def _idx_ok(raw: Path) -> bool:
    """All four idx files present with canonical size and md5 (md5 checked once per process)."""
    if not all((raw / n).is_file() and (raw / n).stat().st_size == size for n, (size, _) in MNIST_IDX.items()):
        return False
    for n, (size, md5) in MNIST_IDX.items():
        verify_file(raw / n, size=size, digest=md5, algorithm="md5")
    return True


def _stage_from_gz(raw: Path) -> Path:
    """Verify the four .gz in ``raw`` and decompress them once into the cache; return the torchvision root."""
    for name, rel in _GZ.items():
        verify_file(raw / f"{name}.gz", rel)
    tag = "mnist-idx-v1:" + KNOWN_FILES[_GZ["train-images-idx3-ubyte"]].sha256
    final = cache_dir() / f"mnist-idx-{KNOWN_FILES[_GZ['train-images-idx3-ubyte']].sha256[:12]}"

    def build(tmp: Path) -> None:
        out = tmp / "MNIST" / "raw"
        out.mkdir(parents=True)
        for name, (size, md5) in MNIST_IDX.items():
            with gzip.open(raw / f"{name}.gz", "rb") as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            verify_file(out / name, size=size, digest=md5, algorithm="md5")

    return build_once(final, tag, build)


def load_mnist(split: str = "train", root=None, download: bool | None = None) -> ImageData:
    """Load one MNIST split.

    Parameters
    ----------
    split : ``"train"`` (60,000 images) or ``"test"`` (10,000).
    root : data root (default: :func:`uhop.data.data_root`, i.e. ``$UHOP_DATA``).
    download : allow torchvision to download when no local copy exists (default: yes unless ``UHOP_OFFLINE``).

    Returns
    -------
    ImageData with ``images`` uint8 ``(N, 1, 28, 28)`` in 0..255, ``labels`` int64 ``(N,)`` in 0..9,
    ``classes`` ``["0 - zero", ..., "9 - nine"]``, ``variant="torchvision"``, ``exact=True``.
    """
    if split not in MNIST_SPLITS:
        raise unknown_name("MNIST split", split, MNIST_SPLITS)
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:  # pragma: no cover
        raise ImportError("load_mnist needs torchvision: pip install 'uhop[data]'") from e

    root = data_root(root)
    train = split == "train"
    searched = []
    tv_root = None
    for base in _bases(root):
        raw = base / "MNIST" / "raw"
        searched.append(raw)
        if _idx_ok(raw):
            tv_root = base
            break
        if all((raw / f"{n}.gz").is_file() for n in MNIST_IDX):
            tv_root = _stage_from_gz(raw)
            break
    if tv_root is not None:
        ds = MNIST(str(tv_root), train=train, download=False)
    elif download_allowed(download):
        target = root / "mnist" if is_writable(root) else cache_dir() / "mnist"
        ds = MNIST(str(target), train=train, download=True)
        tv_root = target
    else:
        raise DatasetNotFoundError(
            "mnist", searched,
            detail=f"need the four MNIST idx .gz files in <root>/mnist/MNIST/raw/; {download_status(download)}")
    images = ds.data.unsqueeze(1).contiguous()
    labels = ds.targets.to(torch.int64)
    if images.shape[1:] != (1, 28, 28):
        raise DataIntegrityError(tv_root, "(N, 1, 28, 28)", str(tuple(images.shape)), what="shape")
    return ImageData(images, labels, list(ds.classes), "mnist", split, "torchvision", True,
                     str(Path(tv_root) / "MNIST" / "raw"), note="canonical MNIST idx files")
