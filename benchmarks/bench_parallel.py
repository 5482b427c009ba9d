"""Parallel full-size runs: the MNIST paper-protocol capacity grid with its (M, seed) groups in N worker processes
against the same grid run sequentially, and what a Dask ``LocalCluster`` and a ``reproduce`` unit cost per unit.

* ``grid``: :func:`uhop.experiments.retrieval.run_grid` on the grid of the committed
  ``results/retrieval/capacity/mnist_paper.csv`` (its configuration is read from the ``.config.json`` beside it and
  its fingerprint checked, so the benchmark times exactly the grid the book shows: Table 4's methods and sizes,
  N = 0..1000, 20 seeds) with ``jobs=1`` and ``jobs=N``.  Reported: both wall times, their ratio (the issue's
  target: <= 0.6 with 2 workers on 2 cores), whether the two CSVs hold identical rows (timing columns aside), and
  whether they equal the committed CSV's rows (else the largest relative difference).
* ``dask``: a ``LocalCluster`` of N single-thread workers; reported: its start-up time, the round trip of one
  trivial task submitted alone (the scheduler overhead a unit pays), and the wall time per task of many at once.
* ``unit``: the fixed cost of one ``reproduce`` unit, the same in all three ways -- a child process that runs a
  notebook with one empty cell through papermill (interpreter, imports, kernel start).

Usage::

    python benchmarks/bench_parallel.py [--quick] [--jobs 2] [--seeds K] [--json PATH]

``--quick`` uses the synthetic data set and a small grid (about a minute with the kernel starts).  The full run
takes about 40 min on 2 idle cores: the sequential grid about 23 min (one seed's 7 groups about 70 s, the
M = 500 group 55 s of it), the parallel one about 13 min, the Dask and unit cases a minute.  ``--seeds K``
times the first K seeds of the grid only (its rows are then compared on those seeds).  Run the full measurement
on an otherwise idle machine: the ratio measures how well N workers use N cores; the load average at the start
and the end is recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from uhop.experiments.retrieval import GridConfig, run_grid
from uhop.provenance import atomic_write_text, write_manifest

REPO = Path(__file__).resolve().parents[1]
PAPER_GRID = REPO / "results" / "retrieval" / "capacity" / "mnist_paper.csv"
TIMING = ["stage1_s", "wall_s"]  # wall clocks differ from run to run


def paper_grid(seeds: int | None) -> tuple[GridConfig, pd.DataFrame | None]:
    """The committed MNIST paper-protocol grid's configuration (fingerprint checked) and its rows."""
    stored = json.loads(Path(f"{PAPER_GRID}.config.json").read_text())
    cfg = GridConfig.from_dict(stored["config"])
    if cfg.fingerprint() != stored["fingerprint"]:
        raise SystemExit(f"{PAPER_GRID}.config.json no longer gives its fingerprint with this code "
                         f"({cfg.fingerprint()} != {stored['fingerprint']}): regenerate the grid first")
    committed = pd.read_csv(PAPER_GRID) if PAPER_GRID.exists() else None
    if seeds is not None:
        cfg = GridConfig.from_dict({**cfg.to_dict(), "seeds": cfg.seeds[:seeds]})
    return cfg, committed


def grid_case(quick: bool, jobs: int, seeds: int | None) -> dict:
    if quick:
        cfg = GridConfig(experiment="bench", dataset="synthetic", protocol="paper", methods=["mhm", "uhop_mhm"],
                         sizes=[100, 150], epochs=[200], noise=[0.5], seeds=[0, 1])
        committed = None
    else:
        cfg, committed = paper_grid(seeds)
    out = {"groups": len(cfg.groups()), "grid": cfg.to_dict()}
    with tempfile.TemporaryDirectory() as tmp:
        frames = {}
        for n in (1, jobs):
            t0 = time.perf_counter()
            frames[n] = run_grid(cfg, Path(tmp) / f"jobs{n}.csv", progress=False, threads=1, jobs=n,
                                 command=f"benchmarks/bench_parallel.py (jobs={n})").drop(columns=TIMING)
            out[f"wall_s_jobs{n}"] = round(time.perf_counter() - t0, 2)
            print(f"grid with jobs={n}: {out[f'wall_s_jobs{n}']} s", flush=True)
    out["identical_rows"] = bool(frames[1].equals(frames[jobs]))
    out["ratio"] = round(out[f"wall_s_jobs{jobs}"] / out["wall_s_jobs1"], 3)
    out["seconds_per_group_jobs1"] = round(out["wall_s_jobs1"] / out["groups"], 3)
    if committed is not None:
        rows = committed[committed["seed"].isin(cfg.seeds)].drop(columns=TIMING).reset_index(drop=True)
        out["matches_committed_rows"] = bool(rows.equals(frames[1]))
        if rows.shape == frames[1].shape and not out["matches_committed_rows"]:
            # how far this code is from the committed numbers (a float summation order changed, say)
            num = frames[1].select_dtypes("number").columns
            a, b = frames[1][num].to_numpy(float), rows[num].to_numpy(float)
            both = ~(np.isnan(a) & np.isnan(b))
            rel = np.abs(a - b)[both] / np.maximum(np.abs(b)[both], 1e-300)
            out["committed_max_rel_diff"] = float(np.nanmax(rel, initial=0.0)) if rel.size else 0.0
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
        trips = []
        for i in range(tasks):  # one at a time: what a unit waits for the scheduler
            t0 = time.perf_counter()
            client.submit(_noop, i, pure=False).result()
            trips.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.gather(client.map(_noop, range(tasks), pure=False))
        per_task = (time.perf_counter() - t0) / tasks
    finally:
        client.close()
        cluster.close()
    return {"workers": jobs, "tasks": tasks, "start_s": round(started, 2),
            "roundtrip_ms_median": round(1e3 * statistics.median(trips), 3),
            "roundtrip_ms_max": round(1e3 * max(trips), 3), "throughput_ms_per_task": round(1e3 * per_task, 3)}


_EMPTY_NOTEBOOK = """\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
x: int = 0  # nothing

# %%
x + 1
"""


def unit_case(repeats: int) -> dict:
    """A notebook with one trivial cell as a ``reproduce`` unit: the start-up every run pays, whichever way."""
    import yaml

    from uhop.reproduce.unit import run_unit

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "empty.py").write_text(_EMPTY_NOTEBOOK)
        spec = Path(tmp) / "runs.yml"
        name = f"bench_unit_{os.getpid()}"
        spec.write_text(yaml.safe_dump({"runs": [{"name": name, "notebook": "empty.py", "parameters": {"x": 1}}]}))
        seconds = []
        for _ in range(repeats):
            result = run_unit(name, str(spec), str(REPO), session="")
            if result["returncode"] != 0:
                raise SystemExit(f"the empty notebook failed: {result['reason']}, see {result['log']}")
            seconds.append(result["seconds"])
    return {"repeats": repeats, "unit_startup_s_median": round(statistics.median(seconds), 2),
            "unit_startup_s": [round(s, 2) for s in seconds]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, small grid (for the test suite)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--seeds", type=int, default=None, help="time the first K seeds of the grid only")
    parser.add_argument("--json", default=None, help="write results (and PATH.manifest.json) here")
    args = parser.parse_args(argv)
    if args.jobs < 2:
        parser.error("--jobs must be >= 2 (it is compared with a sequential run)")
    start = time.perf_counter()
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    if load["start"][0] > 0.5 and not args.quick:
        print(f"warning: load average {load['start']} -- the machine is not idle; the ratio will show it",
              flush=True)
    result = {"jobs": args.jobs, "quick": args.quick, "cpu_count": os.cpu_count(),
              "grid": grid_case(args.quick, args.jobs, args.seeds),
              "dask": dask_case(args.jobs, 20 if args.quick else 200),
              "unit": unit_case(1 if args.quick else 3)}
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    result["load_average"] = load
    g, d = result["grid"], result["dask"]
    print(f"grid: {g['groups']} groups, {g['wall_s_jobs1']} s with 1 job, {g[f'wall_s_jobs{args.jobs}']} s with "
          f"{args.jobs} (ratio {g['ratio']}), identical rows: {g['identical_rows']}"
          + (f", equal to the committed rows: {g['matches_committed_rows']}" if "matches_committed_rows" in g else ""))
    print(f"dask LocalCluster: start {d['start_s']} s, round trip {d['roundtrip_ms_median']} ms per task alone, "
          f"{d['throughput_ms_per_task']} ms per task in bulk")
    print(f"reproduce unit start-up: {result['unit']['unit_startup_s_median']} s; load average {load}")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        write_manifest(args.json + ".manifest.json", command=" ".join([sys.executable, *sys.argv]),
                       parameters={"jobs": args.jobs, "quick": args.quick, "seeds": args.seeds},
                       wall_time_s=time.perf_counter() - start, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
