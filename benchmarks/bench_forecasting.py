"""Forecasting throughput on CPU: STanHop training and evaluation windows per second, before and after the
speed work, U-Hop's slowdown, and a same-run matmul throughput so that machines can be compared.

For (channel count, horizon) cells of Table 8 -- ETTh1 and ETTm1 have the same shapes (7 channels), WTH 12 --
time full training steps on random data of the right shape (the values do not change the cost):

* ``stanhop`` / ``stanhop_uhop`` -- the package as it is: Newton alpha-entmax (``uhop.entmax_solver``),
  uniform-mask dropout (``uhop.nn.dropout``), fused Adam; U-Hop steps include ``inner_steps`` separation-loss
  SGD steps on the kernels (Algorithm 2, line 4, a no-grad forward of an independent batch) before the Adam
  step on the MAE;
* ``*_legacy`` -- the same models on the code path before the speed work, rebuilt in this run: entmax's
  30-step float32 bisection (``solver="bisect"``), ``torch.nn.Dropout``, unfused Adam, the first decoder layer
  run on every window in evaluation and in U-Hop's inner pass (``share_first_decoder_layer = False``);
* ``linear`` -- the shared linear baseline.

Cases are timed in interleaved rounds (one step of each per round, medians reported), so machine load hits
all of them alike.  Evaluation is timed at the trainer's evaluation batch (256 windows, no gradients).
``matmul_gflops`` is a float32 1024^3 ``torch.mm`` on the same threads, measured in the same run: divide a
windows/s figure by it to compare machines.

Usage::

    python benchmarks/bench_forecasting.py [--quick] [--d-model 64] [--threads 1] [--steps 5] [--cells ETTh1:96,...]
        [--trained DIR [--trained-cells ETTh1:96,...]] [--allocator ETTm1:720:stanhop_uhop,... [--allocator-legacy]] [--skip-main]
        [--inner-batches 8,4] [--json PATH]

``--inner-batches 8,4`` also times U-Hop with Algorithm 2's Stage-I batch ``B_1`` smaller than the training
batch ``B_2`` (the paper gives one batch size for forecasting and the converged tier uses it for both); each
adds ``uhop_slowdown_b1_<B_1>`` to the cell.

``--trained DIR`` also times **trained** networks of the converged tier (their ``best.pt`` in ``DIR``, e.g.
``_build/forecasting/converged_checkpoints``) on real windows, new code path against legacy on the same weights:
trained networks attend much more sparsely than fresh ones, which changes the entmax's cost.

``--allocator DATASET:HORIZON:VARIANT,...`` compares glibc's default malloc settings with
``uhop.allocator.retain_freed_memory`` (each setting in its own process, interleaved rounds): windows/s, minor
page faults per evaluation pass, and whether both settings compute the same bits; with ``--trained DIR`` it uses
the lowest-seed checkpoint of a cell where there is one.  ``--allocator-legacy`` adds, in the same rounds, the
code path before the speed work with the default settings: how the package ran before, against how its command
line and notebook run it now (``as_run_*_speedup``).  ``--skip-main`` leaves out the fresh-network cells and
``--trained-cells ""`` the trained comparison.

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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from uhop.experiments.forecasting import ForecastConfig, build_model
from uhop.experiments.forecasting.data import Windows, load_splits
from uhop.nn import SeparationModule, kernel_parameters, separation_step
from uhop.nn.dropout import Dropout
from uhop.provenance import atomic_write_text, write_manifest

#: channels and training rows per dataset (stanhop protocol); windows = rows - input_len - horizon + 1.
SHAPES = {"ETTh1": (7, 8640), "ETTm1": (7, 34560), "WTH": (12, 20160)}


def _legacy(model: nn.Module) -> nn.Module:
    """The pre-speed-work code path: bisection entmax, torch's dropout and the first decoder layer run on every
    window in evaluation and in Algorithm 2's inner pass (same weights)."""
    model.share_first_decoder_layer = False
    for module in model.modules():
        if isinstance(module, SeparationModule):
            module.solver = "bisect"
        for name, child in module.named_children():
            if isinstance(child, Dropout):
                setattr(module, name, nn.Dropout(child.p))
    return model


class _Case:
    def __init__(self, cfg: ForecastConfig, n_vars: int, legacy: bool, eval_batch: int, data=None, weights=None):
        torch.manual_seed(0)
        self.model = build_model(cfg, n_vars)
        if weights is not None:
            self.model.load_state_dict(weights)
        if legacy:
            _legacy(self.model)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=not legacy)
        kparams = kernel_parameters(self.model) if cfg.variant == "stanhop_uhop" else []
        self.kopt = torch.optim.SGD(kparams, lr=cfg.kernel_lr) if kparams else None
        self.inner_steps = cfg.inner_steps
        self.batch = cfg.batch_size
        if data is None:  # random data of the right shapes (the values barely change the cost at initialisation)
            data = (torch.randn(cfg.batch_size, cfg.input_len, n_vars), torch.randn(cfg.batch_size, cfg.input_len, n_vars),
                    torch.randn(cfg.batch_size, cfg.horizon, n_vars), torch.randn(eval_batch, cfg.input_len, n_vars))
        self.x, self.xi, self.y, self.xe = data
        if cfg.inner_batch_size is not None:  # Algorithm 2's B_1 < B_2: the first B_1 windows of the inner batch
            self.xi = self.xi[:cfg.inner_batch_size]
        self.steps, self.inner, self.evals = [], [], []

    def step(self):
        t0 = time.perf_counter()
        if self.kopt is not None:
            for _ in range(self.inner_steps):
                separation_step(self.model, self.xi, self.kopt)
        t1 = time.perf_counter()
        loss = F.l1_loss(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        t2 = time.perf_counter()
        self.steps.append(t2 - t0)
        self.inner.append(t1 - t0)

    def evaluate(self):
        self.model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            self.model(self.xe)
            self.evals.append(time.perf_counter() - t0)
        self.model.train()

    def summary(self) -> dict:
        step = statistics.median(self.steps[1:])  # the first call is a warm-up
        return {"windows_per_s": round(self.batch / step, 2), "step_s": round(step, 5),
                "inner_s": round(statistics.median(self.inner[1:]), 5),
                "eval_windows_per_s": round(len(self.xe) / statistics.median(self.evals[1:]), 1),
                "params": sum(p.numel() for p in self.model.parameters())}


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """float32 ``n x n`` times ``n x n`` matrix product throughput on the current threads (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _parse_cells(parser, text: str) -> list[tuple[str, int]]:
    cells = []
    for cell in text.split(","):
        name, _, horizon = cell.partition(":")
        if name not in SHAPES or not horizon.isdigit():
            parser.error(f"bad cell {cell!r}: use DATASET:HORIZON with DATASET in {sorted(SHAPES)}")
        cells.append((name, int(horizon)))
    return cells


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _real_windows(cfg: ForecastConfig, eval_batch: int):
    """Fixed, evenly spread real windows: a training batch, an independent inner batch and an evaluation batch."""
    splits = load_splits(cfg)
    train, val = splits.dataset("train", cfg.horizon), splits.dataset("val", cfg.horizon)

    def take(dataset, n, offset):
        starts = (torch.linspace(0, len(dataset) - 1, n).long() + offset) % len(dataset)
        return Windows(dataset, starts, "cpu").batch(starts)

    x, y = take(train, cfg.batch_size, 0)
    xi, _ = take(train, cfg.batch_size, 7)
    xe, _ = take(val, eval_batch, 0)
    return (x, xi, y, xe), splits.train.shape[1]


def _lowest_seed_checkpoint(folder: Path, dataset: str, horizon: int, variant: str) -> Path | None:
    """``best.pt`` of the lowest seed of one converged-tier cell and variant under ``folder``, or ``None``."""
    hits = sorted(folder.glob(f"{dataset}_h{horizon}_{variant}_s*/best.pt"),
                  key=lambda f: int(f.parent.name.split("_s")[-1].split("_")[0]))
    return hits[0] if hits else None


def trained_rows(folder: Path, cells, steps: int, eval_batch: int, inner_batches=()) -> list[dict]:
    """Time trained networks of the converged tier (their ``best.pt`` under ``folder``, lowest seed of each
    variant) on real windows, against the legacy code path on the same weights.  Trained networks attend far
    more sparsely than freshly initialised ones, and the entmax cost depends on that."""
    rows = []
    for dataset, horizon in cells:
        found = {}
        for variant in ("stanhop", "stanhop_uhop"):
            hit = _lowest_seed_checkpoint(folder, dataset, horizon, variant)
            if hit is not None:
                found[variant] = torch.load(hit, map_location="cpu", weights_only=False)
        if len(found) < 2:
            print(f"trained {dataset}-{horizon}: no best.pt of both variants under {folder}; skipped", flush=True)
            continue
        cases = {}
        data, n_vars = _real_windows(ForecastConfig(**found["stanhop"]["config"]), eval_batch)  # both variants
        for variant, ckpt in found.items():
            cfg = ForecastConfig(**ckpt["config"])
            for legacy in (False, True):
                cases[variant + ("_legacy" if legacy else "")] = _Case(cfg, n_vars, legacy, eval_batch, data, ckpt["model"])
            if variant == "stanhop_uhop":
                cases.update(_b1_cases(cfg, n_vars, inner_batches, eval_batch, data, ckpt["model"]))
        rows.append(_timed_cells(cases, steps, {"shape": dataset, "horizon": horizon, "n_vars": n_vars,
                                                "seed": cfg.seed, "epoch": found["stanhop"].get("epoch")}))
    return rows


#: Case-name prefix of U-Hop with Stage-I batch B_1 smaller than the training batch (``stanhop_uhop_b1_4``).
_B1_CASE = "stanhop_uhop_b1_"


def _b1_cases(cfg: ForecastConfig, n_vars: int, inner_batches, eval_batch: int, data=None, weights=None) -> dict:
    """U-Hop cases of ``cfg`` with Algorithm 2's Stage-I batch ``B_1`` set to each of ``inner_batches``."""
    return {f"{_B1_CASE}{b1}": _Case(replace(cfg, inner_batch_size=b1), n_vars, False, eval_batch, data, weights)
            for b1 in inner_batches}


def _timed_cells(cases: dict, steps: int, row: dict) -> dict:
    for _ in range(steps + 1):  # interleaved rounds
        for case in cases.values():
            case.step()
            case.evaluate()
    m = {name: case.summary() for name, case in cases.items()}
    row = {**row, **m}
    row["speedup_train"] = round(m["stanhop"]["windows_per_s"] / m["stanhop_legacy"]["windows_per_s"], 2)
    row["speedup_eval"] = round(m["stanhop"]["eval_windows_per_s"] / m["stanhop_legacy"]["eval_windows_per_s"], 2)
    row["uhop_slowdown"] = round(m["stanhop_uhop"]["step_s"] / m["stanhop"]["step_s"], 3)
    row["uhop_slowdown_legacy"] = round(m["stanhop_uhop_legacy"]["step_s"] / m["stanhop_legacy"]["step_s"], 3)
    row["uhop_inner_share"] = round(m["stanhop_uhop"]["inner_s"] / m["stanhop_uhop"]["step_s"], 3)
    for name in m:  # U-Hop with a smaller Stage-I batch (--inner-batches)
        if name.startswith(_B1_CASE):
            row["uhop_slowdown_b1_" + name[len(_B1_CASE):]] = round(m[name]["step_s"] / m["stanhop"]["step_s"], 3)
    print(json.dumps({k: row[k] for k in ("shape", "horizon", "speedup_train", "speedup_eval", "uhop_slowdown",
                                          "uhop_slowdown_legacy", "uhop_inner_share")}),
          f"plain {m['stanhop']['windows_per_s']} w/s (legacy {m['stanhop_legacy']['windows_per_s']}), "
          f"eval {m['stanhop']['eval_windows_per_s']} w/s", flush=True)
    return row


def _allocator_child(spec: dict) -> dict:
    """One setting of the allocator comparison, in its own process (malloc settings are process-wide): a
    settling evaluation pass, ``passes`` timed passes over ``eval_windows`` windows in batches of ``eval_batch``,
    then ``steps`` timed training steps.  Reports throughput, minor page faults per pass and a digest of every
    number computed (predictions and losses), so the parent can check the settings agree bit for bit."""
    import hashlib
    import resource

    from uhop.allocator import retain_freed_memory

    torch.set_num_threads(spec["threads"])
    applied = retain_freed_memory() if spec["retain"] else False
    ckpt = torch.load(spec["checkpoint"], map_location="cpu", weights_only=False) if spec["checkpoint"] else None
    cfg = ForecastConfig(**(ckpt["config"] if ckpt else spec["config"]))
    n_vars = SHAPES[cfg.dataset][0]
    data = _real_windows(cfg, spec["eval_windows"])[0] if spec["real"] else None
    case = _Case(cfg, n_vars, spec.get("legacy", False), spec["eval_windows"], data, ckpt["model"] if ckpt else None)
    digest = hashlib.sha256()

    def eval_pass(record):
        case.model.eval()
        with torch.no_grad():
            outs = [case.model(chunk) for chunk in case.xe.split(spec["eval_batch"])]
        case.model.train()
        if record:
            digest.update(torch.cat(outs).numpy().tobytes())

    eval_pass(True)  # settles the heap (and is the digest of the loaded weights' predictions)
    faults0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(spec["passes"]):
        eval_pass(False)
    eval_s = (time.perf_counter() - t0) / spec["passes"]
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / spec["passes"]
    for _ in range(spec["steps"] + 1):
        case.step()
    eval_pass(True)  # predictions after the training steps: every gradient and update must agree too
    return {"retain": spec["retain"], "legacy": spec.get("legacy", False), "applied": applied,
            "eval_windows_per_s": len(case.xe) / eval_s,
            "faults_per_eval_pass": faults, "step_windows_per_s": case.batch / statistics.median(case.steps[1:]),
            "digest": digest.hexdigest(), "epoch": ckpt.get("epoch") if ckpt else None, "seed": cfg.seed}


def allocator_rows(cells, base: ForecastConfig, folder: Path | None, rounds: int, eval_batch: int,
                   eval_windows: int, passes: int, steps: int, threads: int, real: bool,
                   legacy: bool = False) -> list[dict]:
    """Evaluation and training throughput with glibc's default malloc settings against
    ``uhop.allocator.retain_freed_memory``: each (cell, setting) runs in a fresh process, settings alternate in
    interleaved rounds, medians are reported.  A cell ``DATASET:HORIZON:VARIANT`` uses the lowest-seed trained
    checkpoint under ``folder`` when there is one, else a freshly initialised model of ``base``'s size.

    ``legacy`` adds a third setting, the code path before the speed work (:func:`_legacy`) with the default
    settings -- how the package ran before -- so that ``as_run_*_speedup`` compares it with the package as its
    command line and notebook run it now (current code, ``retain_freed_memory``), side by side in one run;
    ``code_*_speedup`` is the code alone (both with the default settings)."""
    import subprocess

    settings = ["default", "retain"] + (["legacy"] if legacy else [])
    rows = []
    for dataset, horizon, variant in cells:
        hit = _lowest_seed_checkpoint(folder, dataset, horizon, variant) if folder else None
        config = {k: v for k, v in vars(replace(base, dataset=dataset, horizon=horizon, variant=variant)).items()}
        runs = {name: [] for name in settings}
        for r in range(rounds):
            for name in settings[r % len(settings):] + settings[:r % len(settings)]:  # each setting leads in turn
                spec = {"retain": name == "retain", "legacy": name == "legacy", "checkpoint": str(hit) if hit else None,
                        "config": config, "real": real, "eval_windows": eval_windows, "eval_batch": eval_batch,
                        "passes": passes, "steps": steps, "threads": threads}
                out = subprocess.run([sys.executable, __file__, "--allocator-child", json.dumps(spec)],
                                     capture_output=True, text=True, check=True)
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {name: {k: statistics.median(run[k] for run in got) for k in
                      ("eval_windows_per_s", "faults_per_eval_pass", "step_windows_per_s")}
               for name, got in runs.items()}
        row = {"dataset": dataset, "horizon": horizon, "variant": variant, "trained": hit is not None,
               "seed": runs["retain"][0]["seed"], "epoch": runs["retain"][0]["epoch"], "rounds": rounds,
               "applied": all(run["applied"] for run in runs["retain"]),
               # the legacy path solves the entmax another way: only the two malloc settings must agree
               "identical": len({run["digest"] for name in ("default", "retain") for run in runs[name]}) == 1,
               **{f"{name}_{k}": round(v, 1) for name, m in med.items() for k, v in m.items()}}
        for kind, key in (("eval", "eval_windows_per_s"), ("train", "step_windows_per_s")):
            row[f"{kind}_speedup"] = round(med["retain"][key] / med["default"][key], 3)
            if legacy:
                row[f"code_{kind}_speedup"] = round(med["default"][key] / med["legacy"][key], 3)
                row[f"as_run_{kind}_speedup"] = round(med["retain"][key] / med["legacy"][key], 3)
        print(json.dumps({k: row[k] for k in ("dataset", "horizon", "variant", "trained", "identical", "eval_speedup",
                                              "train_speedup", "default_faults_per_eval_pass",
                                              "retain_faults_per_eval_pass", "as_run_eval_speedup",
                                              "as_run_train_speedup") if k in row}), flush=True)
        rows.append(row)
    return rows


def _parse_allocator_cells(parser, text: str) -> list[tuple[str, int, str]]:
    cells = []
    for cell in text.split(","):
        parts = cell.split(":")
        if len(parts) != 3 or parts[2] not in ("stanhop", "stanhop_uhop"):
            parser.error(f"bad allocator cell {cell!r}: use DATASET:HORIZON:VARIANT (VARIANT stanhop or stanhop_uhop)")
        (dataset, horizon), = _parse_cells(parser, ":".join(parts[:2]))
        cells.append((dataset, horizon, parts[2]))
    return cells


def _parse_inner_batches(parser, text: str, batch_size: int) -> list[int]:
    sizes = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if not item.isdigit() or not 1 <= int(item) <= batch_size:
            parser.error(f"bad --inner-batches entry {item!r}: a Stage-I batch from 1 to the training batch {batch_size}")
        sizes.append(int(item))
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny cell, for the test suite")
    parser.add_argument("--d-model", type=int, default=64, help="embedding dimension (paper: 256)")
    parser.add_argument("--d-ff", type=int, default=None, help="MLP width (default 2 x d_model)")
    parser.add_argument("--input-len", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per case (median reported)")
    parser.add_argument("--eval-batch", type=int, default=256, help="windows per timed evaluation pass")
    parser.add_argument("--cells", default="ETTh1:96,ETTh1:192,ETTh1:336,ETTh1:720,WTH:96,WTH:720",
                        help="comma-separated SHAPE:HORIZON cells to time (SHAPE: ETTh1 or WTH)")
    parser.add_argument("--trained", default=None, metavar="DIR",
                        help="also time trained networks: a folder of converged-tier checkpoints "
                             "(_build/forecasting/converged_checkpoints; needs UHOP_DATA for real windows)")
    parser.add_argument("--trained-cells", default="ETTh1:96,ETTm1:96,WTH:96,ETTh1:336",
                        help="DATASET:HORIZON cells for --trained (empty: none, e.g. to use --trained only for --allocator)")
    parser.add_argument("--trained-eval-batch", type=int, default=64, help="evaluation batch of the trained "
                        "cells (the converged tier's eval_batch_size)")
    parser.add_argument("--allocator", default=None, metavar="CELLS",
                        help="compare glibc's default malloc settings with uhop.allocator.retain_freed_memory on "
                             "DATASET:HORIZON:VARIANT cells (trained checkpoints from --trained when present)")
    parser.add_argument("--allocator-rounds", type=int, default=3, help="interleaved rounds per allocator cell")
    parser.add_argument("--allocator-windows", type=int, default=128, help="windows per timed evaluation pass")
    parser.add_argument("--allocator-legacy", action="store_true", help="also time the code path before the speed "
                        "work with the default malloc settings (how the package ran before) in the allocator cells")
    parser.add_argument("--inner-batches", default="", metavar="B1,...",
                        help="also time U-Hop with these Stage-I batches B_1 (< the training batch 16), e.g. 8,4")
    parser.add_argument("--skip-main", action="store_true", help="time only --trained / --allocator cells")
    parser.add_argument("--allocator-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="write results (and PATH.manifest.json) here")
    args = parser.parse_args(argv)
    if args.allocator_child:
        print(json.dumps(_allocator_child(json.loads(args.allocator_child))))
        return 0
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    d_model = 16 if args.quick else args.d_model
    d_ff = args.d_ff or 2 * d_model
    base = ForecastConfig(d_model=d_model, d_ff=d_ff, n_heads=2 if args.quick else 4, factor=3 if args.quick else 10,
                          input_len=args.input_len, lr=1e-3)
    shapes = [("ETTh1", 96)] if args.quick else _parse_cells(parser, args.cells)
    inner_batches = _parse_inner_batches(parser, args.inner_batches, base.batch_size)
    eval_batch = 16 if args.quick else args.eval_batch
    steps = 2 if args.quick else args.steps
    gflops_before = matmul_gflops(256 if args.quick else 1024)
    rows = []
    for shape_of, horizon in [] if args.skip_main else shapes:
        n_vars = SHAPES[shape_of][0]
        cases = {}
        for variant in ("stanhop", "stanhop_uhop", "linear"):
            cfg = replace(base, dataset=shape_of, horizon=horizon, variant=variant)
            cases[variant] = _Case(cfg, n_vars, legacy=False, eval_batch=eval_batch)
            if variant != "linear":
                cases[variant + "_legacy"] = _Case(cfg, n_vars, legacy=True, eval_batch=eval_batch)
            if variant == "stanhop_uhop":
                cases.update(_b1_cases(cfg, n_vars, inner_batches, eval_batch))
        rows.append(_timed_cells(cases, steps, {"shape": shape_of, "horizon": horizon, "n_vars": n_vars}))
    trained = []
    if args.trained and args.trained_cells:
        trained = trained_rows(Path(args.trained), _parse_cells(parser, args.trained_cells), steps, args.trained_eval_batch,
                               inner_batches)
    allocator = []
    if args.allocator or args.quick:
        cells = _parse_allocator_cells(parser, args.allocator) if args.allocator else [("ETTh1", 96, "stanhop")]
        allocator = allocator_rows(cells, base, Path(args.trained) if args.trained else None,
                                   1 if args.quick else args.allocator_rounds, eval_batch if args.quick else 64,
                                   eval_batch if args.quick else args.allocator_windows, 1 if args.quick else 2,
                                   steps, args.threads, real=not args.quick, legacy=args.allocator_legacy or args.quick)
    gflops = (gflops_before + matmul_gflops(256 if args.quick else 1024)) / 2
    for row in rows + trained:
        row["stanhop_windows_per_s_per_matmul_gflops"] = round(row["stanhop"]["windows_per_s"] / gflops, 3)
    result = {"config": {"d_model": d_model, "d_ff": d_ff, "n_heads": base.n_heads, "factor": base.factor,
                         "input_len": args.input_len, "batch_size": base.batch_size, "threads": args.threads,
                         "steps": steps, "eval_batch": eval_batch, "quick": args.quick,
                         "trained": args.trained, "trained_eval_batch": args.trained_eval_batch,
                         "allocator": args.allocator, "allocator_rounds": args.allocator_rounds,
                         "allocator_windows": args.allocator_windows, "allocator_legacy": args.allocator_legacy,
                         "skip_main": args.skip_main,
                         "inner_batches": inner_batches},
              "matmul_gflops": round(gflops, 2), "cells": rows, "trained": trained, "allocator": allocator}
    print(f"matmul {gflops:.1f} GFLOP/s; done in {time.perf_counter() - start:.1f} s")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        write_manifest(args.json + ".manifest.json", command=" ".join([sys.executable, *sys.argv]),
                       parameters=result["config"], wall_time_s=time.perf_counter() - start, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
