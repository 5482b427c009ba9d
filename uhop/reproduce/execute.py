"""Executing one run in this process (the child process of a unit, ``--in-process``): its notebook through
papermill under the run's exclusive lock, and the outcome as the exit code the parent reads."""

from __future__ import annotations

import time
from pathlib import Path

from .runs import notebook_source

# exit codes of one run's child process (``--in-process``)
EXIT_FAILED = 1  # the notebook raised: not retried, it would fail again
EXIT_LOCKED = 73  # the run (or its output) is being written by another process: refused, not retried
EXIT_WORKER_DIED = 75  # the notebook's kernel, or a process of its grid's worker pool, died: retried


def lock_path(name: str, repo: Path) -> Path:
    return repo / "_build" / "reproduce" / "locks" / name


def run_lock(name: str, repo: Path, wait: float = 0.0):
    """Exclusive lock for one run (:func:`uhop.provenance.writer_lock`): a second holder gets a clear error."""
    from ..provenance import writer_lock

    return writer_lock(lock_path(name, repo), what=f"run {name!r}", wait=wait)


def _execute(run: dict, repo: Path, spec: Path | None = None, lock_wait: float = 0.0) -> float:
    """Execute one run's notebook with papermill in this process (under the run's lock)."""
    import jupytext
    import papermill as pm

    source = notebook_source(run, spec)
    out = repo / "_build" / "papermill" / "full" / f"{run['name']}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with run_lock(run["name"], repo, wait=lock_wait):
        pm.execute_notebook(jupytext.read(source), str(out), parameters=run.get("parameters") or {},
                            cwd=str(source.parent), kernel_name="python3", progress_bar=False, log_output=True)
    return time.perf_counter() - start


# exceptions, raised in the notebook (papermill reports their names), that mean a process died under the run
_DIED_IN_NOTEBOOK = {"BrokenProcessPool", "DeadKernelError", "KilledWorker"}


def execute_reporting(run: dict, repo: Path, spec: Path, lock_wait: float) -> int:
    """:func:`_execute`, its outcome as an exit code: ``EXIT_LOCKED`` / ``EXIT_WORKER_DIED`` for the cases the
    parent treats apart (refusal; retry), an ordinary notebook error raised (traceback in the log, exit 1)."""
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from ..provenance import LockedError

    name = run["name"]
    try:
        seconds = _execute(run, repo, spec, lock_wait)
    except LockedError as err:
        print(f"[reproduce] {name}: refused: {err}", flush=True)
        return EXIT_LOCKED
    except DeadKernelError:
        print(f"[reproduce] {name}: the notebook's kernel died (killed?); its committed units are kept",
              flush=True)
        return EXIT_WORKER_DIED
    except PapermillExecutionError as err:
        if err.ename == "LockedError":  # the notebook's own writer lock (e.g. the grid CSV) is held
            print(f"[reproduce] {name}: refused: {err.evalue}", flush=True)
            return EXIT_LOCKED
        if err.ename in _DIED_IN_NOTEBOOK:
            print(f"[reproduce] {name}: a worker process of the notebook died ({err.ename}: {err.evalue}); its "
                  "committed units are kept", flush=True)
            return EXIT_WORKER_DIED
        raise
    print(f"[reproduce] {name} finished in {seconds:.0f} s", flush=True)
    return 0
