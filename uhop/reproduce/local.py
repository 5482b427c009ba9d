"""Runs in a local pool (``--jobs N``, also the sequential default): each run a child process on this
machine, ``N`` at a time, a GPU per worker slot when GPUs are visible."""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .progress import Progress
from .unit import run_unit


def _gpus() -> list[str]:
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover
        return []


def run_local(runs: list[dict], jobs: int, spec: Path, repo: Path, *, retries: int = 2, session: str = "",
              progress_every: float = 60.0) -> list[dict]:
    """Every run as a child process, ``jobs`` at a time; GPUs (if any) assigned round-robin by worker slot."""
    gpus = _gpus()
    progress = Progress(runs, jobs, repo)
    slots: queue.Queue = queue.Queue()
    for i in range(jobs):
        slots.put(i)
    labels = [f"worker {i + 1}" + (f" (GPU {gpus[i % len(gpus)]})" if gpus else "") for i in range(jobs)]

    def task(run):
        slot = slots.get()
        try:
            progress.started(run["name"], labels[slot])
            return run_unit(run["name"], str(spec), str(repo), gpus[slot % len(gpus)] if gpus else None,
                             retries, session, progress.retrying)
        finally:
            slots.put(slot)

    results = []
    stop = progress.every(progress_every, labels)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for fut in as_completed([pool.submit(task, run) for run in runs]):
                result = fut.result()
                progress.finished(result)
                results.append(result)
    finally:
        stop.set()
    return results
