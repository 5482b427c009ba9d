"""Build derived data in the cache exactly once, atomically.

A derived folder (an extracted archive, a set of decoded ``.npy`` arrays) is built in a temporary sibling
``.<name>.tmp-<pid>-<random>`` and renamed into place only after the builder finished; the completion marker
``.uhop-complete`` (holding a tag such as the source's sha256) is written last, inside the temporary folder,
before the rename.  So a folder without the right marker is never taken as complete: an interrupted build
(crash, Ctrl-C, full disk) leaves at most a temporary folder or an unmarked folder, both rebuilt next time.
Concurrent processes (e.g. ``pytest -n``) serialise on a lock file (``fcntl.flock`` where available).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["MARKER", "is_complete", "build_once", "extract_once", "save_npy_atomic", "file_lock"]

MARKER = ".uhop-complete"

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: rely on the atomic rename alone
    fcntl = None


@contextmanager
def file_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if needed). Yields True if a real OS lock is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield False
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def is_complete(folder: Path, tag: str) -> bool:
    """True if ``folder`` holds the completion marker with exactly ``tag``."""
    marker = Path(folder) / MARKER
    try:
        return marker.read_text().strip() == tag
    except OSError:
        return False


def build_once(final: Path, tag: str, builder: Callable[[Path], None]) -> Path:
    """Return ``final``, building it with ``builder(tmp_dir)`` first unless it is already complete for ``tag``.

    ``builder`` fills an empty temporary folder; if it raises, the temporary folder is removed and the
    exception propagates (``final`` is untouched).  An existing ``final`` without the right marker (left by an
    interrupted or older build) is deleted and rebuilt.
    """
    final = Path(final)
    if is_complete(final, tag):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock") as locked:
        if is_complete(final, tag):  # another process finished while we waited
            return final
        if locked:  # nobody else is building: leftovers of killed builds can go
            for stale in final.parent.glob(f".{final.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            builder(tmp)
            (tmp / MARKER).write_text(tag + "\n")
            if final.exists():  # incomplete or stale: replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without PEP 706 filters: refuse unsafe members ourselves
            for m in tf.getmembers():
                name = Path(m.name)
                if name.is_absolute() or ".." in name.parts or not (m.isfile() or m.isdir()):
                    raise ValueError(f"refusing unsafe archive member {m.name!r} in {archive}")
            tf.extractall(dest)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)  # zipfile strips absolute paths and '..' components


def extract_once(archive: Path, final: Path, tag: str) -> Path:
    """Extract a ``.tar[.gz]`` or ``.zip`` archive into ``final`` once, atomically (see :func:`build_once`)."""
    archive = Path(archive)
    extractor = _extract_zip if archive.suffix == ".zip" else _extract_tar
    return build_once(final, tag, lambda tmp: extractor(archive, tmp))


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
