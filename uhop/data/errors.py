"""Exceptions raised by :mod:`uhop.data`.

Every error names the file or dataset concerned and says how to fix the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

__all__ = ["DataIntegrityError", "DatasetNotFoundError", "unknown_name"]


class DataIntegrityError(RuntimeError, ValueError):
    """A data file does not have the expected size or sha256 (corrupted, truncated or replaced).

    Raised before the file is used; the data layer never falls back silently to a bad file.
    Attributes: ``path``, ``expected`` and ``actual`` (hex digests or sizes, as strings).
    """

    def __init__(self, path: Path | str, expected: str, actual: str, what: str = "sha256", hint: str = ""):
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        fix = hint or (
            "Restore an intact copy (re-download it, or copy it again from the original data folder), then check "
            "it with `python -m uhop.data verify --root <data root>`."
        )
        super().__init__(
            f"integrity check failed for {self.path}: expected {what} {expected}, got {actual}. "
            f"The file is corrupted, truncated or not the expected version and was NOT used. {fix}"
        )


class DatasetNotFoundError(FileNotFoundError):
    """A dataset (or the requested variant of it) is not present and may not be downloaded.

    Attributes: ``dataset`` (name), ``searched`` (list of paths that were looked at).
    """

    def __init__(self, dataset: str, searched: Iterable[Path | str] = (), hint: str = "", detail: str = ""):
        self.dataset = dataset
        self.searched = [str(p) for p in searched]
        lines = [f"dataset {dataset!r} not found" + (f" ({detail})" if detail else "") + "."]
        if self.searched:
            lines.append("Searched:")
            lines.extend(f"  - {p}" for p in self.searched)
        lines.append(
            hint
            or "Fix: set UHOP_DATA (or pass root=) to a folder holding the data "
            "(`python -m uhop.data list` shows what a root holds), or run with internet access and "
            "download allowed (unset UHOP_OFFLINE, pass download=True)."
        )
        super().__init__("\n".join(lines))

    def __str__(self) -> str:  # FileNotFoundError's default repr shows an errno tuple; keep the message plain
        return self.args[0] if self.args else ""


def unknown_name(kind: str, name: object, valid: Iterable[str]) -> ValueError:
    """Build the ValueError for an unknown dataset/split/variant name, listing the valid ones."""
    valid = list(valid)
    return ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(repr(v) for v in valid)}")
