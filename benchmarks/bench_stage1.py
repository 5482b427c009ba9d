"""Stage I cost: uhop's Gram engine against a minimal Gram recursion and the autograd engine.

Prints, and optionally writes as JSON with a manifest:

1. the headline at d = 3072, M = 200, N = 100 (float32, the paper's default settings: identity
   init, average loss over distinct pairs on normalised features, plain SGD): seconds of
   ``uhop.fit_kernel`` with the Gram engine (diagnostics every step, and every N steps), of a
   minimal Gram recursion written out below (no checks, no diagnostics: the floor for the same
   arithmetic) and of the autograd engine, and the relative differences of the W they return.
   Targets: Gram engine <= 1.25x the minimal recursion, >= 10x faster than autograd.  The timed
   runs use lr 0.1, where gradient descent on these memories is stable, so that the W comparison
   measures the implementations; at the paper's lr 1 the iteration is chaotic (the cost per step
   is the same): the float64 difference of the Gram engine and the minimal recursion at lr 1 is
   recorded to show it, next to the float64 difference of the two engines at lr 0.1;
2. growth: seconds per Stage-I step against M (fixed d) and against d (fixed M) for both
   engines, with the slope of a least-squares line on log-log axes (Gram: ~M^3 per step and
   no d term; autograd: ~M d^2).

The machines are shared and noisy, so every repetition runs all the timed cases back to back
(interleaved: drifting load hits them alike) and medians are reported, together with the load
average before and after.  ``--quick`` runs tiny sizes in a few seconds (used by the test suite,
which checks that the script runs, never how fast).

    python benchmarks/bench_stage1.py                  # full settings (several minutes on 2 cores)
    python benchmarks/bench_stage1.py --quick
    python benchmarks/bench_stage1.py --json results/benchmarks/stage1.json --note "..."
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

import uhop
from uhop.provenance import atomic_write_text, collect_provenance, write_manifest


def minimal_recursion(X: torch.Tensor, epochs: int, lr: float, t: float = 2.0) -> torch.Tensor:
    r"""W after ``epochs`` plain SGD steps from W_0 = I, by the Gram recursion and nothing else.

    Loss: log mean_{u<v} exp(-t ||f_u/|f_u| - f_v/|f_v|||^2) = logsumexp_{u<v}(-2t (1 - c_uv)) + const
    with c_uv = K_uv / sqrt(K_uu K_vv).  With P the softmax over the pairs u < v and P_s = P + P^T,
    dL/dc_uv = 2t P_uv, so the symmetric coefficient of grad_W = W Xi C Xi^T is
    C_uv = 2t P_s,uv / sqrt(K_uu K_vv) (u != v), C_uu = -2t sum_v P_s,uv c_uv / K_uu.
    """
    M, d = X.shape
    S = X @ X.T                                   # = H, since W_0 = I
    A = torch.zeros(M, M, dtype=X.dtype)
    below = ~torch.ones(M, M, dtype=torch.bool).triu(1)
    for _ in range(epochs):
        AS = A @ S
        SAS = S @ AS
        K = S + SAS + SAS.T + AS.T @ SAS
        r = K.diagonal().rsqrt()
        c = K * r[:, None] * r[None, :]
        P = torch.softmax(((c - 1) * (2 * t)).masked_fill(below, -float("inf")).view(-1), 0).view(M, M)
        Ps = P + P.T
        C = Ps * r[:, None] * r[None, :]
        C.diagonal().sub_(r * r * (Ps * c).sum(1))
        C *= 2 * t
        A = A - lr * (C + AS @ C)
    return torch.eye(d, dtype=X.dtype).addmm_(X.T, A @ X)


def _fit(memories, epochs, lr, **kw):
    kernel, _ = uhop.fit_kernel(memories, epochs=epochs, lr=lr, normalize_rows=False, **kw)
    return kernel.weight.detach()


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def headline(d, M, epochs, repeats, lr, seed=0):
    memories = torch.rand(M, d, generator=torch.Generator().manual_seed(seed))
    cases = {
        "minimal": lambda: minimal_recursion(memories, epochs, lr),
        "gram": lambda: _fit(memories, epochs, lr, engine="gram"),
        "gram_record_every_N": lambda: _fit(memories, epochs, lr, engine="gram", record_every=max(1, epochs)),
        "autograd": lambda: _fit(memories, epochs, lr, engine="autograd"),
    }
    times = {name: [] for name in cases}
    weights = {}
    for _ in range(repeats):  # interleaved: every repetition runs every case once
        for name, run in cases.items():
            start = time.perf_counter()
            weights[name] = run()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    # float64: the engines in the stable step size, and the amplification of rounding at lr 1
    # (see the module docstring).
    m64 = memories.double()
    w64 = {engine: _fit(m64, epochs, 0.1, engine=engine) for engine in ("gram", "autograd")}
    chaotic = _rel(_fit(m64, epochs, 1.0, engine="gram"), minimal_recursion(m64, epochs, 1.0))
    return {
        "d": d, "M": M, "epochs": epochs, "lr_timed": lr, "dtype_timed": "float32",
        "minimal_s": med["minimal"], "gram_s": med["gram"], "gram_record_every_N_s": med["gram_record_every_N"],
        "autograd_s": med["autograd"],
        "ratio_gram_over_minimal": med["gram"] / med["minimal"],
        "ratio_gram_record_every_N_over_minimal": med["gram_record_every_N"] / med["minimal"],
        "ratio_autograd_over_gram": med["autograd"] / med["gram"],
        "rel_diff_W_gram_vs_minimal_float32": _rel(weights["gram"], weights["minimal"]),
        "rel_diff_W_gram_vs_autograd_float32": _rel(weights["gram"], weights["autograd"]),
        "rel_diff_W_float64_lr0.1": _rel(w64["gram"], w64["autograd"]),
        "rel_diff_W_gram_vs_minimal_float64_lr1": chaotic,
        "all_s": times,
    }


def _slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _time_fit(memories, engine, epochs, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _fit(memories, epochs, 0.1, engine=engine)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def growth(sizes_M, fixed_d, sizes_d, fixed_M, epochs, repeats):
    rows = []
    for axis, values in (("M", sizes_M), ("d", sizes_d)):
        for v in values:
            M, d = (v, fixed_d) if axis == "M" else (fixed_M, v)
            memories = torch.rand(M, d, generator=torch.Generator().manual_seed(v))
            # Per-step cost: difference of N and 0 epochs removes the one-off set-up and
            # materialisation, which are not part of the per-step growth law.
            for engine in ("gram", "autograd"):
                full = _time_fit(memories, engine, epochs, repeats)
                setup = _time_fit(memories, engine, 0, repeats)
                rows.append({"axis": axis, "M": M, "d": d, "engine": engine, "total_s": full,
                             "per_step_s": max(full - setup, 1e-9) / epochs})
    slopes = {}
    for axis in ("M", "d"):
        for engine in ("gram", "autograd"):
            sel = [r for r in rows if r["axis"] == axis and r["engine"] == engine]
            slopes[f"{engine}_per_step_vs_{axis}"] = _slope([r[axis] for r in sel], [r["per_step_s"] for r in sel])
    return rows, slopes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--json", metavar="PATH", help="write results and a manifest (PATH.manifest.json)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--note", default="", help="what else the machine was doing (stored with the result)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load_before = os.getloadavg()
    if args.quick:
        head = headline(d=64, M=16, epochs=5, repeats=1, lr=0.1)
        rows, slopes = growth([8, 16], 32, [16, 32], 8, epochs=3, repeats=1)
    else:
        head = headline(d=3072, M=200, epochs=100, repeats=5, lr=0.1)
        rows, slopes = growth([50, 100, 200, 400], 784, [256, 784, 1568, 3072], 100, epochs=20, repeats=3)
    machine = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "load_average_1_5_15_min_before": load_before, "load_average_1_5_15_min_after": os.getloadavg(),
               "note": args.note}
    prov = collect_provenance()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {prov['machine']['platform']}; "
          f"load average {load_before[0]:.2f} before, {machine['load_average_1_5_15_min_after'][0]:.2f} after "
          f"on {os.cpu_count()} cores")
    print(f"Stage I, d={head['d']} M={head['M']} N={head['epochs']} (float32, lr {head['lr_timed']}): "
          f"minimal recursion {head['minimal_s']:.3f} s, uhop gram {head['gram_s']:.3f} s "
          f"({head['ratio_gram_over_minimal']:.2f}x, target <= 1.25x; record_every=N "
          f"{head['ratio_gram_record_every_N_over_minimal']:.2f}x), autograd {head['autograd_s']:.3f} s "
          f"({head['ratio_autograd_over_gram']:.1f}x the gram engine, target >= 10x)")
    print(f"rel. diff of W: gram vs minimal {head['rel_diff_W_gram_vs_minimal_float32']:.1e}, gram vs autograd "
          f"{head['rel_diff_W_gram_vs_autograd_float32']:.1e} (float32, lr {head['lr_timed']}); "
          f"{head['rel_diff_W_float64_lr0.1']:.1e} (float64, lr 0.1, gram vs autograd); "
          f"{head['rel_diff_W_gram_vs_minimal_float64_lr1']:.1e} (float64, lr 1, gram vs minimal: chaotic)")
    for key, value in slopes.items():
        print(f"log-log slope {key}: {value:.2f}")
    for r in rows:
        print(f"  {r['engine']:8s} M={r['M']:5d} d={r['d']:5d} per step {r['per_step_s'] * 1e3:9.3f} ms")
    if args.json:
        result = {"headline": head, "growth": rows, "slopes": slopes, "machine_state": machine, "quick": args.quick}
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        write_manifest(args.json + ".manifest.json", command="python " + " ".join(sys.argv),
                       parameters=vars(args), wall_time_s=time.perf_counter() - start)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
