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
   with the least-squares slope on log-log axes;
5. fitted kernels on real memories (``--sections fitted``): ``UHop(epochs=5).retrieve`` against MHM
   (``uhop.retrieve``) at several beta, on Q = M = 500 MNIST and CIFAR-10 memories (``$UHOP_DATA``) with
   half of their pixels masked (target: <= 1.1x at every beta).  A fitted kernel sharpens the softmax, and
   a sharp softmax leaves some weights as subnormal floats, which many CPUs multiply far more slowly; the
   library flushes them before the read-out.  The section records the fraction of subnormal weights and,
   for information, the same step without the flush.

Repetitions of the cases are interleaved and medians reported, so that drifts in
machine load hit every case alike.  With one torch thread (``--threads 1``) the times are the CPU time of
the computing thread, which time lost to other jobs on a shared machine does not inflate.  Usage::

    python benchmarks/bench_retrieval.py [--quick] [--sections core fitted] [--reps N] [--threads N] [--json PATH]

``--quick`` runs section 5 on random memories (no data needed).

With ``--json PATH`` the results are written there with a provenance manifest beside them
(``PATH.manifest.json``: command, commit, date, machine, wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

import uhop
from uhop.provenance import atomic_write_text, write_manifest

FITTED_DATASETS = ("mnist", "cifar10")
FITTED_BETAS = (0.01, 0.1, 1.0, 3.0)


def _time(fn, inner: int, clock=time.perf_counter) -> float:
    start = clock()
    for _ in range(inner):
        fn()
    return (clock() - start) / inner


def _samples(cases: dict, reps: int, inner: dict, clock=time.perf_counter) -> dict:
    """Seconds per call of each case in each of ``reps`` rounds; one call of every case per round."""
    for name, fn in cases.items():  # warm-up (allocator, BLAS, lazy imports)
        fn()
    samples = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            samples[name].append(_time(fn, inner.get(name, 1), clock))
    return samples


def _clock():
    """The CPU time of this thread when torch computes on it alone (one intra-op thread), so that time spent
    descheduled by other jobs on a shared machine is not counted; wall-clock time with several torch threads."""
    return time.thread_time if torch.get_num_threads() == 1 else time.perf_counter


def _interleaved(cases: dict, reps: int, inner: dict) -> dict:
    """Median seconds per call of each case (:func:`_clock`), from interleaved rounds."""
    return {name: statistics.median(v) for name, v in _samples(cases, reps, inner, _clock()).items()}


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
    parser.add_argument("--sections", nargs="+", choices=("core", "fitted"), default=["core", "fitted"],
                        help="core: cases 1-4 on random data; fitted: case 5 on real memories")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    wall_start = time.perf_counter()
    dtype = torch.float32
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"{platform.machine()} {platform.processor() or ''} | python {platform.python_version()} | "
          f"{platform.system()} | dtype {dtype}")
    result = dict(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                  processor=platform.processor(), python=platform.python_version(), quick=args.quick,
                  dtype=str(dtype), sections=list(args.sections),
                  load_average_at_start=list(os.getloadavg()),  # other jobs on the machine (1, 5, 15 min)
                  clock="thread CPU time" if _clock() is time.thread_time else "wall clock")
    if "core" in args.sections:
        result.update(core(args, dtype))
    if "fitted" in args.sections:
        result["fitted"] = fitted(args)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        write_manifest(args.json + ".manifest.json",
                       command="python " + " ".join(["benchmarks/bench_retrieval.py", *(argv or [])]),
                       parameters=vars(args), wall_time_s=time.perf_counter() - wall_start)
        print(f"wrote {args.json}")
    return result


def core(args, dtype) -> dict:
    """Cases 1-4 (random memories and queries)."""
    if args.quick:
        Q, M, d, reps = 64, 40, 49, args.reps or 3
        fixed = dict(Q=32, M=16, d=32)
        sweep_M, sweep_d, shapes_limit = [8, 16], [16, 32], [(32, 16, 32, "limit")]
    else:
        Q, M, d, reps = 1000, 500, 784, args.reps or 15
        fixed = dict(Q=500, M=500, d=784)
        sweep_M, sweep_d = [125, 250, 500, 1000, 2000], [196, 392, 784, 1568, 3072]
        shapes_limit = [(1000, 500, 784, "limit"), (500, 500, 3072, "limit")]
    g = torch.Generator().manual_seed(0)
    memories = torch.rand(M, d, generator=g, dtype=dtype)
    queries = torch.rand(Q, d, generator=g, dtype=dtype)
    # the "all memories" workload: each memory, half of its entries dropped
    corrupted = uhop.random_mask(memories, p=0.5, generator=g)

    kernel = uhop.LinearKernel(d, init="normal", seed=0, dtype=dtype).requires_grad_(False)
    with torch.no_grad():
        keys = kernel.precompute(memories)

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

    return dict(
        sizes=dict(Q=Q, M=M, d=d), reps=reps, seconds=t, ratios=ratios, rows=rows, slopes=slopes,
        targets=dict(uhop_step_over_mhm_step="<= 1.1", uhop_loop_over_vectorized=">= 20",
                     mhm_over_bare_at_Q500_M500_d3072="<= 1.5"),
    )


def _fitted_sets(quick: bool):
    """(name, data variant, memories, masked queries) of case 5: Q = M = 500 real memories, half of their
    pixels zeroed (the paper's query); --quick: random 7x7 patterns, no data needed."""
    g = torch.Generator().manual_seed(1)
    if quick:
        memories = torch.rand(24, 49, generator=torch.Generator().manual_seed(0))
        yield "random", "random", memories, uhop.random_mask(memories, p=0.5, generator=g)
        return
    from uhop.data import sample_memories

    for name in FITTED_DATASETS:
        data = sample_memories(name, 500, seed=0)
        queries = uhop.random_mask(data.memories, p=0.5, per="pixel", shape=tuple(data.image_shape), generator=g)
        yield name, data.variant, data.memories, queries


def fitted(args) -> dict:
    """Case 5: ``UHop(epochs=5).retrieve`` against MHM at several beta, interleaved per beta."""
    reps, epochs, tiny = args.reps or (3 if args.quick else 21), 5, torch.finfo(torch.float32).tiny
    rows = []
    for name, variant, memories, queries in _fitted_sets(args.quick):
        start = time.perf_counter()
        base = uhop.UHop(epochs=epochs, seed=0).fit(memories)  # Stage I does not depend on beta
        fit_s = time.perf_counter() - start
        for beta in FITTED_BETAS:
            model = uhop.UHop(beta=beta, epochs=epochs, seed=0).fit(memories)
            assert torch.equal(model.kernel_.weight, base.kernel_.weight)
            keys = model.keys_

            def unflushed():  # the same step without the flush, for information
                return torch.softmax(beta * (queries @ keys.T), dim=-1) @ memories

            cases = {"uhop": lambda: model.retrieve(queries),
                     "mhm": lambda: uhop.retrieve(queries, memories, beta=beta),
                     "uhop_unflushed": unflushed}
            with torch.no_grad():
                t = _interleaved(cases, reps, {})  # wall-clock medians recorded beside
                wall = {k: statistics.median(v) for k, v in _samples(cases, reps, {}).items()}
                w_uhop = torch.softmax(beta * (queries @ keys.T), dim=-1)
                w_mhm = torch.softmax(beta * (queries @ memories.T), dim=-1)
                diff = float((model.retrieve(queries) - unflushed()).abs().max())
            subnormal = lambda w: float(((w > 0) & (w < tiny)).double().mean())  # noqa: E731
            rows.append(dict(dataset=name, variant=variant, Q=queries.shape[0], M=memories.shape[0],
                             d=memories.shape[1], beta=beta, uhop_s=t["uhop"], mhm_s=t["mhm"],
                             uhop_unflushed_s=t["uhop_unflushed"], uhop_over_mhm=t["uhop"] / t["mhm"],
                             uhop_wall_s=wall["uhop"], mhm_wall_s=wall["mhm"],
                             uhop_over_mhm_wall=wall["uhop"] / wall["mhm"],
                             unflushed_over_uhop=t["uhop_unflushed"] / t["uhop"],
                             subnormal_fraction_uhop=subnormal(w_uhop), subnormal_fraction_mhm=subnormal(w_mhm),
                             max_abs_diff_flushed_vs_unflushed=diff, stage1_s=fit_s))
            r = rows[-1]
            print(f"  [fitted] {name:8s} beta={beta:<5g} U-Hop {r['uhop_s'] * 1e3:8.2f} ms, MHM {r['mhm_s'] * 1e3:8.2f} ms"
                  f" -> {r['uhop_over_mhm']:.2f}x (target <= 1.1; wall clock {r['uhop_over_mhm_wall']:.2f}x); "
                  f"unflushed U-Hop {r['uhop_unflushed_s'] * 1e3:8.2f} ms;"
                  f" subnormal weights {100 * r['subnormal_fraction_uhop']:.2f}% (MHM "
                  f"{100 * r['subnormal_fraction_mhm']:.2f}%); flush moves outputs by <= {diff:.1e}")
    worst = max(rows, key=lambda r: r["uhop_over_mhm"])
    print(f"(5)  fitted U-Hop retrieve / MHM, worst over data sets and beta: {worst['uhop_over_mhm']:.2f}x "
          f"({worst['dataset']}, beta={worst['beta']:g}; target <= 1.1)")
    return dict(epochs=epochs, reps=reps, betas=list(FITTED_BETAS), statistic="median over interleaved rounds",
                rows=rows, max_uhop_over_mhm=worst["uhop_over_mhm"], target_uhop_over_mhm="<= 1.1")


if __name__ == "__main__":
    main(sys.argv[1:])
