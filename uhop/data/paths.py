"""Where data is read from, where derived files are written, and whether downloads are allowed.

Three environment variables control the data layer:

``UHOP_DATA``
    The data root (read-only is fine): the folder holding ``mnist/``, ``cifar10/``, ``ett/`` ... as laid out
    by the project's offline data set (see ``python -m uhop.data verify``).
``UHOP_CACHE``
    A writable folder for everything the loaders derive from the root: extracted archives, decoded
    ``.npy`` arrays, MNIST idx files.  Defaults to ``$XDG_CACHE_HOME/uhop`` or ``~/.cache/uhop``.
``UHOP_OFFLINE``
    ``1`` (or ``true``/``yes``/``on``) forbids every download, whatever a loader's ``download=`` says.
    Tests and CI set it, so that a missing file fails fast with :class:`~uhop.data.DatasetNotFoundError`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "cache_dir", "offline", "download_allowed", "download_status", "is_writable"]

_TRUE = {"1", "true", "yes", "on"}


def _default_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "uhop"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``root`` if given, else ``$UHOP_DATA``, else the user cache folder.

    The user cache folder is ``$XDG_CACHE_HOME/uhop`` or ``~/.cache/uhop`` (where downloads land by default).
    The folder is not created and need not exist; loaders report what they searched when files are missing.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("UHOP_DATA")
    if env:
        return Path(env).expanduser()
    return _default_cache()


def cache_dir(create: bool = True) -> Path:
    """Return the writable cache folder: ``$UHOP_CACHE``, else ``$XDG_CACHE_HOME/uhop``, else ``~/.cache/uhop``.

    Extracted archives and decoded arrays go here (never into the data root, which may be read-only).
    """
    env = os.environ.get("UHOP_CACHE")
    path = Path(env).expanduser() if env else _default_cache()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def offline() -> bool:
    """True when ``UHOP_OFFLINE`` is set to a true value (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get("UHOP_OFFLINE", "").strip().lower() in _TRUE


def download_allowed(download: bool | None = None) -> bool:
    """Decide whether a loader may download.

    ``download=None`` (the loaders' default) means "allowed unless ``UHOP_OFFLINE`` is set";
    ``download=False`` never downloads; ``download=True`` downloads unless ``UHOP_OFFLINE`` is set
    (the environment switch always wins, so CI can never reach the network by accident).
    """
    if offline():
        return False
    return True if download is None else bool(download)


def download_status(download: bool | None = None) -> str:
    """Short phrase for error messages: why downloading is (not) possible."""
    if offline():
        return "downloads are off (UHOP_OFFLINE is set)"
    if download is False:
        return "downloads are off (download=False)"
    return "downloading is allowed"


def is_writable(path: Path) -> bool:
    """True if ``path`` (or its nearest existing parent) is a writable directory."""
    p = Path(path)
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)
