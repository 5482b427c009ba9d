"""Known sizes and sha256 digests of every data file the loaders read, and their verification.

The table below was taken from the data set's ``SHA256SUMS`` and ``README.md`` (each file's ``SOURCE.md``
documents where it came from).  A loader calls :func:`verify_file` before it reads a file for the first time in
a process; the result is remembered per (path, size, mtime), so repeated loads do not hash again.
A size or digest mismatch raises :class:`~uhop.data.DataIntegrityError` and the file is not used.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import DataIntegrityError

__all__ = ["KnownFile", "KNOWN_FILES", "MNIST_IDX", "file_digest", "verify_file", "verify_root"]


@dataclass(frozen=True)
class KnownFile:
    """One file of the data set: path relative to the data root, size in bytes, sha256, and what it is."""

    rel: str
    size: int
    sha256: str
    dataset: str
    variant: str
    exact: bool
    description: str


KNOWN_FILES: dict[str, KnownFile] = {
    f.rel: f
    for f in [
        KnownFile("mnist/MNIST/raw/train-images-idx3-ubyte.gz", 9_912_422,
                  "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                  "mnist", "torchvision", True, "MNIST train images, 60,000 x 28x28 (canonical gzip)"),
        KnownFile("mnist/MNIST/raw/train-labels-idx1-ubyte.gz", 28_881,
                  "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                  "mnist", "torchvision", True, "MNIST train labels (canonical gzip)"),
        KnownFile("mnist/MNIST/raw/t10k-images-idx3-ubyte.gz", 1_648_877,
                  "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                  "mnist", "torchvision", True, "MNIST test images, 10,000 x 28x28 (canonical gzip)"),
        KnownFile("mnist/MNIST/raw/t10k-labels-idx1-ubyte.gz", 4_542,
                  "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                  "mnist", "torchvision", True, "MNIST test labels (canonical gzip)"),
        KnownFile("ett/ETT-small/ETTh1.csv", 2_589_657,
                  "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
                  "ETTh1", "csv", True, "ETTh1, hourly, 17,420 rows (CC BY-ND 4.0: never modify)"),
        KnownFile("ett/ETT-small/ETTm1.csv", 10_360_719,
                  "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
                  "ETTm1", "csv", True, "ETTm1, 15-minute, 69,680 rows (CC BY-ND 4.0: never modify)"),
        KnownFile("wth/WTH.csv", 2_031_564,
                  "5635e7f2d8f947f9abc6bc7077c907fb760eef111855a6805f096e9acff581bc",
                  "WTH", "csv", True, "Informer WTH weather, hourly 2010-2013, 35,064 rows"),
        KnownFile("cifar10/cifar10_exact_subset.npz", 627_008,
                  "0420198454f1b7605c37338b9ccbdc0de42e36db5692b8edb1f31a70af63887e",
                  "cifar10", "exact_subset", True, "CIFAR-10 train 0-199 + test 0-19, exact pixels"),
        KnownFile("cifar10/cifar10-jpeg.tar.gz", 21_216_463,
                  "a1c09a1d0c0d7702b97c44647119842e2b56ae339c6dd853000bb6f41c1dc17b",
                  "cifar10", "jpeg", False, "all 60,000 CIFAR-10 images as JPEG (lossy, ~6/255 mean abs error)"),
        KnownFile("cifar100/cifar100_exact_subset.npz", 59_190,
                  "d3230212e5acf9239dd6e75fd9bc74133e2bd06fd597aa74ad6c46877a4feef9",
                  "cifar100", "exact_subset", True, "CIFAR-100 test 0-19, exact pixels, fine labels"),
        KnownFile("tiny-imagenet/tiny-imagenet-200-subset50.zip", 40_924_801,
                  "e1bb7386e27c3e0bc068d9962bf273dd150d19eb60d3c073afcba33374f0869f",
                  "tiny_imagenet", "subset50", True, "Tiny ImageNet: 50 train images/class + full val (original JPEGs)"),
    ]
}

#: Uncompressed MNIST idx files (what torchvision reads): name -> (size, md5), the canonical md5s.
MNIST_IDX: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte": (47_040_016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60_008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7_840_016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10_008, "27ae3e4e09519cfbb04c329615203637"),
}

_VERIFIED: dict[tuple[str, int, int, str], bool] = {}
_LOCK = threading.Lock()


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path | str, rel: str | None = None, *, size: int | None = None,
                digest: str | None = None, algorithm: str = "sha256") -> Path:
    """Check ``path`` against the known size and digest; return it as a ``Path``.

    Either give ``rel`` (a key of :data:`KNOWN_FILES`; the file may live anywhere, its *content* is checked)
    or ``size``/``digest`` explicitly.  Raises :class:`DataIntegrityError` on a size mismatch (reported as
    truncation/corruption) or a digest mismatch, :class:`FileNotFoundError` if the file does not exist.
    A successful check is cached for this process, keyed by (path, size, mtime, digest).
    """
    path = Path(path)
    if rel is not None:
        known = KNOWN_FILES[rel]
        size, digest, algorithm = known.size, known.sha256, "sha256"
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, digest or "")
    with _LOCK:
        if _VERIFIED.get(key):
            return path
    if size is not None and st.st_size != size:
        kind = "truncated" if st.st_size < size else "too long"
        raise DataIntegrityError(path, f"{size} bytes", f"{st.st_size} bytes ({kind})", what="size")
    if digest is not None:
        actual = file_digest(path, algorithm)
        if actual != digest:
            raise DataIntegrityError(path, digest, actual, what=algorithm)
    with _LOCK:
        _VERIFIED[key] = True
    return path


def verify_root(root: Path | str) -> list[tuple[str, str, str]]:
    """Check every known file under ``root``; return ``(status, rel, detail)`` rows.

    ``status`` is ``"PASS"``, ``"FAIL"`` (size or sha256 mismatch) or ``"MISSING"``.
    """
    root = Path(root)
    rows = []
    for rel, known in KNOWN_FILES.items():
        p = root / rel
        if not p.is_file():
            rows.append(("MISSING", rel, f"{known.description}"))
            continue
        try:
            verify_file(p, rel)
        except DataIntegrityError as e:
            rows.append(("FAIL", rel, f"expected {e.expected}, got {e.actual}"))
        else:
            rows.append(("PASS", rel, f"{known.size} bytes, sha256 {known.sha256[:16]}..."))
    return rows
