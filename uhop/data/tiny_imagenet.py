"""Tiny ImageNet (Le & Yang, 2015): 200 classes of 64x64 colour images.

Variants (``variant=``):

``"full"``
    An extracted canonical ``tiny-imagenet-200/`` folder (searched at ``<root>/tiny-imagenet-200``,
    ``<root>/tiny-imagenet/tiny-imagenet-200`` and ``<cache>/tiny-imagenet-200``), else the canonical
    ``tiny-imagenet-200.zip`` (md5 90528d7c...; searched at ``<root>/``, ``<root>/tiny-imagenet/``, ``<cache>/``)
    extracted once into the cache, else (if downloading is allowed and ``variant="full"`` is asked for explicitly) a download of
    that zip from the CS231n site.  500 train images per class (100,000) + 10,000 val.
``"subset50"``
    ``<root>/tiny-imagenet/tiny-imagenet-200-subset50.zip``: the first 50 train images of every class (10,000) and
    the full validation set (10,000), original JPEG files; extracted once into the cache.

``"auto"``: full folder -> canonical zip -> subset50 zip -> :class:`DatasetNotFoundError`.

Classes are sorted by wnid (as ``torchvision.datasets.ImageFolder`` would order them); class names come from
``words.txt``; validation labels from ``val/val_annotations.txt``.  Grayscale JPEGs (362 in the subset) are converted
to RGB by replicating the channel.  Decoded images are cached as uint8 ``.npy`` (written atomically).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .cache import build_once, extract_once, is_complete
from .checksums import KNOWN_FILES, verify_file
from .errors import DataIntegrityError, DatasetNotFoundError, unknown_name
from .imagedata import ImageData, read_rgb
from .paths import cache_dir, data_root, download_allowed, download_status

__all__ = ["load_tiny_imagenet", "TINY_SPLITS", "TINY_VARIANTS", "tiny_imagenet_cache"]

TINY_SPLITS = ("train", "val")
TINY_VARIANTS = ("auto", "full", "subset50")
SUBSET50_PATH = "tiny-imagenet/tiny-imagenet-200-subset50.zip"
_CANONICAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_CANONICAL_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_DECODE_VERSION = "v1"


def full_folders(root: Path) -> list[Path]:
    return [root / "tiny-imagenet-200", root / "tiny-imagenet" / "tiny-imagenet-200", cache_dir() / "tiny-imagenet-200"]


def canonical_zips(root: Path) -> list[Path]:
    return [root / "tiny-imagenet-200.zip", root / "tiny-imagenet" / "tiny-imagenet-200.zip",
            cache_dir() / "tiny-imagenet-200.zip"]


def is_image_folder(p: Path) -> bool:
    return (p / "wnids.txt").is_file() and (p / "train").is_dir() and (p / "val" / "val_annotations.txt").is_file()


def _index(name: str) -> int:
    """Numeric part of ``n01443537_17.JPEG`` / ``val_17.JPEG``."""
    return int(Path(name).stem.rsplit("_", 1)[1])


def _decode_folder(folder: Path, out: Path) -> None:
    """Decode an extracted ``tiny-imagenet-200/`` into ``out/{train,val}_{images,labels}.npy`` + ``classes.json``."""
    wnids = sorted((folder / "wnids.txt").read_text().split())
    if len(wnids) != 200 or len(set(wnids)) != 200:
        raise DataIntegrityError(folder / "wnids.txt", "200 unique wnids", f"{len(set(wnids))}", what="content")
    words = {}
    for line in (folder / "words.txt").read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            w, text = line.split("\t", 1)
            words[w] = text.strip()
    cidx = {w: i for i, w in enumerate(wnids)}
    train_files, train_labels = [], []
    for w in wnids:
        files = sorted((folder / "train" / w / "images").glob("*.JPEG"), key=lambda p: _index(p.name))
        train_files += files
        train_labels += [cidx[w]] * len(files)
    val_rows = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            val_rows.append((parts[0], parts[1]))
    val_rows.sort(key=lambda r: _index(r[0]))
    unknown = {w for _, w in val_rows} - set(cidx)
    if unknown:
        raise DataIntegrityError(folder / "val" / "val_annotations.txt", "wnids from wnids.txt",
                                 f"unknown wnids {sorted(unknown)[:3]}", what="content")
    for split, files, labels in (("train", train_files, train_labels),
                                 ("val", [folder / "val" / "images" / f for f, _ in val_rows],
                                  [cidx[w] for _, w in val_rows])):
        x = np.empty((len(files), 3, 64, 64), dtype=np.uint8)
        for i, p in enumerate(files):
            x[i] = read_rgb(p, 64)
        np.save(out / f"{split}_images.npy", x)
        np.save(out / f"{split}_labels.npy", np.asarray(labels, dtype=np.int64))
    (out / "classes.json").write_text(json.dumps({"wnids": wnids, "words": [words.get(w, w) for w in wnids]}))


def _decoded_for_folder(folder: Path, tag_extra: str) -> Path:
    key = hashlib.sha256(f"{folder.resolve()}|{tag_extra}".encode()).hexdigest()[:12]
    st = (folder / "val" / "val_annotations.txt").stat()
    tag = f"tiny-decoded-{_DECODE_VERSION}:{folder.resolve()}:{tag_extra}:{st.st_size}:{st.st_mtime_ns}"
    return build_once(cache_dir() / f"tiny-imagenet-{key}-decoded", tag, lambda tmp: _decode_folder(folder, tmp))


def tiny_imagenet_cache(root=None, variant: str = "auto", download: bool | None = None) -> tuple[Path, str, str]:
    """Prepare (extract and decode once) Tiny ImageNet; return ``(decoded_folder, variant, source)``.

    ``decoded_folder`` holds ``{train,val}_images.npy`` (uint8 ``(N, 3, 64, 64)``), ``{train,val}_labels.npy``
    (int64) and ``classes.json`` (``wnids`` and ``words``, sorted by wnid).
    """
    if variant not in TINY_VARIANTS:
        raise unknown_name("Tiny ImageNet variant", variant, TINY_VARIANTS)
    root = data_root(root)
    searched: list[Path] = []
    if variant in ("auto", "full"):
        for folder in full_folders(root):
            searched.append(folder)
            if is_image_folder(folder):
                return _decoded_for_folder(folder, "folder"), "full", str(folder)
        zips = canonical_zips(root)
        searched += zips
        found = next((z for z in zips if z.is_file()), None)
        if found is None and variant == "full" and download_allowed(download):
            from torchvision.datasets.utils import download_url

            download_url(_CANONICAL_URL, str(cache_dir()), "tiny-imagenet-200.zip", md5=_CANONICAL_MD5)
            found = cache_dir() / "tiny-imagenet-200.zip"
        if found is not None:
            verify_file(found, digest=_CANONICAL_MD5, algorithm="md5")
            ext = extract_once(found, cache_dir() / "tiny-imagenet-200-canonical", f"extract:{_CANONICAL_MD5}")
            return _decoded_for_folder(ext / "tiny-imagenet-200", "canonical"), "full", str(found)
    if variant in ("auto", "subset50"):
        z = root / SUBSET50_PATH
        searched.append(z)
        if z.is_file():
            sha = KNOWN_FILES[SUBSET50_PATH].sha256
            decoded = cache_dir() / f"tiny-imagenet-subset50-{sha[:12]}-decoded"
            tag = f"tiny-subset50-decoded-{_DECODE_VERSION}:{sha}"
            verify_file(z, SUBSET50_PATH)
            if not is_complete(decoded, tag):
                ext = extract_once(z, cache_dir() / f"tiny-imagenet-subset50-{sha[:12]}", f"extract:{sha}")
                build_once(decoded, tag, lambda tmp: _decode_folder(ext / "tiny-imagenet-200", tmp))
            return decoded, "subset50", str(z)
    raise DatasetNotFoundError("tiny_imagenet", searched, detail=f"variant={variant!r}; {download_status(download)}")


def load_tiny_imagenet(split: str = "train", root=None, variant: str = "auto",
                       download: bool | None = None) -> ImageData:
    """Load one Tiny ImageNet split (``"train"`` or ``"val"``; the original test split has no labels).

    Returns :class:`ImageData` with ``images`` uint8 ``(N, 3, 64, 64)`` RGB in 0..255, ``labels`` int64 in 0..199
    (classes sorted by wnid), ``classes`` the ``words.txt`` names, ``meta["wnids"]``; ``variant`` ``"full"``
    (N = 100,000 / 10,000), ``"subset50"`` (N = 10,000 / 10,000), or ``"partial"`` (an extracted folder that is not
    the complete training set).  Train images are ordered by class, then by
    their number; val images by their number (``val_0`` ...).
    """
    if split not in TINY_SPLITS:
        raise unknown_name("Tiny ImageNet split", split, TINY_SPLITS)
    folder, used, source = tiny_imagenet_cache(root, variant, download)
    x = np.load(folder / f"{split}_images.npy")
    y = np.load(folder / f"{split}_labels.npy")
    meta = json.loads((folder / "classes.json").read_text())
    per_class = np.bincount(y, minlength=200)
    n_train = len(np.load(folder / "train_labels.npy", mmap_mode="r"))
    if used == "full" and n_train != 100_000:
        used = "partial"  # an extracted folder that is not the complete training set
    note = {"subset50": "subset: first 50 train images per class (original files), full val set",
            "full": "original files",
            "partial": f"an extracted folder with {n_train} train images (not 500/class)"}[used]
    return ImageData(torch.from_numpy(x), torch.from_numpy(y), list(meta["words"]), "tiny_imagenet", split, used, True,
                     source, note=note + f"; {int(per_class.min())}-{int(per_class.max())} images per class",
                     meta={"wnids": list(meta["wnids"])})
