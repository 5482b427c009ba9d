"""Parallel full-size runs: a retrieval grid with its (M, seed) groups in N worker processes against the same
grid run sequentially, and the per-task overhead of a Dask ``LocalCluster``.

* ``grid``: :func:`uhop.experiments.retrieval.run_grid` on the MNIST paper-protocol capacity grid (the methods
  and sizes of Table 4 at one Stage-I checkpoint) with ``jobs=1`` and ``jobs=N``; reported: both wall times, their
  ratio, and whether the two CSVs hold identical rows (timing columns aside).
* ``dask``: a ``LocalCluster`` of N single-thread workers runs trivial tasks; reported: the wall time per task
  (scheduling and transfer overhead) and the cluster's start-up time.

Usage::

    python benchmarks/bench_parallel.py [--quick] [--jobs 2] [--json PATH]

``--quick`` uses the synthetic data set and two small sizes (seconds).  Run it on an otherwise idle machine:
the ratio measures how well N workers use N cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from uhop.experiments.retrieval import GridConfig, run_grid
from uhop.provenance import atomic_write_text, write_manifest

METHODS = ["mhm", "sparse_mhm", "uhop_mhm", "uhop_sparse_mhm", "dam", "dam_official", "l2", "l2_official",
           "manhattan", "manhattan_official"]


def grid_case(quick: bool, jobs: int) -> dict:
    if quick:
        cfg = GridConfig(experiment="bench", dataset="synthetic", protocol="paper", methods=["mhm", "uhop_mhm"],
                         sizes=[6, 10], epochs=[3], noise=[0.5], seeds=[0, 1])
    else:
        cfg = GridConfig(experiment="bench", dataset="mnist", protocol="paper", methods=METHODS,
                         sizes=[10, 20, 30, 50, 100, 200, 500], epochs=[100], noise=[0.5], seeds=list(range(4)))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = {}
        for n in (1, jobs):
            t0 = time.perf_counter()
            frames[n] = run_grid(cfg, Path(tmp) / f"jobs{n}.csv", progress=False, threads=1, jobs=n)
            out[f"wall_s_jobs{n}"] = round(time.perf_counter() - t0, 2)
        timing = [c for c in frames[1].columns if c.endswith("_s")]
        out["identical_rows"] = bool(frames[1].drop(columns=timing).equals(frames[jobs].drop(columns=timing)))
    out["ratio"] = round(out[f"wall_s_jobs{jobs}"] / out["wall_s_jobs1"], 3)
    out["groups"] = len(cfg.groups())
    out["grid"] = cfg.to_dict()
    return out


def _noop(i: int) -> int:
    return i


def dask_case(jobs: int, tasks: int) -> dict:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    started = time.perf_counter() - t0
    try:
        client.gather(client.map(_noop, range(jobs), pure=False))  # warm the workers
        t0 = time.perf_counter()
        client.gather(client.map(_noop, range(tasks), pure=False))
        per_task = (time.perf_counter() - t0) / tasks
    finally:
        client.close()
        cluster.close()
    return {"workers": jobs, "tasks": tasks, "start_s": round(started, 2), "overhead_ms_per_task": round(1e3 * per_task, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, small grid (for the test suite)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--json", default=None, help="write results (and PATH.manifest.json) here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = {"jobs": args.jobs, "quick": args.quick, "grid": grid_case(args.quick, args.jobs),
              "dask": dask_case(args.jobs, 20 if args.quick else 200)}
    g = result["grid"]
    print(f"grid: {g['groups']} groups, {g['wall_s_jobs1']} s with 1 job, {g[f'wall_s_jobs{args.jobs}']} s with "
          f"{args.jobs} (ratio {g['ratio']}), identical rows: {g['identical_rows']}")
    print(f"dask LocalCluster: start {result['dask']['start_s']} s, {result['dask']['overhead_ms_per_task']} ms per task")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        write_manifest(args.json + ".manifest.json", command=" ".join([sys.executable, *sys.argv]),
                       parameters={"jobs": args.jobs, "quick": args.quick}, wall_time_s=time.perf_counter() - start,
                       device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
