"""The grid runner: every cell of a :class:`GridConfig` into a CSV, with its configuration and a manifest;
resumable, one writer per file, optionally several groups at a time in worker processes."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..._checks import check_int
from ...provenance import atomic_write_text, write_manifest, writer_lock
from .config import GridConfig
from .evaluation import evaluate_group
from .memories import ImagePool, data_note
from .registry import COLUMNS, PROTOCOLS, ConfigMismatchError

__all__ = ["run_grid", "read_results"]


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_fmt(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def _parse_key(row: dict) -> tuple:
    n = row["N"]
    return (row["method"], int(row["M"]), None if n in ("", None) else int(float(n)), float(row["noise"]),
            int(row["seed"]), row["loss"] or "")


def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ConfigMismatchError(f"{path} does not have the columns of this version of the runner; delete it "
                                      f"(and its .config.json / .manifest.json) to start fresh, or pick another output")
        return list(reader)


def _sidecars(path: Path) -> tuple[Path, Path]:
    return Path(f"{path}.config.json"), Path(f"{path}.manifest.json")


def _check_config(path: Path, cfg: GridConfig) -> None:
    conf_path, _ = _sidecars(path)
    fp = cfg.fingerprint()
    if not path.exists():
        return
    if not conf_path.exists():
        raise ConfigMismatchError(
            f"{path} exists but has no {conf_path.name}, so its configuration is unknown and it will not be "
            f"overwritten. Delete {path} to start fresh, or pick another output path.")
    stored = json.loads(conf_path.read_text())
    if stored.get("fingerprint") != fp:
        old = stored.get("config", {})
        new = cfg.to_dict()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
        raise ConfigMismatchError(
            f"{path} was produced by a different configuration (fingerprint {stored.get('fingerprint')} != {fp}; "
            f"{detail}). Refusing to mix or overwrite results: delete {path} and its {conf_path.name} / "
            f".manifest.json to start fresh, or pick another output path.")


def read_results(path) -> "object":
    """A results CSV as a pandas DataFrame (N empty for baselines -> NaN)."""
    import pandas as pd

    return pd.read_csv(path)


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is in the book extra; the runner works without it
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="group", file=sys.stderr)


def run_grid(config: GridConfig | dict, output, *, device: str = "cpu", threads: int | None = None,
             resume: bool = True, progress: bool = True, command: str | None = None,
             max_groups: int | None = None, callback: Callable[[int, int], None] | None = None, jobs: int = 1):
    """Run every cell of ``config``, one CSV row per cell, and return the results as a DataFrame.

    Args:
        config: a :class:`GridConfig` (or a dict of its fields).
        output: the CSV path, e.g. ``results/retrieval/capacity/mnist_paper.csv``.  Beside it:
            ``<output>.config.json`` (configuration and its fingerprint) and
            ``<output>.manifest.json`` (command, parameters, version, git commit, date, machine,
            wall time; :func:`uhop.provenance.write_manifest`).
        device: torch device of the computation.
        threads: ``torch.set_num_threads(threads)`` for the run (None: leave it).  On a shared
            2-core machine 1 thread is several times faster than oversubscribed threads.
        resume: skip the cells already in ``output``.  A file written by a different
            configuration raises :class:`ConfigMismatchError` (never overwritten silently).
        progress: a tqdm bar over the groups (M, seed).
        command: the command recorded in the manifest (default: ``sys.argv``).
        max_groups: compute at most this many groups, then return (the rest on a later call).
        callback: called as ``callback(groups_done, groups_total)`` after each group is saved.
        jobs: groups (M, seed) computed at a time, each in its own process with one torch thread; this
            process stays the only writer of the CSV.  Every group seeds itself, and the rows are written in
            the sequential order, so the CSV equals a ``jobs=1`` run's (tested).

    The CSV is rewritten atomically (temporary file + rename) after each group, so an interrupted
    run loses at most the group in progress; running again resumes.
    """
    cfg = config if isinstance(config, GridConfig) else GridConfig.from_dict(dict(config))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one writer per CSV for the whole run: a second run_grid on the same output (same or other settings) is
    # refused instead of mixing its rows into this one's
    with writer_lock(path, what="retrieval grid CSV"):
        return _run_grid(cfg, path, device=device, threads=threads, resume=resume, progress=progress,
                         command=command, max_groups=max_groups, callback=callback,
                         jobs=check_int(jobs, "jobs", minimum=1))


def _group_in_worker(cfg_dict: dict, M: int, seed: int, todo: set, device: str) -> list[dict]:
    """One group in a worker process (one torch thread; the data pool is loaded once per worker)."""
    global _WORKER_POOL
    torch.set_num_threads(1)
    cfg = GridConfig.from_dict(cfg_dict)
    if _WORKER_POOL is None or _WORKER_POOL.key != (cfg.dataset, cfg.variant, cfg.split):
        _WORKER_POOL = ImagePool(cfg.dataset, cfg.variant, cfg.split)
    return evaluate_group(cfg, M, seed, todo=todo, device=device, pool=_WORKER_POOL)


_WORKER_POOL = None


def _run_grid(cfg, path, *, device, threads, resume, progress, command, max_groups, callback, jobs=1):
    conf_path, manifest_path = _sidecars(path)
    _check_config(path, cfg)
    if path.exists() and not resume:
        raise ConfigMismatchError(f"{path} exists and resume=False: delete it (and its .config.json / "
                                  f".manifest.json) to start fresh, or pick another output path")
    rows = _read_rows(path) if path.exists() else []
    done = {_parse_key(r) for r in rows}
    previous = {}
    if manifest_path.exists():
        try:
            previous = json.loads(manifest_path.read_text())
        except ValueError:
            previous = {}
    prior_total = float(previous.get("wall_time_total_s") or 0.0) if rows else 0.0
    if threads is not None:
        torch.set_num_threads(int(threads))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(conf_path, json.dumps({"fingerprint": cfg.fingerprint(), "config": cfg.to_dict()},
                                            indent=2, sort_keys=True) + "\n")
    pool = ImagePool(cfg.dataset, cfg.variant, cfg.split)
    data_before = (previous.get("data") or {}).get("variant") if rows else None
    if data_before is not None and data_before != pool.variant:
        raise ConfigMismatchError(f"{path} holds rows computed on the {data_before!r} copy of {cfg.dataset}, but this "
                                  f"run resolves the {pool.variant!r} copy: rows from two data variants would mix; "
                                  "pin variant= in the config or use another output path")
    for M in cfg.sizes:
        pool.check_size(M, held_out=PROTOCOLS[cfg.protocol].tune_beta)

    groups = cfg.groups()
    todo_of = {g: {k for k in cfg.cells(*g) if k not in done} for g in groups}
    pending = [g for g in groups if todo_of[g]]
    n_done = len(groups) - len(pending)
    bar = _progress(len(groups), n_done, progress, f"{cfg.experiment}/{cfg.dataset}/{cfg.protocol}")
    start = time.perf_counter()
    new_rows = 0

    def save_manifest():
        wall = time.perf_counter() - start
        write_manifest(
            manifest_path,
            command=command or " ".join(sys.argv),
            parameters=cfg.to_dict(),
            wall_time_s=wall,
            device=device,
            extra=dict(
                fingerprint=cfg.fingerprint(), rows=len(rows), groups_total=len(groups),
                groups_done=len(groups) - len(pending), complete=not pending,
                wall_time_total_s=round(prior_total + wall, 3), threads=torch.get_num_threads(),
                data=dict(dataset=cfg.dataset, variant=pool.variant, exact=pool.exact, split=cfg.split,
                          note=data_note(cfg.dataset, pool.variant, pool.exact)),
                output=str(path),
            ),
        )

    order = {g: i for i, g in enumerate(groups)}

    def finish(g, new):
        nonlocal new_rows
        rows.extend({c: r.get(c) for c in COLUMNS} for r in new)
        # rows in the order of a sequential run, whatever order the groups finished in: a stable sort by group
        # (key = (method, M, N, noise, seed, loss); group = (M, seed)) keeps each group's own row order
        rows.sort(key=lambda r: order.get((int(r["M"]), int(r["seed"])), -1))
        new_rows += len(new)
        atomic_write_text(path, _to_csv(rows))
        pending.remove(g)
        if bar is not None:
            bar.update(1)
        save_manifest()
        if callback is not None:
            callback(len(groups) - len(pending), len(groups))

    chosen = pending[:max_groups] if max_groups is not None else list(pending)
    try:
        if jobs == 1 or len(chosen) < 2:
            for g in chosen:
                finish(g, evaluate_group(cfg, g[0], g[1], todo=todo_of[g], device=device, pool=pool))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
                futures = {ex.submit(_group_in_worker, cfg.to_dict(), g[0], g[1], todo_of[g], device): g
                           for g in chosen}
                for fut in as_completed(futures):
                    finish(futures[fut], fut.result())
    finally:
        if bar is not None:
            bar.close()
    if not path.exists():  # nothing to do and no file yet (empty grid cannot happen, but be safe)
        atomic_write_text(path, _to_csv(rows))
    if new_rows == 0 and not manifest_path.exists():
        save_manifest()
    return read_results(path)
