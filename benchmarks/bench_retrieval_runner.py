"""Benchmark of the retrieval-experiment runner (uhop.experiments.retrieval).

Two measurements:

``sweep``  the wall time of a full capacity sweep at one N: M in {10, 20, 30, 50, 100, 200, 500},
           ``--runs`` runs, all ten methods, through :func:`run_grid` (written to a temporary folder).
``ratio``  the runner against a faithful per-memory loop in the style of the official scripts, on
           the same cells: one script invocation per (method, N) cell, i.e. Stage I re-run for every N
           and every U-Hop variant with the autograd engine, then a Python loop over the M memories
           that corrupts one query and runs one update at a time.  The runner draws memories and
           queries once per (M, seed), runs the baselines once, and runs Stage I once (Gram engine,
           ``checkpoints=`` for the N grid) with vectorised retrieval.  Both compute the same numbers
           (checked here to 1e-3 relative on the mean SSE).

    python benchmarks/bench_retrieval_runner.py ratio --dataset mnist --M 100 --epochs 1 10 100
    python benchmarks/bench_retrieval_runner.py sweep --dataset mnist --N 100 --runs 20

Use ``--threads 1`` on a shared machine (the default); results are printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

import uhop
from uhop.experiments import METHODS, GridConfig, make_queries, run_grid, stage1_settings
from uhop.experiments.retrieval import DAM_DEGREE, ImagePool, derive_seed
from uhop.provenance import atomic_write_text, write_manifest

SIZES = [10, 20, 30, 50, 100, 200, 500]


def _official_loop_cell(pool, method, M, N, seed, protocol):
    """One (method, N) cell the way the official scripts compute it: everything per query."""
    spec = METHODS[method]
    test = pool.sample(M, seed)                     # the official scripts reload the data per run
    mem = test.memories
    queries = make_queries(mem, pool.image_shape, protocol, "mask", 0.5, seed=seed)
    beta_inside = protocol != "official"
    kernel = None
    if spec.uhop:
        settings = stage1_settings(protocol, "mask")
        kernel, _ = uhop.fit_kernel(mem, epochs=N, seed=derive_seed(seed, f"kernel-M{M}"), engine="autograd",
                                    **settings)
        W = kernel.weight.detach()
    errs = []
    for m in range(M):                              # one query at a time
        q = queries[m]
        if spec.uhop:
            s = (mem @ W.T) @ (W @ q)
        elif spec.similarity == "dot":
            s = mem @ q
        else:
            p = 2.0 if spec.similarity == "l2" else 1.0
            dist = (mem - q).abs().pow(p).sum(-1).pow(1.0 / p)
            s = dist if spec.official else -dist
        if spec.separation == "poly":
            if spec.official:
                w = s.double().pow(DAM_DEGREE)
            else:
                w = uhop.PolynomialSeparation(DAM_DEGREE)(s, dim=0)
        else:
            sep = uhop.softmax if spec.separation == "softmax" else uhop.sparsemax
            w = sep(s, dim=0) if (spec.official or not beta_inside) else sep(1.0 * s, dim=0)
        x_new = mem.T.to(w.dtype) @ w
        errs.append(float(((mem[m].clamp(0, 1) - x_new.clamp(0, 1).float()) ** 2).sum()))
    return sum(errs) / M


def ratio(args):
    pool = ImagePool(args.dataset)
    methods = list(METHODS)
    cfg = GridConfig(experiment="bench", dataset=args.dataset, protocol=args.protocol, methods=methods,
                     sizes=[args.M], epochs=args.epochs, noise=[0.5], seeds=list(range(args.runs)))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        df = run_grid(cfg, f"{tmp}/bench.csv", progress=False, threads=args.threads)
        t_runner = time.perf_counter() - start
    start = time.perf_counter()
    loop = {}
    for seed in cfg.seeds:
        for method in methods:
            for n in (cfg.epochs if METHODS[method].uhop else [None]):
                loop[(method, n, seed)] = _official_loop_cell(pool, method, args.M, n or 0, seed, args.protocol)
    t_loop = time.perf_counter() - start
    worst = 0.0
    for _, row in df.iterrows():
        n = None if row["N"] != row["N"] else int(row["N"])
        ref = loop[(row["method"], n, int(row["seed"]))]
        if ref == ref and row["sse_mean"] == row["sse_mean"]:
            worst = max(worst, abs(ref - row["sse_mean"]) / (1e-6 + abs(ref)))
    result = dict(benchmark="ratio", dataset=args.dataset, protocol=args.protocol, M=args.M,
                  epochs=cfg.epochs, runs=args.runs, cells=len(df), runner_s=round(t_runner, 2),
                  per_memory_loop_s=round(t_loop, 2), speedup=round(t_loop / t_runner, 1),
                  max_rel_diff_sse=worst, threads=torch.get_num_threads())
    print(json.dumps(result))
    return result


def sweep(args):
    cfg = GridConfig(experiment="bench", dataset=args.dataset, protocol=args.protocol, methods=list(METHODS),
                     sizes=SIZES, epochs=[args.N], noise=[0.5], seeds=list(range(args.runs)))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        df = run_grid(cfg, f"{tmp}/sweep.csv", progress=False, threads=args.threads)
        wall = time.perf_counter() - start
    result = dict(benchmark="sweep", dataset=args.dataset, protocol=args.protocol, N=args.N,
                  runs=args.runs, cells=len(df), wall_s=round(wall, 1),
                  stage1_s=round(float(df.groupby(["M", "seed"])["stage1_s"].max().sum()), 1),
                  threads=torch.get_num_threads())
    print(json.dumps(result))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the ratio at M = 10, N in {1, 3}, one run (ignores the subcommand)")
    parser.add_argument("--json", metavar="PATH", help="write the result and a manifest (PATH.manifest.json)")
    sub = parser.add_subparsers(dest="what", required=False)
    r = sub.add_parser("ratio")
    r.add_argument("--M", type=int, default=100)
    r.add_argument("--epochs", type=int, nargs="+", default=[1, 10, 100])
    r.add_argument("--runs", type=int, default=1)
    s = sub.add_parser("sweep")
    s.add_argument("--N", type=int, default=100)
    s.add_argument("--runs", type=int, default=20)
    for p in (r, s):
        p.add_argument("--dataset", default="mnist")
        p.add_argument("--protocol", default="paper")
        p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.quick:
        args = argparse.Namespace(**{**vars(args), "what": "ratio", "M": 10, "epochs": [1, 3], "runs": 1,
                                     "dataset": "mnist", "protocol": "paper", "threads": 1})
    elif args.what is None:
        parser.error("choose a subcommand: ratio or sweep (or --quick)")
    result = (ratio if args.what == "ratio" else sweep)(args)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        write_manifest(args.json + ".manifest.json", command="python benchmarks/bench_retrieval_runner.py "
                       + " ".join(argv if argv is not None else sys.argv[1:]),
                       parameters={k: v for k, v in vars(args).items()}, wall_time_s=time.perf_counter() - start)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
