"""Reading finished runs back: one row per run, means over seeds, the paired U-Hop minus STanHop differences,
which runs of a ``notebooks/full_size.yml`` tier are done, and Table 8 as a table."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from .config import PAPER_TABLE8, VARIANT_LABELS, config_from_parameters, run_key

__all__ = ["load_runs", "load_results", "summarize", "paired_differences", "paired_by_seed", "against_tier",
           "pooled_difference", "pooled_by_stopping", "stopping_summary", "time_split", "run_wall_times", "tier_status",
           "paper_table", "benchmark_table"]

_ROW = ("dataset", "horizon", "variant", "seed", "input_len", "epochs", "d_model", "max_train_windows", "loss",
        "max_test_windows")


def _row(result: dict):
    c = result["config"]
    row = {k: c[k] for k in _ROW}
    row.update(label=VARIANT_LABELS[c["variant"]], test_mse=result["test_mse"], test_mae=result["test_mae"],
               val_mse=result["val_mse"], epochs_run=result["epochs_run"], best_epoch=result["best_epoch"],
               seconds_per_epoch=result["seconds_per_epoch"], train_windows_per_s=result["train_windows_per_s"],
               device=result["device"], key=result["key"])
    return row


def load_runs(path: str | os.PathLike) -> list[dict]:
    """The finished-run dicts of :func:`train_forecaster` (``*.json`` except manifests) under ``path``,
    recursively, in file-name order (an empty list for a missing folder)."""
    runs = []
    for f in sorted(Path(path).rglob("*.json")):
        if f.name.endswith(".manifest.json"):
            continue
        data = json.loads(f.read_text())
        if isinstance(data, dict) and "config" in data and "test_mse" in data:
            runs.append(data)
    return runs


def load_results(runs: str | os.PathLike | Sequence[dict]):
    """Run results as a pandas DataFrame, one row per run: from a folder (:func:`load_runs`) or from the
    run dicts themselves."""
    import pandas as pd

    if isinstance(runs, (str, os.PathLike)):
        runs = load_runs(runs)
    rows = [_row(r) for r in runs]
    return pd.DataFrame(rows, columns=[*_ROW, "label", "test_mse", "test_mae", "val_mse", "epochs_run", "best_epoch",
                                       "seconds_per_epoch", "train_windows_per_s", "device", "key"])


def summarize(results):
    """Mean and standard deviation over seeds of test MSE/MAE per (dataset, horizon, variant, setting);
    ``results``: a list of result dicts or the DataFrame of :func:`load_results`.  ``full_test`` is False for
    smoke runs tested on a subsample of the test split (``max_test_windows``): those are not results."""
    import pandas as pd

    df = results if isinstance(results, pd.DataFrame) else pd.DataFrame([_row(r) for r in results])
    keys = ["dataset", "horizon", "variant", "input_len", "epochs", "d_model", "max_train_windows", "loss",
            "max_test_windows"]
    g = df.fillna({"max_train_windows": -1, "max_test_windows": -1}).groupby(keys, sort=True)
    out = g.agg(seeds=("seed", "nunique"), mse=("test_mse", "mean"), mse_std=("test_mse", "std"),
                mae=("test_mae", "mean"), mae_std=("test_mae", "std")).reset_index()
    out["full_test"] = out["max_test_windows"] == -1
    for col in ("max_train_windows", "max_test_windows"):
        out[col] = out[col].astype(object).where(out[col] != -1, None)
    return out


def paired_differences(results):
    """Per (dataset, horizon): U-Hop minus plain STanHop test MSE and MAE, paired by seed (same initial weights,
    windows and batch order), as mean with a 95% t interval over seeds and a sign count, beside Table 8's
    difference.  ``results``: the DataFrame of :func:`load_results` (or run dicts).

    ``verdict`` is ``"U-Hop better"`` / ``"U-Hop worse"`` when the MSE interval excludes 0, else ``"no resolved
    difference"`` (one seed: ``"one seed"``).
    """
    import pandas as pd

    from ..stats import paired_interval

    df = results if isinstance(results, pd.DataFrame) else load_results(results)
    rows = []
    for (d, h), sub in df.groupby(["dataset", "horizon"], sort=True):
        p = sub.pivot_table(index="seed", columns="variant", values=["test_mse", "test_mae"])
        if ("test_mse", "stanhop_uhop") not in p.columns or ("test_mse", "stanhop") not in p.columns:
            continue
        both = p.dropna(subset=[("test_mse", "stanhop_uhop"), ("test_mse", "stanhop")])
        if not len(both):
            continue
        dm = paired_interval(both["test_mse", "stanhop_uhop"] - both["test_mse", "stanhop"])
        da = paired_interval(both["test_mae", "stanhop_uhop"] - both["test_mae", "stanhop"])
        paper = PAPER_TABLE8.get((d, int(h)))
        verdict = _verdict(dm, "U-Hop better", "U-Hop worse")
        rows.append({"dataset": d, "horizon": int(h), "seeds": dm["n"],
                     "STanHop MSE": both["test_mse", "stanhop"].mean(),
                     "U-Hop MSE": both["test_mse", "stanhop_uhop"].mean(),
                     "dMSE": dm["mean"], "dMSE low": dm["low"], "dMSE high": dm["high"],
                     "U-Hop lower MSE": f"{dm['negative']} of {dm['n']}",
                     "dMAE": da["mean"], "dMAE low": da["low"], "dMAE high": da["high"],
                     "paper dMSE": (paper["stanhop_uhop"][0] - paper["stanhop"][0]) if paper else float("nan"),
                     "paper dMAE": (paper["stanhop_uhop"][1] - paper["stanhop"][1]) if paper else float("nan"),
                     "verdict": verdict})
    return pd.DataFrame(rows)


def _verdict(interval: dict, lower: str, higher: str) -> str:
    """``lower`` / ``higher`` when a paired interval excludes 0 on that side, else "no resolved difference"
    ("one seed" without an interval)."""
    if interval["n"] < 2:
        return "one seed"
    if interval["high"] < 0:
        return lower
    if interval["low"] > 0:
        return higher
    return "no resolved difference"


def paired_by_seed(values, reference, lower: str = "lower", higher: str = "higher") -> dict:
    """``values - reference`` over the seeds both have (two Series indexed by seed; NaN counts as missing): the
    dict of :func:`uhop.experiments.stats.paired_interval` plus ``"seeds"`` and a ``"verdict"`` (``lower`` /
    ``higher`` when the 95% interval excludes 0).  For comparisons outside the U-Hop/STanHop pairs of
    :func:`paired_differences`, e.g. one setting's runs against the tier's runs of the same seeds."""
    from ..stats import paired_interval

    seeds = sorted(set(values.dropna().index) & set(reference.dropna().index))
    if not seeds:
        raise ValueError("paired_by_seed: no seed has both values")
    out = paired_interval([values[s] - reference[s] for s in seeds])
    return {**out, "seeds": seeds, "verdict": _verdict(out, lower, higher)}


def against_tier(results, tier, setting: str = "setting") -> list[dict]:
    """U-Hop runs made with one setting changed (``results``: :func:`load_results` rows, e.g. a smaller Stage-I batch)
    beside the tier's runs (``tier``) of the same cells and seeds.  One dict per (dataset, horizon) of ``results``:
    ``seeds`` (those the setting and both tier variants have), the :func:`paired_by_seed` test-MSE differences
    ``vs_stanhop`` (setting − plain STanHop), ``vs_uhop`` (setting − the tier's U-Hop) and ``uhop_vs_stanhop`` (the
    tier's U-Hop − plain STanHop on the same seeds), the three mean test MSEs over those seeds (``means``) and in how
    many seeds the setting's run stopped at the tier's U-Hop run's best epoch (``same_best_epoch``).

    ``setting`` names the changed runs in the verdicts: ``vs_stanhop`` and ``vs_uhop`` read ``"<setting> lower"`` /
    ``"<setting> higher"``, ``uhop_vs_stanhop`` ``"U-Hop lower"`` / ``"U-Hop higher"`` (or "no resolved difference",
    "one seed")."""
    mine_lower, mine_higher = f"{setting} lower", f"{setting} higher"
    out = []
    for (dataset, horizon), runs in results.groupby(["dataset", "horizon"], sort=True):
        cell = tier[(tier["dataset"] == dataset) & (tier["horizon"] == horizon)]
        plain, uhop, runs = (frame.set_index("seed") for frame in
                             (cell[cell["variant"] == "stanhop"], cell[cell["variant"] == "stanhop_uhop"], runs))
        seeds = sorted(set(runs.index) & set(plain.index) & set(uhop.index))
        if not seeds:
            raise ValueError(f"against_tier: the tier has no STanHop and U-Hop runs of {dataset}-{horizon} for "
                             f"seeds {sorted(runs.index)}")
        mine, base, tier_uhop = (f.loc[seeds, "test_mse"] for f in (runs, plain, uhop))
        out.append({"dataset": dataset, "horizon": int(horizon), "seeds": seeds,
                    "vs_stanhop": paired_by_seed(mine, base, mine_lower, mine_higher),
                    "vs_uhop": paired_by_seed(mine, tier_uhop, mine_lower, mine_higher),
                    "uhop_vs_stanhop": paired_by_seed(tier_uhop, base, "U-Hop lower", "U-Hop higher"),
                    "means": {"stanhop": float(base.mean()), "stanhop_uhop": float(tier_uhop.mean()),
                              "setting": float(mine.mean())},
                    "same_best_epoch": int((runs.loc[seeds, "best_epoch"] == uhop.loc[seeds, "best_epoch"]).sum())})
    return out


def _seed_pairs(results, values):
    """The seed pairs of the two STanHop variants: ``values`` (result columns) of both variants, one row per
    (dataset, horizon, seed) that has all of them; None when a variant or a column is missing altogether."""
    import pandas as pd

    df = results if isinstance(results, pd.DataFrame) else load_results(results)
    p = df.pivot_table(index=["dataset", "horizon", "seed"], columns="variant", values=list(values))
    needed = [(m, v) for m in values for v in ("stanhop", "stanhop_uhop")]
    return p[needed].dropna() if set(needed) <= set(p.columns) else None


def pooled_difference(results) -> dict:
    """U-Hop against plain STanHop over every committed seed pair of every cell: the relative paired difference
    ``(U-Hop - STanHop) / STanHop`` of the test MSE and MAE, as a mean with a 95% t interval over all pairs
    (independent runs; the relative scale puts cells of different difficulty on one footing), the sign count
    with a two-sided exact sign test, and Table 8's relative difference averaged over the same cells.

    Returns ``{"pairs", "cells", "mse", "mae", "sign_p", "paper_mse", "paper_mae"}`` (``mse``/``mae``: the dicts
    of :func:`uhop.experiments.report.paired_interval`); ``pairs`` is 0 when no cell has both variants."""
    from ..stats import paired_interval, sign_test

    both = _seed_pairs(results, ("test_mse", "test_mae"))
    if both is None or not len(both):
        return {"pairs": 0, "cells": 0}
    rel = {m: (both[f"test_{m}", "stanhop_uhop"] / both[f"test_{m}", "stanhop"] - 1.0) for m in ("mse", "mae")}
    cells = sorted({(d, int(h)) for d, h, _ in both.index})
    paper = {m: sum(PAPER_TABLE8[c]["stanhop_uhop"][k] / PAPER_TABLE8[c]["stanhop"][k] - 1.0 for c in cells) / len(cells)
             for k, m in enumerate(("mse", "mae"))}
    mse = paired_interval(rel["mse"])
    return {"pairs": len(both), "cells": len(cells), "mse": mse, "mae": paired_interval(rel["mae"]),
            "sign_p": sign_test(mse["negative"], mse["positive"]), "paper_mse": paper["mse"], "paper_mae": paper["mae"]}


def pooled_by_stopping(results):
    """The relative paired test-MSE difference ``(U-Hop - STanHop) / STanHop`` of :func:`pooled_difference`, split
    by when the two runs of a seed pair had their best validation loss: U-Hop's best epoch earlier than plain
    STanHop-Net's, the same, or later.  One row per group (``when``: "earlier", "same", "later"; groups without
    pairs are left out) with ``pairs``, ``mean``, ``low``, ``high`` (95% t interval over the pairs) and
    ``uhop_lower`` (pairs where U-Hop's test MSE is lower).

    Descriptive only: the best epoch is itself an outcome of training with or without U-Hop, so a split by it
    shows where the pooled difference comes from, not what U-Hop causes."""
    import pandas as pd

    from ..stats import paired_interval

    p = _seed_pairs(results, ("best_epoch", "test_mse"))
    if p is None:
        return pd.DataFrame(columns=["when", "pairs", "mean", "low", "high", "uhop_lower"])
    gap = p["best_epoch", "stanhop_uhop"] - p["best_epoch", "stanhop"]
    rel = p["test_mse", "stanhop_uhop"] / p["test_mse", "stanhop"] - 1.0
    rows = []
    for when, mask in (("earlier", gap < 0), ("same", gap == 0), ("later", gap > 0)):
        if mask.any():
            d = paired_interval(rel[mask])
            rows.append({"when": when, "pairs": d["n"], "mean": d["mean"], "low": d["low"], "high": d["high"],
                         "uhop_lower": d["negative"]})
    return pd.DataFrame(rows, columns=["when", "pairs", "mean", "low", "high", "uhop_lower"])


def _last_gain(result: dict, window: int) -> float:
    """Relative improvement of the best validation loss (the early-stopping monitor) over the final ``window``
    epochs: 0 when the run stopped early with a patience of ``window`` epochs (none of them improved), > 0 when
    it was still improving."""
    key = "val_mse" if result["config"]["loss"] == "mse" else "val_mae"
    curve = [e[key] for e in result["history"]]
    if len(curve) <= window:
        return float("nan")
    before, after = min(curve[:-window]), min(curve)
    return (before - after) / before


def stopping_summary(runs: Sequence[dict], window: int = 2):
    """How the trained runs ended, per (dataset, horizon, variant): how many stopped early, how many reached
    the epoch cap with their best validation loss in the last epoch (still improving when stopped), the mean
    best epoch, and the mean relative gain of the best validation loss over the final ``window`` epochs (0 for
    an early stop when the patience is ``window``, as in the converged tier).  ``runs``: run dicts (:func:`load_runs`); persistence (never trained) is left out."""
    import pandas as pd

    rows = [{"dataset": r["config"]["dataset"], "horizon": r["config"]["horizon"], "variant": r["config"]["variant"],
             "cap": r["config"]["epochs"], "stopped early": bool(r["stopped_early"]),
             "best at cap": (not r["stopped_early"]) and r["best_epoch"] == r["epochs_run"] == r["config"]["epochs"],
             "best epoch": r["best_epoch"], "last gain": _last_gain(r, window)}
            for r in runs if r["config"]["variant"] != "persistence"]
    df = pd.DataFrame(rows, columns=["dataset", "horizon", "variant", "cap", "stopped early", "best at cap",
                                     "best epoch", "last gain"])
    return df.groupby(["dataset", "horizon", "variant"], sort=True).agg(
        runs=("cap", "size"), cap=("cap", "max"), stopped_early=("stopped early", "sum"),
        best_at_cap=("best at cap", "sum"), best_epoch=("best epoch", "mean"),
        last_gain=("last gain", "mean")).reset_index()


def time_split(runs: Sequence[dict]):
    """Where the trained runs' time went, per (dataset, horizon, variant): mean seconds per run of the training
    passes, of the validation after every epoch and of the closing evaluation (best weights, whole validation and
    test splits), and the validation's share of their sum.  Only runs that time every part are counted (the field
    ``eval_seconds`` came after the first runs; an epoch carried over from such a run lacks it); the sum leaves out
    data loading and checkpoints, so it holds for a run resumed after an interruption as well."""
    import pandas as pd

    rows = [{"dataset": r["config"]["dataset"], "horizon": r["config"]["horizon"], "variant": r["config"]["variant"],
             "train s": sum(e["seconds"] for e in r["history"]),
             "validation s": sum(e["eval_seconds"] for e in r["history"]), "closing s": r["final_eval_seconds"]}
            for r in runs if r["history"] and r.get("final_eval_seconds") is not None
            and all(e.get("eval_seconds") is not None for e in r["history"])]
    df = pd.DataFrame(rows, columns=["dataset", "horizon", "variant", "train s", "validation s", "closing s"])
    out = df.groupby(["dataset", "horizon", "variant"], sort=True).agg(
        runs=("train s", "size"), train_s=("train s", "mean"), validation_s=("validation s", "mean"),
        closing_s=("closing s", "mean")).reset_index()
    out["validation_share"] = out["validation_s"] / (out["train_s"] + out["validation_s"] + out["closing_s"])
    return out


def run_wall_times(runs: Sequence[dict], earlier: Sequence[dict] = ()) -> dict:
    """Wall seconds of each run, ``{key: seconds}``, over every process it ran in.

    Runs that record ``wall_time_total_s`` give it.  Older runs recorded only their last process's ``wall_time_s``,
    which understates a run resumed after an interruption; for them the larger of two lower bounds is taken: that
    wall time plus the first part's ``wall_time_s`` from ``earlier`` when the run was carried on from a shorter one
    (``continued_from``), and the sum of the epochs' training and validation seconds and the closing evaluation
    (which misses only data loading and checkpoints)."""
    parts = {r["key"]: r["wall_time_s"] for r in earlier}
    out = {}
    for r in runs:
        if r.get("wall_time_total_s") is not None:
            out[r["key"]] = r["wall_time_total_s"]
            continue
        carried = parts.get((r.get("continued_from") or {}).get("key"), 0.0)
        timed = sum(e["seconds"] + (e.get("eval_seconds") or 0.0) for e in r["history"]) \
            + (r.get("final_eval_seconds") or 0.0)
        out[r["key"]] = max(r["wall_time_s"] + carried, timed)
    return out


def tier_status(prefix: str, out_dir: str | os.PathLike, exact: bool = False) -> tuple[list[dict], list[dict]]:
    """``(finished, pending)`` runs of the ``notebooks/full_size.yml`` forecasting entries named ``prefix*``
    (``exact``: the one entry named ``prefix``):
    every (entry, variant, seed) they declare, split by whether ``out_dir/<run_key>.json`` exists.  Each item:
    ``{"run", "dataset", "horizon", "variant", "seed", "key"}``."""
    from ...reproduce import load_runs as load_full_size

    finished, pending = [], []
    for entry in load_full_size():
        if entry["notebook"] != "forecasting" or not (entry["name"] == prefix if exact else
                                                         entry["name"].startswith(prefix)):
            continue
        base, variants, seeds = config_from_parameters(entry.get("parameters") or {})
        for seed in seeds:
            for variant in variants:
                config = replace(base, variant=variant, seed=seed)
                item = {"run": entry["name"], "dataset": config.dataset, "horizon": config.horizon,
                        "variant": variant, "seed": seed, "key": run_key(config)}
                (finished if (Path(out_dir) / f"{item['key']}.json").exists() else pending).append(item)
    return finished, pending


def paper_table():
    """Table 8 of the paper as a DataFrame (MSE/MAE with and without U-Hop)."""
    import pandas as pd

    rows = [{"dataset": d, "horizon": h, "STanHop MSE": v["stanhop"][0], "STanHop MAE": v["stanhop"][1],
             "+U-Hop MSE": v["stanhop_uhop"][0], "+U-Hop MAE": v["stanhop_uhop"][1]}
            for (d, h), v in PAPER_TABLE8.items()]
    return pd.DataFrame(rows)


def benchmark_table(rows: Sequence[dict]):
    """The cells of ``benchmarks/bench_forecasting.py``'s JSON (``"cells"`` or ``"trained"``) as a table:
    STanHop training and evaluation windows/s now and before the speed work, the speed-ups, and U-Hop's
    step-time ratio to plain STanHop now and before, with the inner step's share of it; cells timed with a
    smaller Stage-I batch (``--inner-batches``) add a column "U-Hop slowdown, B1=<n>" for each."""
    import pandas as pd

    prefix = "uhop_slowdown_b1_"
    return pd.DataFrame([{
        "data": c["shape"], "horizon": c["horizon"],
        "train windows/s": c["stanhop"]["windows_per_s"], "before": c["stanhop_legacy"]["windows_per_s"],
        "speed-up": c["speedup_train"], "eval windows/s": c["stanhop"]["eval_windows_per_s"],
        "eval before": c["stanhop_legacy"]["eval_windows_per_s"], "eval speed-up": c["speedup_eval"],
        "U-Hop slowdown": c["uhop_slowdown"], "slowdown before": c["uhop_slowdown_legacy"],
        "inner share": c["uhop_inner_share"],
        **{f"U-Hop slowdown, B1={k[len(prefix):]}": v for k, v in c.items() if k.startswith(prefix)}}
        for c in rows]).set_index(["data", "horizon"])
