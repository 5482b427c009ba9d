"""Retrieval speed: ratios measured side by side in one run.

1. kernelized U-Hop step (after ``LinearKernel.precompute``) vs a plain MHM step,
   Q = 1000 queries, M = 500 memories, d = 784 (target: <= 1.1x);
2. vectorized one-step retrieval of all M = 500 memories (d = 784) vs a per-memory
   Python loop in the style of the official scripts: (2a) MHM with the dot-product
   overlap, (2b) U-Hop with the official kernel overlap, which recomputes W Xi for
   every query (target for U-Hop: >= 20x faster);
3. the hardware limit: a plain MHM step vs the bare ``torch.mm`` products it contains, at
   Q = 1000, M = 500, d = 784 and at Q = M = 500, d = 3072 (target: <= 1.5x the two products);
4. growth: one MHM step, one kernelized step and the bare products against M and against d,
   with the least-squares slope on log-log axes.

Repetitions of the cases are interleaved and medians reported, so that drifts in
machine load hit every case alike.  Usage::

    python benchmarks/bench_retrieval.py [--quick] [--reps N] [--threads N] [--json PATH]

With ``--json PATH`` the results are written there with a provenance manifest beside them
(``PATH.manifest.json``: command, commit, date, machine, wall time).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

import uhop
from uhop.provenance import atomic_write_text, write_manifest


def _time(fn, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def _interleaved(cases: dict, reps: int, inner: dict) -> dict:
    """Median seconds per call of each case; one call of every case per round."""
    for name, fn in cases.items():  # warm-up (allocator, BLAS, lazy imports)
        fn()
    samples = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            samples[name].append(_time(fn, inner.get(name, 1)))
    return {name: statistics.median(v) for name, v in samples.items()}


def official_style_loop(queries: torch.Tensor, memories: torch.Tensor, weight: torch.Tensor | None = None,
                        beta: float = 1.0) -> torch.Tensor:
    """One query at a time, memories as columns, as in the official retrieval scripts:
    ``for i in range(M): x = Xi @ (beta * softmax(overlap(Xi, q)))``.

    ``weight=None``: MHM with the dot-product overlap ``Xi^T q``.  With a weight W:
    the official U-Hop overlap ``(W Xi)^T (W q)``, which recomputes ``W Xi`` for
    every query because the overlap function takes (Xi, q).
    """
    Xi_cols = memories.T  # (d, M)
    out = []
    for i in range(queries.shape[0]):
        q = queries[i]
        if weight is None:
            overlap = Xi_cols.T @ q
        else:
            overlap = (weight @ Xi_cols).T @ (weight @ q)
        score = beta * torch.softmax(overlap, dim=-1)
        out.append(Xi_cols @ score)
    return torch.stack(out)


def limit_and_growth(shapes, sweep_M, sweep_d, fixed, reps):
    """MHM step, kernelized step and bare products at given (Q, M, d) shapes; one row per shape."""
    rows = []
    for Q, M, d, tag in shapes:
        g = torch.Generator().manual_seed(M + d)
        memories, queries = torch.rand(M, d, generator=g), torch.rand(Q, d, generator=g)
        kernel = uhop.LinearKernel(d, init="normal", seed=0).requires_grad_(False)
        with torch.no_grad():
            keys = kernel.precompute(memories)
            t = _interleaved({
                "mhm_step": lambda: uhop.retrieve(queries, memories),
                "uhop_step_precomputed": lambda: uhop.retrieve(queries, memories, kernel=kernel, keys=keys),
                "bare_two_mm": lambda: torch.mm(torch.mm(queries, memories.T), memories),
            }, reps, {})
        rows.append({"tag": tag, "Q": Q, "M": M, "d": d, **{f"{k}_s": v for k, v in t.items()},
                     "mhm_over_bare": t["mhm_step"] / t["bare_two_mm"],
                     "uhop_over_mhm": t["uhop_step_precomputed"] / t["mhm_step"]})
    slopes = {}
    for axis in ("M", "d"):
        sel = [r for r in rows if r["tag"] == f"vs {axis}"]
        for case in ("mhm_step", "uhop_step_precomputed", "bare_two_mm"):
            slopes[f"{case}_vs_{axis}"] = float(np.polyfit(np.log([r[axis] for r in sel]),
                                                           np.log([r[f"{case}_s"] for r in sel]), 1)[0])
    return rows, slopes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 5 s)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved rounds (default 15, quick 3)")
    parser.add_argument("--json", type=str, default=None, help="write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N); default: as given by the environment")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    wall_start = time.perf_counter()
    if args.quick:
        Q, M, d, reps = 64, 40, 49, args.reps or 3
        fixed = dict(Q=32, M=16, d=32)
        sweep_M, sweep_d, shapes_limit = [8, 16], [16, 32], [(32, 16, 32, "limit")]
    else:
        Q, M, d, reps = 1000, 500, 784, args.reps or 15
        fixed = dict(Q=500, M=500, d=784)
        sweep_M, sweep_d = [125, 250, 500, 1000, 2000], [196, 392, 784, 1568, 3072]
        shapes_limit = [(1000, 500, 784, "limit"), (500, 500, 3072, "limit")]
    dtype = torch.float32
    g = torch.Generator().manual_seed(0)
    memories = torch.rand(M, d, generator=g, dtype=dtype)
    queries = torch.rand(Q, d, generator=g, dtype=dtype)
    # the "all memories" workload: each memory, half of its entries dropped
    corrupted = uhop.random_mask(memories, p=0.5, generator=g)

    kernel = uhop.LinearKernel(d, init="normal", seed=0, dtype=dtype).requires_grad_(False)
    with torch.no_grad():
        keys = kernel.precompute(memories)

    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"{platform.machine()} {platform.processor() or ''} | python {platform.python_version()} | "
          f"{platform.system()} | dtype {dtype}")
    print(f"sizes: Q={Q}, M={M}, d={d}; {reps} interleaved rounds, medians")

    W = kernel.weight
    with torch.no_grad():
        # same numbers from both retrieval paths
        assert torch.allclose(official_style_loop(corrupted, memories), uhop.retrieve(corrupted, memories),
                              atol=1e-5)
        assert torch.allclose(official_style_loop(corrupted[:5], memories, W),
                              uhop.retrieve(corrupted[:5], memories, kernel=kernel), atol=1e-4)
        cases = {
            "mhm_step": lambda: uhop.retrieve(queries, memories),
            "uhop_step_precomputed": lambda: uhop.retrieve(queries, memories, kernel=kernel, keys=keys),
            "bare_mm_scores": lambda: torch.mm(queries, memories.T),
            "bare_two_mm": lambda: torch.mm(torch.mm(queries, memories.T), memories),
            "mhm_all_memories_vectorized": lambda: uhop.retrieve(corrupted, memories),
            "mhm_all_memories_python_loop": lambda: official_style_loop(corrupted, memories),
        }
        inner = {name: (1 if "loop" in name else 5) for name in cases}
        t = _interleaved(cases, reps, inner)
        # The official U-Hop loop costs a (d x d)(d x M) product per query: fewer rounds.
        slow = {
            "uhop_all_memories_vectorized": lambda: uhop.retrieve(corrupted, memories, kernel=kernel),
            "uhop_all_memories_official_loop": lambda: official_style_loop(corrupted, memories, W),
        }
        t.update(_interleaved(slow, max(1, reps // 5), {"uhop_all_memories_vectorized": 3}))

    shapes = shapes_limit + [(fixed["Q"], m, fixed["d"], "vs M") for m in sweep_M] \
        + [(fixed["Q"], fixed["M"], dd, "vs d") for dd in sweep_d]
    rows, slopes = limit_and_growth(shapes, sweep_M, sweep_d, fixed, max(3, reps // 3))

    ratios = {
        "uhop_step_over_mhm_step": t["uhop_step_precomputed"] / t["mhm_step"],
        "mhm_loop_over_vectorized": t["mhm_all_memories_python_loop"] / t["mhm_all_memories_vectorized"],
        "uhop_loop_over_vectorized": t["uhop_all_memories_official_loop"] / t["uhop_all_memories_vectorized"],
        "mhm_step_over_bare_mm": t["mhm_step"] / t["bare_mm_scores"],
        "mhm_step_over_bare_two_mm": t["mhm_step"] / t["bare_two_mm"],
    }
    print()
    for name, sec in t.items():
        print(f"  {name:32s} {sec * 1e3:10.3f} ms")
    print()
    print(f"(1)  kernelized step (precomputed B) / MHM step     : {ratios['uhop_step_over_mhm_step']:.3f}x  (target <= 1.1)")
    print(f"(2a) MHM: per-memory loop / vectorized              : {ratios['mhm_loop_over_vectorized']:.1f}x")
    print(f"(2b) U-Hop: official per-memory loop / vectorized   : {ratios['uhop_loop_over_vectorized']:.1f}x  (target >= 20)")
    print(f"(3)  MHM step / bare torch.mm (Q,d)x(d,M)           : {ratios['mhm_step_over_bare_mm']:.2f}x  "
          f"(/ both products: {ratios['mhm_step_over_bare_two_mm']:.2f}x; for information)")

    print()
    for r in rows:
        print(f"  [{r['tag']:6s}] Q={r['Q']:5d} M={r['M']:5d} d={r['d']:5d}: MHM step {r['mhm_step_s'] * 1e3:8.3f} ms,"
              f" kernelized {r['uhop_step_precomputed_s'] * 1e3:8.3f} ms, bare products {r['bare_two_mm_s'] * 1e3:8.3f} ms"
              f" -> MHM/bare {r['mhm_over_bare']:.2f}x, kernelized/MHM {r['uhop_over_mhm']:.2f}x")
    for key, value in slopes.items():
        print(f"  log-log slope {key}: {value:.2f}")

    result = dict(
        torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
        processor=platform.processor(), python=platform.python_version(), quick=args.quick,
        sizes=dict(Q=Q, M=M, d=d), reps=reps, dtype=str(dtype),
        seconds=t, ratios=ratios, rows=rows, slopes=slopes,
        targets=dict(uhop_step_over_mhm_step="<= 1.1", uhop_loop_over_vectorized=">= 20",
                     mhm_over_bare_at_Q500_M500_d3072="<= 1.5"),
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        write_manifest(args.json + ".manifest.json", command="python " + " ".join(["benchmarks/bench_retrieval.py", *(argv or [])]),
                       parameters=vars(args), wall_time_s=time.perf_counter() - wall_start)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
