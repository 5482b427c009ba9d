"""The command line ``python -m uhop.reproduce run``: the options, the checks of its arguments, the plan it
prints, the refusal when another process holds one of the runs, and the final summary."""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
import time
from pathlib import Path

from . import __doc__ as package_doc
from .cluster import run_dask
from .execute import EXIT_LOCKED, execute_reporting, lock_path
from .local import run_local
from .runs import format_duration, load_runs, notebook_source, repo_root, status_table


def _summary(results: list[dict], elapsed: float) -> list[str]:
    ok = [r for r in results if r["returncode"] == 0]
    lines = [f"finished in {format_duration(elapsed)}: {len(ok)} run(s) ok, {len(results) - len(ok)} failed"]
    for r in results:
        tries = r.get("attempts") or []
        if r["returncode"] == 0 and len(tries) <= 1:
            continue
        history = "; ".join(f"attempt {a['attempt']}: {a['reason']}" for a in tries[:-1] if a["returncode"] != 0)
        state = "ok" if r["returncode"] == 0 else f"FAILED: {r['reason']}, log {r['log']}"
        lines.append(f"  {r['name']}: {state}" + (f" (after {history}; resumed from its committed units)"
                                                    if history else ""))
    return lines


def _unknown_names(unknown: list[str], known: list[str]) -> str:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        parts.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    listing = ", ".join(known) if len(known) <= 40 else ", ".join(known[:40]) + ", ..."
    return f"unknown run name(s) {'; '.join(parts)}. Known runs: {listing}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uhop.reproduce", description=package_doc.split("\n\n")[0])
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
    run_p.add_argument("--connect-timeout", type=float, default=10.0,
                       help="seconds to wait for the Dask scheduler before giving up (default 10)")
    run_p.add_argument("--retries", type=int, default=2,
                       help="times a run whose worker died is started again, resuming (default 2)")
    run_p.add_argument("--progress-every", type=float, default=60.0,
                       help="seconds between progress snapshots (overall line and one line per worker; default 60)")
    run_p.add_argument("--spec", default=None, help="the runs file (default notebooks/full_size.yml)")
    run_p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # one unit, in this process
    run_p.add_argument("--lock-wait", type=float, default=0.0, help=argparse.SUPPRESS)  # a retry waits for the lock
    args = parser.parse_args(argv)

    repo = repo_root()
    spec = Path(args.spec).resolve() if args.spec else repo / "notebooks" / "full_size.yml"
    runs = load_runs(spec)
    if args.only:
        unknown = [n for n in dict.fromkeys(args.only) if n not in {r["name"] for r in runs}]
        if unknown:
            parser.error(_unknown_names(unknown, [r["name"] for r in runs]))
        runs = [r for r in runs if r["name"] in args.only]
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.retries < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    if args.progress_every <= 0 or args.connect_timeout <= 0:
        parser.error("--progress-every and --connect-timeout must be > 0")
    missing = [f"{r['name']}: {notebook_source(r, spec)}" for r in runs if not notebook_source(r, spec).exists()]
    if missing:
        parser.error("notebook(s) not found: " + "; ".join(missing))
    if not runs:
        print(f"[reproduce] {spec} lists no runs; nothing to do.")
        return 0
    if args.list:
        print(status_table(runs))
        return 0
    if args.in_process:
        for run in runs:
            print(f"[reproduce] {run['name']}: executing {notebook_source(run, spec)}", flush=True)
            rc = execute_reporting(run, repo, spec, args.lock_wait)
            if rc:
                return rc
        return 0
    where = (f"Dask ({args.scheduler or args.cluster_config})" if args.scheduler or args.cluster_config
             else f"{args.jobs} local worker(s)")
    session = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    print(f"[reproduce] {len(runs)} run(s) on {where}; logs in {repo / '_build' / 'reproduce' / 'logs'} "
          f"(session {session})", flush=True)
    for run in runs:
        params = " ".join(f"-p {k} {shlex.quote(str(v))}" for k, v in (run.get("parameters") or {}).items())
        print(f"[reproduce]   {run['name']} (estimate: {run.get('estimate', '?')}): {run['notebook']} "
              f"through papermill with {params}", flush=True)
    if args.dry_run:
        return 0
    # refuse at once, before starting anything, when another process is executing one of these runs or writing
    # one of their output files (the child's own lock is what excludes a second writer; this names the holder)
    from ..experiments.notebook import notebook_path
    from ..provenance import lock_holder

    busy = []
    for run in runs:
        out = (run.get("parameters") or {}).get("output")
        for path in [lock_path(run["name"], repo)] + ([notebook_path(out)] if out else []):
            holder = lock_holder(path)
            if holder:
                busy.append(f"{run['name']}: {path} is being written by {holder} (lock {path}.lock)")
    if busy:
        print("[reproduce] refused: another process is executing these runs; wait for it to finish or stop it, "
              "then run again (it resumes from what was committed):\n  " + "\n  ".join(busy), file=sys.stderr,
              flush=True)
        return EXIT_LOCKED
    start = time.perf_counter()
    if args.scheduler or args.cluster_config:
        results = run_dask(runs, spec, repo, args.scheduler, args.cluster_config, retries=args.retries,
                           session=session, progress_every=args.progress_every, connect_timeout=args.connect_timeout)
    else:
        results = run_local(runs, args.jobs, spec, repo, retries=args.retries, session=session,
                            progress_every=args.progress_every)
    for line in _summary(results, time.perf_counter() - start):
        print(f"[reproduce] {line}", flush=True)
    return 0 if all(r["returncode"] == 0 for r in results) else 1
