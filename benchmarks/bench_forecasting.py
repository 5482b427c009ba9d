"""Forecasting throughput on CPU: training windows per second per variant, and U-Hop's inner-loop overhead.

For every (channel count, horizon) of Table 8 -- ETTh1 and ETTm1 have the same shapes (7 channels), WTH 12 --
and every trained variant (``stanhop``, ``stanhop_uhop``,
``linear``), time full training steps -- for U-Hop ``inner_steps`` separation-loss SGD steps on the kernels
(Algorithm 2, line 4) then the Adam step on the MAE -- on random data of the right shape (B, input_len, C)
(the data's values do not change the cost).  Reported per cell: training windows/s, the inner loop's share
of U-Hop's step time and the U-Hop / plain slowdown, plus an estimated epoch time for the CPU budget:
``train windows / windows-per-s + validation windows / eval-windows-per-s``.

A second table times a STanHop step with the learnable-alpha entmax (bisection) at 100 iterations (the
float64 default, and the float32 default before it became dtype-aware) against ``uhop.nn``'s float32
default of 30 (float32 resolution is reached after about 24 halvings).

Usage::

    python benchmarks/bench_forecasting.py [--quick] [--d-model 64] [--threads 1] [--steps 4] [--json PATH]

``--quick`` times one tiny cell (d_model 16) in a few seconds.  ``--json PATH`` writes the results and a
provenance manifest ``PATH.manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from uhop.experiments.forecasting import ForecastConfig, build_model
from uhop.nn import SeparationModule, kernel_parameters, separation_step
from uhop.provenance import atomic_write_text, write_manifest

#: channels and full training-window counts (stanhop protocol, input 96) per dataset; the count depends on
#: the horizon: rows - input_len - horizon + 1.
SHAPES = {"ETTh1": (7, 8640), "ETTm1": (7, 34560), "WTH": (12, 20160)}


def _time_steps(cfg: ForecastConfig, n_vars: int, steps: int, bisect_iters: int | None = None) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg, n_vars)
    for module in model.modules():
        if isinstance(module, SeparationModule):
            module.bisect_iters = bisect_iters
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    kparams = kernel_parameters(model) if cfg.variant == "stanhop_uhop" else []
    kopt = torch.optim.SGD(kparams, lr=cfg.kernel_lr) if kparams else None
    x = torch.randn(cfg.batch_size, cfg.input_len, n_vars)
    y = torch.randn(cfg.batch_size, cfg.horizon, n_vars)
    step_times, inner_times = [], []
    for i in range(steps + 1):  # the first step is a warm-up
        t0 = time.perf_counter()
        if kopt is not None:
            for _ in range(cfg.inner_steps):
                separation_step(model, x, kopt)
        t1 = time.perf_counter()
        loss = F.l1_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i:
            step_times.append(t2 - t0)
            inner_times.append(t1 - t0)
    model.eval()
    xe = torch.randn(cfg.eval_batch_size, cfg.input_len, n_vars)
    with torch.no_grad():
        model(xe)
        t0 = time.perf_counter()
        model(xe)
        eval_s = time.perf_counter() - t0
    step = statistics.median(step_times)
    return {"windows_per_s": cfg.batch_size / step, "step_s": step, "inner_s": statistics.median(inner_times),
            "eval_windows_per_s": cfg.eval_batch_size / eval_s,
            "params": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny cell, for the test suite")
    parser.add_argument("--d-model", type=int, default=64, help="embedding dimension (paper: 256)")
    parser.add_argument("--d-ff", type=int, default=None, help="MLP width (default 2 x d_model)")
    parser.add_argument("--input-len", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per cell (median reported)")
    parser.add_argument("--max-train-windows", type=int, default=1024, help="cap used for the epoch estimate")
    parser.add_argument("--max-val-windows", type=int, default=256, help="cap used for the epoch estimate")
    parser.add_argument("--eval-batch", type=int, default=32, help="batch size of the timed evaluation pass")
    parser.add_argument("--json", default=None, help="write results (and PATH.manifest.json) here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    d_model = 16 if args.quick else args.d_model
    d_ff = args.d_ff or 2 * d_model
    base = ForecastConfig(d_model=d_model, d_ff=d_ff, n_heads=2 if args.quick else 4, factor=3 if args.quick else 10,
                          input_len=args.input_len, eval_batch_size=16 if args.quick else args.eval_batch)
    shapes = [("ETTh1", 96)] if args.quick else [(d, h) for d in ("ETTh1", "WTH") for h in (96, 192, 336, 720)]
    variants = ("stanhop", "stanhop_uhop", "linear")
    steps = 1 if args.quick else args.steps
    rows = []
    for shape_of, horizon in shapes:
        n_vars = SHAPES[shape_of][0]
        per = {}
        for variant in variants:
            cfg = replace(base, dataset=shape_of, horizon=horizon, variant=variant)
            per[variant] = _time_steps(cfg, n_vars, steps)
        same = [d for d in SHAPES if SHAPES[d][0] == n_vars] if not args.quick else [shape_of]
        for dataset, variant in [(d, v) for d in same for v in variants]:
            available = SHAPES[dataset][1] - args.input_len - horizon + 1
            m = per[variant]
            train_w = min(available, args.max_train_windows)
            epoch_s = train_w / m["windows_per_s"] + args.max_val_windows / m["eval_windows_per_s"]
            row = {"dataset": dataset, "horizon": horizon, "variant": variant, "n_vars": n_vars, "timed_as": shape_of,
                   "windows_per_s": round(m["windows_per_s"], 2), "step_s": round(m["step_s"], 4),
                   "eval_windows_per_s": round(m["eval_windows_per_s"], 1), "params": m["params"],
                   "train_windows_available": available,
                   "est_epoch_s_capped": round(epoch_s, 1),
                   "est_epoch_s_all_windows": round(available / m["windows_per_s"], 1)}
            if variant == "stanhop_uhop":
                row["inner_share"] = round(m["inner_s"] / m["step_s"], 3)
                row["slowdown_vs_stanhop"] = round(m["step_s"] / per["stanhop"]["step_s"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)

    # learnable-alpha entmax: 100 bisection iterations vs the float32 default (None -> 30)
    bisect = []
    for iters in (100, None):
        m = _time_steps(replace(base, variant="stanhop", horizon=96), 7, max(steps, 2), bisect_iters=iters)
        bisect.append({"bisect_iters": iters or "default (30 in float32)", "windows_per_s": round(m["windows_per_s"], 2)})
        print(json.dumps(bisect[-1]), flush=True)
    result = {"config": {"d_model": d_model, "d_ff": d_ff, "n_heads": base.n_heads, "factor": base.factor,
                         "input_len": args.input_len, "batch_size": base.batch_size, "threads": args.threads,
                         "steps": steps, "max_train_windows": args.max_train_windows,
                         "max_val_windows": args.max_val_windows, "eval_batch": base.eval_batch_size,
                         "quick": args.quick},
              "cells": rows, "bisect": bisect}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        write_manifest(args.json + ".manifest.json", command=" ".join([sys.executable, *sys.argv]),
                       parameters=result["config"], wall_time_s=time.perf_counter() - start, device="cpu")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
