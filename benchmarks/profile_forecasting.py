"""Where a STanHop step spends its time: ``torch.profiler`` over a plain training step, U-Hop's inner step
(Algorithm 2, line 4) and an evaluation pass, on one forecasting cell.

The speed work of issue 17 started from this kind of table and the forecasting chapter's "Where the time went"
section quotes it.  Each phase is profiled over ``--steps`` repetitions after two warm-up calls; the table lists
the operators with the largest *self* CPU time (time spent in the operator itself, not in what it calls), their
share of the phase, and the call count per repetition, which shows dispatch overhead (many calls, little time
each) as plainly as heavy kernels.

Usage::

    python benchmarks/profile_forecasting.py [--cell ETTh1:96] [--d-model 64] [--threads 1] [--steps 5]
        [--trained CHECKPOINT.pt] [--legacy] [--phases train,inner,eval] [--top 15] [--d-ff 128] [--json PATH]

After each table it prints the phase's distance from its matrix products: the unprofiled time per call, the matrix
products' floating-point operations (counted by the profiler) and the time they would take at the rate of a large
``torch.mm`` measured in the same run, and the operator calls per call.  ``--json`` saves these numbers.

``--trained`` profiles a checkpoint of the converged tier (``best.pt``; its config decides the cell) on real
windows -- trained networks attend far more sparsely than fresh ones and the entmax's cost depends on it.
Without it a freshly initialised network runs on random data of the cell's shape.  ``--legacy`` profiles the code
path before the speed work (``bench_forecasting._legacy``: entmax's bisection, torch's dropout, the first decoder
layer on every window), where the learnable entmax was about 45% of a training step.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from uhop.allocator import retain_freed_memory
from uhop.experiments.forecasting import ForecastConfig, build_model
from uhop.nn import kernel_parameters, separation_step
from uhop.provenance import atomic_write_text, write_manifest

sys.path.insert(0, __file__.rsplit("/", 1)[0])
# benchmarks/ is not a package
from bench_forecasting import SHAPES, _legacy, _real_windows, matmul_gflops  # noqa: E402

PHASES = ("train", "inner", "eval")


def _phase_calls(model, cfg, data, legacy: bool = False):
    """One callable per phase: a plain Adam step on the MAE, one separation-loss SGD step on the kernels
    (U-Hop only) and a no-gradient evaluation pass."""
    x, xi, y, xe = data
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=not legacy)
    kparams = kernel_parameters(model)
    kopt = torch.optim.SGD(kparams, lr=cfg.kernel_lr) if kparams else None

    def train():
        loss = F.l1_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def inner():
        separation_step(model, xi, kopt)

    def evaluate():
        model.eval()
        with torch.no_grad():
            model(xe)
        model.train()

    return {"train": train, "inner": inner if kopt is not None else None, "eval": evaluate}


def profile_phase(call, steps: int):
    """``torch.profiler`` averages over ``steps`` calls of ``call`` (after two warm-up calls), with the floating-point
    operations of the matrix products counted."""
    for _ in range(2):
        call()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(steps):
            call()
    return prof.key_averages()


#: The matrix-product operators whose floating-point operations the profiler counts.
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_floor(call, averages, steps: int, gflops: float) -> dict:
    """How far a phase is from its matrix products: the unprofiled time per call (median of ``steps``), the matrix
    products' GFLOP per call and the time they would take at ``gflops`` (a large ``torch.mm``'s rate on the same
    threads), their share of the profiled operator time, and the operator calls per call (each a dispatch)."""
    import statistics
    import time

    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    rows = list(averages)
    flop = sum(e.flops for e in rows if e.key in MATMULS) / steps
    total = sum(e.self_cpu_time_total for e in rows)
    mm = sum(e.self_cpu_time_total for e in rows if e.key in MATMULS)
    wall = statistics.median(times)
    return {"wall_ms": wall * 1e3, "matmul_gflop": flop / 1e9, "matmul_floor_ms": flop / gflops / 1e6,
            "floor_share": flop / gflops / 1e9 / wall, "matmul_share_profiled": mm / total,
            "operator_calls": sum(e.count for e in rows) / steps}


def table(averages, steps: int, top: int) -> str:
    """The ``top`` operators by self CPU time: ms per repetition, share of the phase, calls per repetition."""
    rows = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    lines = [f"  {'operator':<44}{'ms/rep':>9}{'share':>8}{'calls/rep':>11}"]
    for e in rows[:top]:
        lines.append(f"  {e.key[:43]:<44}{e.self_cpu_time_total / 1e3 / steps:>9.2f}"
                     f"{e.self_cpu_time_total / total:>8.1%}{e.count / steps:>11.0f}")
    calls = sum(e.count for e in rows) / steps
    lines.append(f"  {'all operators':<44}{total / 1e3 / steps:>9.2f}{1:>8.0%}{calls:>11.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="ETTh1:96", help="DATASET:HORIZON of a fresh network")
    parser.add_argument("--variant", default="stanhop_uhop", choices=("stanhop", "stanhop_uhop"))
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--d-ff", type=int, default=None, help="MLP width (default 2 x d_model, as the CPU tiers)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--trained", help="a converged-tier checkpoint (best.pt) to profile on real windows")
    parser.add_argument("--legacy", action="store_true", help="the code path before the speed work")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's default malloc settings (the "
                        "command line and the notebook run with uhop.allocator.retain_freed_memory)")
    parser.add_argument("--json", default=None, help="write each phase's matrix-product floor (and a manifest) here")
    args = parser.parse_args(argv)
    phases = args.phases.split(",")
    if bad := sorted(set(phases) - set(PHASES)):
        parser.error(f"unknown phase(s) {bad}; choose from {PHASES}")
    torch.set_num_threads(args.threads)
    retained = False if args.default_malloc else retain_freed_memory()
    torch.manual_seed(0)
    if args.trained:
        ckpt = torch.load(args.trained, map_location="cpu", weights_only=False)
        cfg = ForecastConfig(**ckpt["config"])
        data, n_vars = _real_windows(cfg, args.eval_batch)
        model = build_model(cfg, n_vars)
        model.load_state_dict(ckpt["model"])
    else:
        name, _, horizon = args.cell.partition(":")
        if name not in SHAPES or not horizon.isdigit():
            parser.error(f"bad cell {args.cell!r}: use DATASET:HORIZON with DATASET in {sorted(SHAPES)}")
        cfg = replace(ForecastConfig(dataset=name, horizon=int(horizon), variant=args.variant), d_model=args.d_model,
                      d_ff=args.d_ff or 2 * args.d_model)
        n_vars = SHAPES[name][0]
        model = build_model(cfg, n_vars)
        data = (torch.randn(cfg.batch_size, cfg.input_len, n_vars), torch.randn(cfg.batch_size, cfg.input_len, n_vars),
                torch.randn(cfg.batch_size, cfg.horizon, n_vars), torch.randn(args.eval_batch, cfg.input_len, n_vars))
    if args.legacy:
        _legacy(model)
    calls = _phase_calls(model, cfg, data, args.legacy)
    gflops = matmul_gflops()
    print(f"{cfg.dataset}-{cfg.horizon} {cfg.variant} d_model {cfg.d_model}, d_ff {cfg.d_ff}, batch {cfg.batch_size}, "
          f"eval batch {args.eval_batch}, {args.threads} thread(s), {'trained' if args.trained else 'fresh'}, "
          f"{'legacy' if args.legacy else 'current'} code path, {'retained' if retained else 'default'} malloc")
    floors = {}
    for phase in phases:
        if calls[phase] is None:
            print(f"\n{phase}: skipped (no U-Hop kernels in {cfg.variant})")
            continue
        averages = profile_phase(calls[phase], args.steps)
        f = floors[phase] = matmul_floor(calls[phase], averages, args.steps, gflops)
        print(f"\n{phase}:\n" + table(averages, args.steps, args.top), flush=True)
        print(f"  unprofiled {f['wall_ms']:.1f} ms per call; matrix products {f['matmul_gflop']:.3f} GFLOP = "
              f"{f['matmul_floor_ms']:.1f} ms at {gflops:.0f} GFLOP/s ({f['floor_share']:.0%} of the call); "
              f"{f['operator_calls']:.0f} operator calls")
    if args.json:
        result = {"config": {"cell": f"{cfg.dataset}:{cfg.horizon}", "variant": cfg.variant, "d_model": cfg.d_model,
                             "d_ff": cfg.d_ff, "batch_size": cfg.batch_size, "eval_batch": args.eval_batch,
                             "threads": args.threads, "steps": args.steps, "trained": args.trained,
                             "legacy": args.legacy, "retain_freed_memory": retained},
                  "matmul_gflops": gflops, "phases": floors}
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        write_manifest(args.json + ".manifest.json", command=" ".join([sys.executable, *sys.argv]),
                       parameters=result["config"], device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
