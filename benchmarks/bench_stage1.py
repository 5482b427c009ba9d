"""Stage I cost: the Gram engine against the autograd engine, measured side by side.

Prints, and optionally writes as JSON with a manifest:

1. the headline ratio at d = 3072, M = 200, N = 100 (target: Gram >= 10x faster), with the
   relative difference of the two fitted W (float64, in a step size where plain gradient
   descent is stable, so the comparison measures the engines and not chaos);
2. growth: seconds per Stage-I step against M (fixed d) and against d (fixed M) for both
   engines, with the slope of a least-squares line on log-log axes (Gram: ~M^3 per step and
   no d term; autograd: ~M d^2).

Repetitions of the two engines are interleaved and the median is reported, because the
machines are noisy. ``--quick`` runs tiny sizes in a few seconds (used by the test suite,
which checks that the script runs, never how fast).

    python benchmarks/bench_stage1.py                  # full settings (a few minutes on 2 cores)
    python benchmarks/bench_stage1.py --quick
    python benchmarks/bench_stage1.py --json results/benchmarks/stage1.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

import uhop
from uhop.provenance import atomic_write_text, collect_provenance, write_manifest


def _time_fit(memories, engine, epochs, lr, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        uhop.fit_kernel(memories, epochs=epochs, lr=lr, engine=engine, normalize_rows=False)
        times.append(time.perf_counter() - start)
    return times


def headline(d, M, epochs, repeats, lr, seed=0):
    gen = torch.Generator().manual_seed(seed)
    memories = torch.rand(M, d, generator=gen)
    # Interleave the engines so drifting machine load hits both alike.
    gram, autograd = [], []
    for _ in range(repeats):
        gram += _time_fit(memories, "gram", epochs, lr, 1)
        autograd += _time_fit(memories, "autograd", epochs, lr, 1)
    # Same result: float64 in a stable step size (see the docstring).
    m64 = memories.double()
    k_gram, _ = uhop.fit_kernel(m64, epochs=epochs, lr=0.1, engine="gram")
    k_auto, _ = uhop.fit_kernel(m64, epochs=epochs, lr=0.1, engine="autograd")
    rel = float((k_gram.weight.detach() - k_auto.weight.detach()).norm() / k_auto.weight.detach().norm())
    return {
        "d": d, "M": M, "epochs": epochs, "lr_timed": lr,
        "gram_s": statistics.median(gram), "autograd_s": statistics.median(autograd),
        "ratio_autograd_over_gram": statistics.median(autograd) / statistics.median(gram),
        "rel_diff_W_float64_lr0.1": rel,
        "gram_all_s": gram, "autograd_all_s": autograd,
    }


def _slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def growth(sizes_M, fixed_d, sizes_d, fixed_M, epochs, repeats):
    rows = []
    for axis, values in (("M", sizes_M), ("d", sizes_d)):
        for v in values:
            M, d = (v, fixed_d) if axis == "M" else (fixed_M, v)
            memories = torch.rand(M, d, generator=torch.Generator().manual_seed(v))
            # Per-step cost: difference of N and 0 epochs removes the one-off set-up and
            # materialisation, which are not part of the per-step growth law.
            for engine in ("gram", "autograd"):
                full = statistics.median(_time_fit(memories, engine, epochs, 0.1, repeats))
                setup = statistics.median(_time_fit(memories, engine, 0, 0.1, repeats))
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
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.quick:
        head = headline(d=64, M=16, epochs=5, repeats=1, lr=1.0)
        rows, slopes = growth([8, 16], 32, [16, 32], 8, epochs=3, repeats=1)
    else:
        head = headline(d=3072, M=200, epochs=100, repeats=3, lr=1.0)
        rows, slopes = growth([50, 100, 200, 400], 784, [256, 784, 1568, 3072], 100, epochs=20, repeats=3)
    prov = collect_provenance()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {prov['machine']['platform']}")
    print(f"Stage I, d={head['d']} M={head['M']} N={head['epochs']}: autograd {head['autograd_s']:.3f} s, "
          f"gram {head['gram_s']:.3f} s -> ratio {head['ratio_autograd_over_gram']:.1f}x "
          f"(target >= 10x); rel. diff of W (float64) {head['rel_diff_W_float64_lr0.1']:.2e}")
    for key, value in slopes.items():
        print(f"log-log slope {key}: {value:.2f}")
    for r in rows:
        print(f"  {r['engine']:8s} M={r['M']:5d} d={r['d']:5d} per step {r['per_step_s'] * 1e3:9.3f} ms")
    if args.json:
        result = {"headline": head, "growth": rows, "slopes": slopes, "quick": args.quick}
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        write_manifest(args.json + ".manifest.json", command="python " + " ".join(sys.argv),
                       parameters=vars(args), wall_time_s=time.perf_counter() - start)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
