"""Provenance of a computed result: which code, which machine, when.

Every file under ``results/`` is accompanied by a manifest written with :func:`write_manifest`, so
that a number shown in the book can be traced to the command, parameters, package version, git
commit, date and machine that produced it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["collect_provenance", "git_commit", "write_manifest", "atomic_write_text", "writer_lock", "lock_holder",
           "LockedError"]


def git_commit(cwd: str | os.PathLike | None = None, ignore=()) -> dict[str, Any]:
    """The current git commit of ``cwd`` (default: the package's checkout), whether it is dirty and, if so, which
    tracked files differ from the commit (``dirty_files``, at most 20; a result is only as reproducible as the
    code that made it, and this says whether the differences could have touched it).  Files in ``ignore`` (paths)
    do not count: a run that rewrites a committed result file has not changed the code that made it.

    Returns ``{"commit": None, "dirty": None}`` outside a git checkout (e.g. a wheel install).
    """
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parents[1]
    try:
        commit, top = subprocess.run(
            ["git", "rev-parse", "HEAD", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, check=True,
            timeout=10,
        ).stdout.split("\n")[:2]
        top = Path(top)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    skip = {Path(p).resolve() for p in ignore}
    changed = [line[3:] for line in status.splitlines() if line.strip() and (top / line[3:]).resolve() not in skip]
    out = {"commit": commit, "dirty": bool(changed)}
    if changed:
        out["dirty_files"] = changed[:20] + ([f"... and {len(changed) - 20} more"] if len(changed) > 20 else [])
    return out


def collect_provenance(device: str | None = None, ignore=()) -> dict[str, Any]:
    """Package versions, git commit, UTC date and a description of the machine."""
    import torch

    from . import __version__
    from .allocator import retaining

    machine: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "retain_freed_memory": retaining(),
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    versions = {"uhop": __version__, "torch": torch.__version__}
    try:
        import entmax

        versions["entmax"] = getattr(entmax, "__version__", "unknown")
    except ImportError:  # pragma: no cover - entmax is a core dependency
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "git": git_commit(ignore=ignore),
        "machine": machine,
        "device": device,
    }


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so that a reader never
    sees a half-written file (an interrupted run leaves the previous version intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(
    path: str | os.PathLike,
    *,
    command: str,
    parameters: dict[str, Any],
    wall_time_s: float | None = None,
    device: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a JSON manifest describing how a result was produced; returns it.  The result (``path`` without its
    ``.manifest.json``) and the manifest itself do not make the checkout count as dirty."""
    path = Path(path)
    described = path.with_name(path.name.removesuffix(".manifest.json"))
    manifest = {
        "command": command,
        "parameters": parameters,
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3),
        **collect_provenance(device, ignore=(path, described)),
    }
    if extra:
        manifest.update(extra)
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest


class LockedError(RuntimeError):
    """A results file's writer lock is held by someone else (``holder``: ``"pid N on HOST"``)."""

    def __init__(self, message: str, lock: Path, holder: str):
        super().__init__(message)
        self.lock, self.holder = lock, holder


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the :func:`writer_lock` of ``path`` right now (``"pid N on HOST"``), or ``None`` when it is free.

    A probe only: it can tell a person who is writing, but only :func:`writer_lock` itself excludes a second
    writer.  It takes a free lock for an instant, so a writer starting in that very instant is refused (with the
    usual message): never two writers, at worst none."""
    import fcntl

    lock = Path(f"{path}.lock")
    if not lock.exists():
        return None
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            return fh.read().strip() or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike, what: str = "results file", wait: float = 0.0):
    """Hold an exclusive lock on ``<path>.lock`` for the block: one writer per results file.

    A second holder (another process, or the same one) gets :class:`LockedError` (a ``RuntimeError``) naming
    the holder, at once or after waiting up to ``wait`` seconds for the lock to be released, instead of
    interleaving its writes with the first one's.  The lock dies with its process, so a crashed writer never
    leaves a stale lock behind (a retry after a killed worker waits a few seconds for it to go).
    """
    import fcntl
    import time

    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(float(wait), 0.0)
    with open(lock, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                waited = f" (waited {wait:g} s)" if wait else ""
                raise LockedError(f"{path} ({what}) is being written by {holder} (lock {lock}){waited}; wait for it "
                                  "or stop it -- two writers on one results file are refused", lock, holder) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
