"""The command line, ``python -m uhop.experiments.forecasting train | retest`` (see :func:`main`)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from ..._checks import check_choice
from ...allocator import retain_freed_memory
from ...provenance import atomic_write_text, write_manifest
from .config import VARIANTS, config_from_parameters, run_key
from .data import load_splits
from .evaluation import retest
from .results import load_runs
from .training import train_forecaster

__all__ = ["main"]


def _train_command(args) -> int:
    """``train``: some (variant, seed) runs of one ``notebooks/full_size.yml`` entry, one at a time."""
    from ..notebook import full_size_entry, notebook_path

    params = dict(full_size_entry(args.run, "forecasting").get("parameters") or {})
    base, variants, seeds = config_from_parameters(params)
    if args.variants:
        variants = [check_choice(v.strip(), "variant", VARIANTS) for v in args.variants.split(",") if v.strip()]
    if args.seeds:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out_dir = notebook_path(params["out_dir"]) if params.get("out_dir") else None
    ckpt = notebook_path(params["checkpoint_dir"]) if params.get("checkpoint_dir") else None
    splits = load_splits(base)
    for seed in seeds:
        for variant in variants:
            config = replace(base, variant=variant, seed=seed)
            if out_dir and (Path(out_dir) / f"{run_key(config)}.json").exists() and not args.force:
                print(f"{run_key(config)}: already done", flush=True)
                continue
            r = train_forecaster(config, device=args.device, splits=splits, out_dir=out_dir,
                                 checkpoint_dir=ckpt or None, progress=args.progress)
            print(f"{r['key']}: test MSE {r['test_mse']:.4f} MAE {r['test_mae']:.4f}, {r['epochs_run']} epochs "
                  f"(best {r['best_epoch']}), {r['wall_time_total_s']:.0f} s"
                  + (f" in {r['processes']} processes" if r["processes"] > 1 else ""), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m uhop.experiments.forecasting retest | train``: :func:`retest` over committed runs, written as
    JSON + manifest (the chapter's full-test check); ``train`` runs chosen variants and seeds of one
    ``notebooks/full_size.yml`` entry with exactly its settings (what the notebook would run), skipping finished
    runs and resuming interrupted ones -- for running a tier run by run in the background."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m uhop.experiments.forecasting")
    sub = parser.add_subparsers(dest="command", required=True)
    from ..notebook import add_train_parser

    t = add_train_parser(sub, "forecasting")
    t.add_argument("--force", action="store_true", help="re-run finished runs")
    t.add_argument("--progress", action="store_true", help="tqdm bars")
    p = sub.add_parser("retest", help="re-test finished runs from their best.pt on the full test split")
    p.add_argument("--runs", required=True, help="folder of run JSONs (results/forecasting/runs)")
    p.add_argument("--checkpoints", required=True, help="checkpoint_dir the runs used")
    p.add_argument("--cells", required=True, help="comma-separated DATASET_HORIZON, e.g. ETTh1_96,WTH_96")
    p.add_argument("--variants", default="stanhop,stanhop_uhop,linear,persistence")
    p.add_argument("--max-test-windows", type=int, default=0, help="0: the whole test split")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--drift-only", action="store_true", help="only load the weights and measure U-Hop's kernel drift")
    p.add_argument("--out", required=True, help="JSON to write (a manifest is written beside it)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        retain_freed_memory()  # bit-identical, faster long-horizon entmax solves (uhop/allocator.py)
    if args.command == "train":
        return _train_command(args)
    cells = {tuple(c.rsplit("_", 1)) for c in args.cells.split(",") if c}
    variants = {check_choice(v.strip(), "variant", VARIANTS) for v in args.variants.split(",") if v.strip()}
    chosen = [r for r in load_runs(args.runs)
              if (r["config"]["dataset"], str(r["config"]["horizon"])) in cells and r["config"]["variant"] in variants]
    if not chosen:
        parser.error(f"no run of {sorted(cells)} / {sorted(variants)} under {args.runs}")
    start = time.perf_counter()
    rows = retest(chosen, args.checkpoints, device=args.device, max_test_windows=args.max_test_windows or None,
                  test=not args.drift_only)
    for r in rows if not args.drift_only else []:
        print(f"{r['key']}: MSE {r['recorded_mse']:.4f} on {r['recorded_windows']} windows -> {r['mse']:.4f} on "
              f"{r['windows']} ({r['seconds']:.0f} s)", flush=True)
    atomic_write_text(args.out, json.dumps({"rows": rows}, indent=1) + "\n")
    write_manifest(args.out + ".manifest.json", command=" ".join(["python -m uhop.experiments.forecasting",
                                                                   *(argv if argv is not None else sys.argv[1:])]),
                   parameters=vars(args), wall_time_s=time.perf_counter() - start, device=args.device)
    return 0
