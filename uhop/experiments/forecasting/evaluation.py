"""Test metrics over windows (exact means), and the checks of finished runs: re-testing from ``best.pt``
(:func:`retest`) and how far U-Hop's feature maps moved (:func:`kernel_drift`)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ...nn.bilevel import load_checkpoint
from .config import ForecastConfig, comparable_settings
from .data import Windows, check_splits, evenly_spaced, load_splits
from .models import build_model

__all__ = ["model_output", "evaluate", "kernel_drift", "retest"]


def model_output(model, x, target):
    out = model(x)
    return out if target is None else out[..., target:target + 1]


@torch.no_grad()
def evaluate(model: nn.Module, windows: Windows, batch_size: int = 256) -> dict[str, float]:
    """MSE and MAE over all windows, steps and channels (exact means)."""
    was = model.training
    model.eval()
    sse = sae = 0.0
    count = 0
    for i in range(0, len(windows), batch_size):
        x, y = windows.batch(windows.starts[i:i + batch_size])
        err = (model_output(model, x, windows.target) - y).double()
        sse += float(err.pow(2).sum())
        sae += float(err.abs().sum())
        count += err.numel()
    model.train(was)
    return {"mse": sse / count, "mae": sae / count}


def kernel_drift(model: nn.Module) -> dict | None:
    """How far U-Hop's feature maps moved from their identity start: ``||W - [I; 0]||_F / ||I||_F`` per
    :class:`uhop.nn.FeatureMap` (min, mean, max over the layers); ``None`` for a model without U-Hop."""
    from ...nn import FeatureMap

    drifts = []
    for module in model.modules():
        if isinstance(module, FeatureMap):
            start = torch.zeros_like(module.weight)
            start[: module.d, : module.d] = torch.eye(module.d, dtype=start.dtype, device=start.device)
            drifts.append(float((module.weight.detach() - start).norm() / math.sqrt(module.d)))
    if not drifts:
        return None
    return {"layers": len(drifts), "min": min(drifts), "mean": sum(drifts) / len(drifts), "max": max(drifts)}


def retest(runs: Sequence[dict], checkpoint_dir: str | os.PathLike, *, device: str = "cpu",
           max_test_windows: int | None = None, splits=None, test: bool = True) -> list[dict]:
    """Re-test finished runs on another set of test windows (default: the whole test split).

    For each finished run of :func:`train_forecaster` (the dicts of :func:`load_runs`), rebuild its model, load the ``best.pt`` it was tested
    with from ``checkpoint_dir/<run_key>/`` (nothing to load for persistence), and evaluate it on
    ``max_test_windows`` evenly spaced test windows (``None``: all).  Returns one dict per run with the recorded
    and the new metrics and, for U-Hop runs, :func:`kernel_drift`.  Measures what a test subsample changes.
    ``splits``: a :class:`uhop.data.TimeSeriesSplits` to use for every run (loaded per dataset if None).
    ``test=False`` only loads the weights (for :func:`kernel_drift`); the metrics are then None.
    """
    out = []
    splits_cache: dict = {}
    dev = torch.device(device)
    for result in runs:
        config = ForecastConfig(**result["config"])
        data_key = (config.dataset, config.input_len, config.features, config.target, config.protocol)
        if splits is not None:
            check_splits(splits, config, result["key"])
            splits_cache[data_key] = splits
        elif data_key not in splits_cache:
            splits_cache[data_key] = load_splits(config)
        run_splits = splits_cache[data_key]
        test_set = run_splits.dataset("test", config.horizon)
        starts = evenly_spaced(len(test_set), max_test_windows)
        model = build_model(config, run_splits.train.shape[1]).to(dev)
        if config.trains:
            best = Path(checkpoint_dir) / result["key"] / "best.pt"
            if not best.exists():
                raise FileNotFoundError(f"{best} not found: re-run {result['key']} with this checkpoint_dir")
            state = load_checkpoint(best, map_location=dev)
            if comparable_settings(state["config"]) != comparable_settings(result["config"]):
                raise ValueError(f"{best} was written by a different configuration than run {result['key']}")
            model.load_state_dict(state["model"])
        t0 = time.perf_counter()
        metrics = (evaluate(model, Windows(test_set, starts, dev), config.eval_batch_size) if test
                   else {"mse": None, "mae": None})
        out.append({"key": result["key"], "dataset": config.dataset, "horizon": config.horizon,
                    "variant": config.variant, "seed": config.seed, "windows": len(starts) if test else 0,
                    "recorded_windows": result["windows"]["test"], "recorded_mse": result["test_mse"],
                    "recorded_mae": result["test_mae"], "mse": metrics["mse"], "mae": metrics["mae"],
                    "kernel_drift": kernel_drift(model), "seconds": time.perf_counter() - t0})
    return out
