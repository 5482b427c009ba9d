"""What every experiment notebook does right after its ``parameters`` cell.

* :func:`check_parameters` -- papermill only *warns* about a parameter the notebook does not declare and then
  runs the defaults, so ``-p n_memorys 10`` would silently give a smoke run with exit code 0.  The
  notebooks declare their parameters with annotations (``n_memories: int = 10``); papermill's injected cell
  assigns without them, so any other plain name in the namespace at that point is a misspelt or unknown
  parameter, and the run stops with the list of valid names.
* :func:`notebook_path` -- the notebooks write their outputs to paths relative to ``notebooks/`` (as their
  defaults are written, e.g. ``../_build/...``); this resolves them against that folder of the checkout
  whatever the working directory papermill was started in, so that a run from the repository root does not
  write outside the checkout.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

__all__ = ["check_parameters", "notebook_path", "NOTEBOOKS", "add_train_parser", "full_size_entry"]

#: The ``notebooks/`` folder of the checkout this package was installed from (editable install).
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Names IPython and ipykernel put into a kernel's namespace.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open", "display"}


def check_parameters(namespace: dict) -> list[str]:
    """Raise ``ValueError`` if ``namespace`` (a notebook's ``globals()`` right after its parameters cell) holds a
    plain name that the parameters cell did not declare with an annotation; return the declared names."""
    declared = list(namespace.get("__annotations__", {}))
    unknown = sorted(name for name, value in namespace.items()
                     if not name.startswith("_") and name not in _KERNEL_NAMES and name not in declared
                     and not isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                                                type)))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}: this notebook's parameters are {sorted(declared)} "
                         "(check the spelling of -p NAME VALUE)")
    return declared


def notebook_path(path: str | os.PathLike) -> Path:
    """``path`` as the notebooks mean it: an absolute path as is, a relative one against ``notebooks/`` of the
    checkout (the folder the defaults are written for), else against the working directory when the package
    is not installed from a checkout."""
    p = Path(path)
    if p.is_absolute():
        return p
    base = NOTEBOOKS if NOTEBOOKS.is_dir() else Path.cwd()
    return (base / p).resolve()


def add_train_parser(subparsers, notebook: str):
    """The ``train`` sub-command shared by the experiment modules' command lines: ``--run NAME`` (an entry of
    ``notebooks/full_size.yml`` for ``notebook``), ``--variants``, ``--seeds``, ``--threads``, ``--device``."""
    t = subparsers.add_parser("train", help=f"train some runs of one notebooks/full_size.yml {notebook} entry")
    t.add_argument("--run", required=True, help="entry name in notebooks/full_size.yml")
    t.add_argument("--variants", default="", help="comma-separated subset (default: the entry's)")
    t.add_argument("--seeds", default="", help="comma-separated seeds (default: the entry's)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--device", default="cpu")
    return t


def full_size_entry(name: str, notebook: str) -> dict:
    """The ``notebooks/full_size.yml`` entry ``name`` of ``notebook``; ``SystemExit`` listing the known ones."""
    from ..reproduce import load_runs

    entries = {r["name"]: r for r in load_runs() if r["notebook"] == notebook}
    if name not in entries:
        raise SystemExit(f"unknown run {name!r}; {notebook} runs in notebooks/full_size.yml: {sorted(entries)}")
    return entries[name]
