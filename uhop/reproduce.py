"""Run the full-size experiments: ``python -m uhop.reproduce run`` (what ``make results`` calls).

The runs are listed in ``notebooks/full_size.yml`` of the repository: each names an experiment notebook and the
papermill parameters of its full-size configuration; the notebook writes its results and manifests under
``results/``.  Three ways to run them:

* **sequentially** (default, ``--jobs 1``): one run after another in this process's machine;
* **a local pool** (``--jobs N``): N runs at a time, each in its own process with one torch thread
  (``OMP_NUM_THREADS=1``) and, when GPUs are visible, its own GPU (``CUDA_VISIBLE_DEVICES``);
* **a Dask cluster** (``--scheduler tcp://host:8786``, or ``--scheduler local:N`` for a
  ``distributed.LocalCluster`` of N workers on this machine, or ``--cluster-config FILE`` for a
  ``dask-jobqueue`` Slurm/PBS cluster): every run is one task; the workers need this checkout at the same
  path (a shared file system) and the ``cluster`` extra.  A task whose worker dies is retried once.

Each run is one unit of work: a child process ``python -m uhop.reproduce run --only NAME --in-process``
whose output goes to ``_build/reproduce/logs/NAME.log``.  A run holds an exclusive lock
(``_build/reproduce/locks/NAME.lock``) while it executes, so a second ``reproduce`` process asked for the same
run refuses instead of writing into the same files.  The runs write their results through the notebooks'
own resumable writers (atomic files per finished unit, configuration fingerprints checked before writing), so a
run interrupted on any path resumes from what it had committed.  Which unit of a grid runs where never
changes a number: every unit seeds itself, so results equal a sequential run's (tested).

This module needs the ``book`` extra (jupytext, papermill, PyYAML) and a checkout of the repository.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

__all__ = ["load_runs", "estimate_seconds", "run_status", "main"]


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def load_runs(spec: Path | None = None) -> list[dict]:
    """The list of full-size runs declared in ``notebooks/full_size.yml`` (or ``spec``)."""
    import yaml

    spec = Path(spec) if spec else _repo() / "notebooks" / "full_size.yml"
    if not spec.exists():
        raise FileNotFoundError(f"{spec} not found: run from a checkout of the repository")
    runs = (yaml.safe_load(spec.read_text()) or {}).get("runs") or []
    names = set()
    for run in runs:
        for key in ("name", "notebook"):
            if key not in run:
                raise ValueError(f"{spec}: a run lacks the key {key!r}: {run}")
        if run["name"] in names:
            raise ValueError(f"{spec}: the run name {run['name']!r} appears twice")
        names.add(run["name"])
    return runs


_UNITS = {"s": 1, "sec": 1, "min": 60, "h": 3600, "hour": 3600, "hours": 3600}


def estimate_seconds(text: str | None) -> float | None:
    """Seconds in a human estimate such as ``"about 2 min"``, ``"5 h of one core"`` or ``"1.5 hours"`` (the first
    number and unit); ``None`` when there is none."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*(hours|hour|h|min|sec|s)\b", str(text or ""))
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def run_status(run: dict) -> str:
    """``"done"``, ``"partial k/n"`` or ``"missing"``, from the run's outputs as they are on disk."""
    from .experiments.notebook import notebook_path

    params = run.get("parameters") or {}
    try:
        if run["notebook"] == "forecasting" and params.get("out_dir"):
            from .experiments.forecasting import tier_status

            done, pending = tier_status(run["name"], notebook_path(params["out_dir"]), exact=True)
        elif run["notebook"] == "classification" and params.get("output_dir"):
            from .experiments.classification import tier_status

            done, pending = tier_status(run["name"], notebook_path(params["output_dir"]))
        elif params.get("output"):
            out = notebook_path(params["output"])
            manifest = Path(f"{out}.manifest.json")
            return "done" if out.exists() and manifest.exists() else "partial" if out.exists() else "missing"
        else:
            return "?"
    except Exception as err:  # a status line must never stop a listing
        return f"? ({type(err).__name__})"
    if not pending:
        return "done"
    return f"partial {len(done)}/{len(done) + len(pending)}" if done else "missing"


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _table(runs: list[dict]) -> str:
    rows = [("name", "notebook", "estimate", "output", "status")]
    total = 0.0
    for run in runs:
        params = run.get("parameters") or {}
        out = params.get("output") or params.get("out_dir") or params.get("output_dir") or "-"
        est = estimate_seconds(run.get("estimate"))
        total += est or 0.0
        rows.append((run["name"], run["notebook"], _format_duration(est), str(out).replace("../", ""),
                     run_status(run)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(runs)} runs, estimated {_format_duration(total)} in all when run one after another")
    return "\n".join(lines)


# -- executing one run ------------------------------------------------------------------------------------------


def _run_lock(name: str, repo: Path):
    """Exclusive lock for one run (:func:`uhop.provenance.writer_lock`): a second holder gets a clear error."""
    from .provenance import writer_lock

    return writer_lock(repo / "_build" / "reproduce" / "locks" / name, what=f"run {name!r}")


def _execute(run: dict, repo: Path) -> float:
    """Execute one run's notebook with papermill in this process (under the run's lock)."""
    import jupytext
    import papermill as pm

    source = repo / "notebooks" / f"{run['notebook']}.py"
    out = repo / "_build" / "papermill" / "full" / f"{run['name']}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _run_lock(run["name"], repo):
        pm.execute_notebook(jupytext.read(source), str(out), parameters=run.get("parameters") or {},
                            cwd=str(source.parent), kernel_name="python3", progress_bar=False, log_output=True)
    return time.perf_counter() - start


def _unit_command(name: str, spec: Path) -> list[str]:
    return [sys.executable, "-m", "uhop.reproduce", "run", "--only", name, "--spec", str(spec), "--in-process"]


def _child_env(gpu: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def _run_unit(name: str, spec: str, repo: str, gpu: str | None = None) -> dict:
    """One run in a child process, its output in ``_build/reproduce/logs/NAME.log``; returns what happened.
    Module-level so that Dask can ship it to a worker."""
    log = Path(repo) / "_build" / "reproduce" / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(_unit_command(name, Path(spec)), cwd=repo, stdout=fh, stderr=subprocess.STDOUT,
                            env=_child_env(gpu)).returncode
    return {"name": name, "returncode": rc, "seconds": time.perf_counter() - start, "log": str(log),
            "host": os.uname().nodename}


def _gpus() -> list[str]:
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover
        return []


class _Progress:
    """One overall line per finished run: done / total, elapsed, remaining from the measured pace."""

    def __init__(self, runs: list[dict]):
        self.total = len(runs)
        self.estimates = {r["name"]: estimate_seconds(r.get("estimate")) for r in runs}
        self.start = time.perf_counter()
        self.done: list[dict] = []

    def finished(self, result: dict) -> None:
        self.done.append(result)
        elapsed = time.perf_counter() - self.start
        left = [n for n in self.estimates if n not in {d["name"] for d in self.done}]
        est_done = sum(self.estimates[d["name"]] or d["seconds"] for d in self.done)
        pace = elapsed / est_done if est_done else 1.0  # measured wall time per estimated second
        remaining = pace * sum(self.estimates[n] or 0.0 for n in left)
        state = "ok" if result["returncode"] == 0 else f"FAILED (exit {result['returncode']}, see {result['log']})"
        print(f"[reproduce] {len(self.done)}/{self.total} {result['name']}: {state} in "
              f"{_format_duration(result['seconds'])} on {result['host']} | elapsed {_format_duration(elapsed)}, "
              f"about {_format_duration(remaining)} left", flush=True)


def run_local(runs: list[dict], jobs: int, spec: Path, repo: Path) -> list[dict]:
    """Every run as a child process, ``jobs`` at a time; GPUs (if any) assigned round-robin by worker slot."""
    gpus = _gpus()
    progress = _Progress(runs)
    results = []
    slots = list(range(jobs))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for i, run in enumerate(runs):
            gpu = gpus[slots[i % jobs] % len(gpus)] if gpus else None
            futures[pool.submit(_run_unit, run["name"], str(spec), str(repo), gpu)] = run["name"]
        for fut in as_completed(futures):
            result = fut.result()
            progress.finished(result)
            results.append(result)
    return results


def _dask_client(scheduler: str | None, cluster_config: str | None):
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover
        raise SystemExit("--scheduler needs Dask distributed: pip install 'uhop[cluster]'") from err
    if cluster_config:
        import yaml

        cfg = yaml.safe_load(Path(cluster_config).read_text())
        kind = cfg.pop("kind", "slurm")
        jobs = int(cfg.pop("jobs", 1))
        try:
            import dask_jobqueue
        except ImportError as err:  # pragma: no cover
            raise SystemExit("--cluster-config needs dask-jobqueue: pip install dask-jobqueue") from err
        cluster = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind](**cfg)
        cluster.scale(jobs=jobs)
        return Client(cluster), cluster
    if scheduler.startswith("local:"):
        cluster = LocalCluster(n_workers=int(scheduler.split(":", 1)[1]), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="15s"), None
    except (OSError, TimeoutError) as err:
        raise SystemExit(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None


def run_dask(runs: list[dict], spec: Path, repo: Path, scheduler: str | None, cluster_config: str | None = None
             ) -> list[dict]:
    """Every run as one Dask task (retried once if its worker dies)."""
    from distributed import as_completed as dask_completed

    client, cluster = _dask_client(scheduler, cluster_config)
    progress = _Progress(runs)
    results = []
    try:
        futures = [client.submit(_run_unit, r["name"], str(spec), str(repo), None, key=f"uhop-run-{r['name']}",
                                 pure=False, retries=1) for r in runs]
        for fut in dask_completed(futures):
            result = fut.result()
            progress.finished(result)
            results.append(result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uhop.reproduce", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute the full-size runs (sequentially, in a local pool or on Dask)")
    run_p.add_argument("--list", action="store_true", help="a table of the runs (estimate, output, status); run nothing")
    run_p.add_argument("--dry-run", action="store_true", help="print the plan and the commands; run nothing")
    run_p.add_argument("--only", action="append", default=[], metavar="NAME", help="run only NAME (repeatable)")
    run_p.add_argument("--jobs", type=int, default=1, help="runs at a time on this machine (default 1)")
    run_p.add_argument("--scheduler", default=None,
                       help="Dask scheduler address (tcp://host:8786), or local:N for a LocalCluster of N workers")
    run_p.add_argument("--cluster-config", default=None, help="YAML for a dask-jobqueue cluster (kind: slurm|pbs, "
                                                               "jobs: N, and the cluster's keyword arguments)")
    run_p.add_argument("--spec", default=None, help="the runs file (default notebooks/full_size.yml)")
    run_p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # one unit, in this process
    args = parser.parse_args(argv)

    repo = _repo()
    spec = Path(args.spec).resolve() if args.spec else repo / "notebooks" / "full_size.yml"
    runs = load_runs(spec)
    if args.only:
        unknown = sorted(set(args.only) - {r["name"] for r in runs})
        if unknown:
            parser.error(f"unknown run name(s) {unknown}; `python -m uhop.reproduce run --list` shows the "
                         f"{len(runs)} known runs")
        runs = [r for r in runs if r["name"] in args.only]
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if not runs:
        print(f"[reproduce] {spec} lists no runs; nothing to do.")
        return 0
    if args.list:
        print(_table(runs))
        return 0
    if args.in_process:
        for run in runs:
            print(f"[reproduce] {run['name']}: executing notebooks/{run['notebook']}.py", flush=True)
            print(f"[reproduce] {run['name']} finished in {_execute(run, repo):.0f} s", flush=True)
        return 0
    where = (f"Dask ({args.scheduler or args.cluster_config})" if args.scheduler or args.cluster_config
             else f"{args.jobs} local worker(s)")
    print(f"[reproduce] {len(runs)} run(s) on {where}; logs in {repo / '_build' / 'reproduce' / 'logs'}", flush=True)
    for run in runs:
        params = " ".join(f"-p {k} {shlex.quote(str(v))}" for k, v in (run.get("parameters") or {}).items())
        print(f"[reproduce]   {run['name']} (estimate: {run.get('estimate', '?')}): notebooks/{run['notebook']}.py "
              f"through papermill with {params}", flush=True)
    if args.dry_run:
        return 0
    if args.scheduler or args.cluster_config:
        results = run_dask(runs, spec, repo, args.scheduler, args.cluster_config)
    else:
        results = run_local(runs, args.jobs, spec, repo)
    failed = [r["name"] for r in results if r["returncode"] != 0]
    if failed:
        print(f"[reproduce] {len(failed)} run(s) failed: {failed}; their logs are named above", flush=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
