"""One run (:func:`train_forecaster`: the data, the model, :class:`uhop.nn.BilevelTrainer` on the training
windows, the test; resumable from ``last.pt``) and a loop over variants and seeds (:func:`run`)."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..._checks import check_choice, check_int
from ...models.stanhop import STanHopNet
from ...nn.bilevel import BilevelTrainer, EpochRecord
from ...nn.checkpoints import global_rng_state, load_checkpoint, save_checkpoint
from ...provenance import atomic_write_text, write_manifest
from .config import VARIANTS, ForecastConfig, comparable_settings, run_key
from .data import Windows, WindowBatches, check_splits, evenly_spaced, load_splits
from .evaluation import evaluate, model_output
from .models import build_model

try:  # plain text bars: they work in terminals, logs and notebook kernels alike (no ipywidgets needed)
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None

__all__ = ["train_forecaster", "continue_shorter_run", "run"]


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def train_forecaster(config: ForecastConfig, *, device: str = "cpu", splits=None, out_dir: str | os.PathLike | None = None,
                     checkpoint_dir: str | os.PathLike | None = None, resume: bool = True, progress: bool = True,
                     stop_after_epochs: int | None = None) -> dict:
    """Train and test one run; returns a result dict (config, metrics, per-epoch history, timings).

    Args:
        config: the run (:class:`ForecastConfig`).
        device: torch device.
        splits: a :class:`uhop.data.TimeSeriesSplits` to reuse (must match ``config``); loaded if None.
        out_dir: if given, the result is written to ``out_dir/<run_key>.json`` with a provenance manifest.
        checkpoint_dir: folder for ``<run_key>/last.pt`` and ``best.pt``; without it nothing is saved and the
            best weights are kept in memory.
        resume: continue from ``last.pt`` if it exists (its configuration must be identical); without one, continue
            the same run made with a smaller ``epochs`` cap if ``checkpoint_dir`` holds its checkpoint
            (:func:`continue_shorter_run`), which gives the numbers of a run with the larger cap from scratch.
        progress: tqdm bars (epochs and batches).
        stop_after_epochs: stop (without testing) after this many epochs of this call -- simulates an
            interruption; returns ``{"interrupted": True, ...}``.

    Raises ValueError for an unknown dataset, target or variant, a horizon or input length that does not fit
    the splits, or NaN in the series (from the data layer).

    On a CPU, long horizons evaluate 1.2-1.6x faster after :func:`uhop.allocator.retain_freed_memory` (same
    numbers); the command line and the notebook call it, a script of your own should call it once at start.
    """
    if not isinstance(config, ForecastConfig):
        raise TypeError(f"config must be a ForecastConfig, got {type(config).__name__}")
    start_time, start_cpu = time.perf_counter(), time.process_time()
    dev = torch.device(device)
    if splits is None:
        splits = load_splits(config)
    else:
        check_splits(splits, config, "the config")
    datasets = {}
    for split in ("train", "val", "test"):
        try:
            datasets[split] = splits.dataset(split, config.horizon)
        except ValueError as err:
            raise ValueError(f"{config.dataset} {split} split ({len(splits.split(split))} rows) is too short for "
                             f"input_len={config.input_len} + horizon={config.horizon}: {err}") from None
    n_vars = splits.train.shape[1]
    _seed_everything(config.seed)
    data_gen = torch.Generator().manual_seed(config.seed)
    n_train = len(datasets["train"])
    train_starts = torch.arange(n_train)
    if config.max_train_windows is not None and config.max_train_windows < n_train:
        train_starts = torch.randperm(n_train, generator=data_gen)[:config.max_train_windows].sort().values
    n_val, n_test = len(datasets["val"]), len(datasets["test"])
    val_starts = evenly_spaced(n_val, config.max_val_windows)
    test_starts = evenly_spaced(n_test, config.max_test_windows)
    train = Windows(datasets["train"], train_starts, dev)
    val = Windows(datasets["val"], val_starts, dev)
    test = Windows(datasets["test"], test_starts, dev)

    model = build_model(config, n_vars).to(dev)
    key = run_key(config)
    result = {"key": key, "config": asdict(config), "device": str(device), "n_vars": n_vars,
              "n_params": sum(p.numel() for p in model.parameters()), "n_blocks": config.blocks if
              config.variant.startswith("stanhop") else None,
              "windows": {"train": len(train), "train_available": n_train, "val": len(val), "val_available": n_val,
                          "test": len(test), "test_available": n_test}}
    history: list[dict] = []
    best_epoch = 0
    if config.trains and resume and checkpoint_dir is not None and not (Path(checkpoint_dir) / key / "last.pt").exists():
        earlier = continue_shorter_run(config, checkpoint_dir)
        if earlier is not None:
            result["continued_from"] = earlier
    if config.trains:
        trainer = _trainer(config, model, dev, train.target, checkpoint_dir, key, progress)
        trainer.clock_start = (start_time, start_cpu)  # this process's data loading counts too
        batches = WindowBatches(train, config.batch_size, config.seed + 1, config.epoch_windows)
        # Stage-I batches (B_1 of Algorithm 2) from their own generator, so that the outer batches do not depend on B_1
        inner = WindowBatches(train, config.inner_batch_size or config.batch_size, config.seed + 2)
        # one bar over the epochs (the trainer's own bar covers an epoch's batches)
        bar = _tqdm(total=config.epochs, desc=key, leave=True) if progress and _tqdm is not None else None

        def show(record):
            if bar is not None:
                bar.update(record.epoch - bar.n)  # a resumed run jumps to its epoch
                bar.set_postfix(train=f"{record.train_loss:.4f}", val_mse=f"{record.extra['val_mse']:.4f}",
                                bad=trainer.bad_epochs)

        def validate(m):
            return {f"val_{name}": value for name, value in evaluate(m, val, config.eval_batch_size).items()}

        records = trainer.fit(batches, config.epochs, inner=inner, evaluate=validate, resume=resume, callback=show,
                              stop_after_epochs=stop_after_epochs)
        if bar is not None:
            bar.close()
        history = [_history_row(r) for r in records]
        if trainer.interrupted:
            result.update(interrupted=True, history=history)
            return result
        best_epoch = trainer.best_epoch  # the trainer has restored the best epoch's weights

    final_start = time.perf_counter()
    val_metrics = evaluate(model, val, config.eval_batch_size)
    test_metrics = evaluate(model, test, config.eval_batch_size)
    final_eval_seconds = time.perf_counter() - final_start
    train_seconds = sum(r["seconds"] for r in history)
    trained_windows = sum(r["windows"] for r in history)
    now = (time.perf_counter(), time.process_time())
    # the whole run: with the time of every earlier process it was resumed (or carried on) from
    total = trainer.elapsed(now) if config.trains else {"wall_s": now[0] - start_time, "cpu_s": now[1] - start_cpu,
                                                        "processes": 1}
    result.update(
        interrupted=False, history=history, epochs_run=len(history), best_epoch=best_epoch or None,
        stopped_early=bool(config.trains and len(history) < config.epochs),
        val_mse=val_metrics["mse"], val_mae=val_metrics["mae"], test_mse=test_metrics["mse"],
        test_mae=test_metrics["mae"],
        seconds_per_epoch=(train_seconds / len(history)) if history else None,
        train_windows_per_s=(trained_windows / train_seconds) if train_seconds else None,
        # the closing evaluation of the best weights on the whole validation and test splits
        final_eval_seconds=final_eval_seconds,
        # this process alone; CPU time (all its threads) leaves out the time the run spent paused or waiting for
        # a core that other work held
        wall_time_s=now[0] - start_time, cpu_time_s=now[1] - start_cpu,
        # every process of the run (cpu None: an earlier one, of an older version, did not record it)
        wall_time_total_s=total["wall_s"], cpu_time_total_s=total["cpu_s"], processes=total["processes"],
    )
    if isinstance(model, STanHopNet):
        alphas = model.alphas()
        result["alpha"] = {"min": float(alphas.min()), "max": float(alphas.max()), "mean": float(alphas.mean())}
    if out_dir is not None:
        out = Path(out_dir) / f"{key}.json"
        atomic_write_text(out, json.dumps(result, indent=1, default=float) + "\n")
        write_manifest(str(out) + ".manifest.json", command="uhop.experiments.forecasting.train_forecaster",
                       parameters=asdict(config), wall_time_s=result["wall_time_total_s"], device=str(device))
    return result


def continue_shorter_run(config: ForecastConfig, checkpoint_dir: str | os.PathLike) -> dict | None:
    """Start ``config``'s run from the checkpoint of the same run with a smaller epoch cap, if there is one.

    Looks in ``checkpoint_dir`` for a run of the same dataset, horizon, variant and seed whose ``last.pt`` records
    settings equal to ``config``'s in everything but ``epochs``, with fewer epochs (the largest such cap wins), and
    copies its ``last.pt`` and ``best.pt`` into ``checkpoint_dir/<run_key(config)>/`` with ``config``'s settings;
    the earlier run's files are not touched.  Continuing is exact: nothing in training depends on the cap (the
    learning rate is ``lr * lr_decay ** epoch``; the early-stopping state, the window sampler and every random
    generator are in ``last.pt``), so the run ends as a run with the larger cap started from scratch would: one
    that had stopped early stops again at once, one that reached its cap trains on.

    Returns ``{"key", "epochs", "epochs_run"}`` of the earlier run, or ``None`` (nothing copied)."""
    mine = comparable_settings(config)
    same = {k: v for k, v in mine.items() if k != "epochs"}
    found = None
    for folder in sorted(Path(checkpoint_dir).glob(f"{config.dataset}_h{config.horizon}_{config.variant}_s{config.seed}_*")):
        if folder.name == run_key(config) or not (folder / "last.pt").exists():
            continue
        ckpt = _trainer_format(load_checkpoint(folder / "last.pt"), config.patience)
        theirs = None if ckpt is None else ckpt.get("config")
        if not isinstance(theirs, dict) or {k: v for k, v in theirs.items() if k != "epochs"} != same:
            continue
        if theirs.get("epochs", config.epochs) < config.epochs and (found is None or theirs["epochs"] > found[1]):
            found = (folder, theirs["epochs"], ckpt)
    if found is None:
        return None
    folder, epochs, ckpt = found
    target = Path(checkpoint_dir) / run_key(config)
    target.mkdir(parents=True, exist_ok=True)
    if (folder / "best.pt").exists():
        save_checkpoint(target / "best.pt", {**load_checkpoint(folder / "best.pt"), "config": mine})
    save_checkpoint(target / "last.pt", {**ckpt, "config": mine})  # last: a last.pt never lacks its best.pt
    return {"key": folder.name, "epochs": epochs, "epochs_run": len(ckpt["history"])}


def _trainer_format(ckpt: dict, patience: int) -> dict | None:
    """A ``last.pt`` as :class:`uhop.nn.BilevelTrainer` reads it.  One written by the forecasting loop before it
    used the trainer (``optimizer``, ``best_val``, ``bad_epochs`` at the top level) is translated only if its run
    had stopped early (``bad_epochs >= patience``): carrying it on then trains no further epoch, so only the weights,
    the history and the early-stopping state are used; any other of its kind gives ``None``."""
    if "outer_optimizer" in ckpt:
        return ckpt
    if not ("optimizer" in ckpt and "best_val" in ckpt and patience and ckpt.get("bad_epochs", 0) >= patience):
        return None
    history = [{"train_acc": None, "outer_seconds": None, **{("images" if k == "windows" else k): v for k, v in row.items()}}
               for row in ckpt["history"]]
    return {"model": ckpt["model"], "outer_optimizer": ckpt["optimizer"], "kernel_optimizer": ckpt["kernel_optimizer"],
            "scheduler": None, "epoch": len(history) - 1, "history": history, "config": ckpt["config"],
            "best": {"value": ckpt["best_val"], "epoch": ckpt["best_epoch"], "bad_epochs": ckpt["bad_epochs"]},
            "rng": {**global_rng_state(), **{k: v for k, v in ckpt["rng"].items() if k in ("batches", "inner")}}}


def _trainer(config: ForecastConfig, model, dev, target, checkpoint_dir, key: str, progress: bool) -> BilevelTrainer:
    """Algorithm 2 as the run's configuration asks: MAE or MSE task loss on the (target) output, Adam with the
    per-epoch decay ``lr * lr_decay ** epoch``, inner SGD steps on the separation loss (U-Hop variant only:
    the others have no feature map), early stopping on the validation loss with the best weights in
    ``<checkpoint_dir>/<key>/best.pt`` (in memory without a checkpoint_dir) and the resumable ``last.pt``."""
    ckpt_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / key
    return BilevelTrainer(
        model, lr=config.lr, kernel_lr=config.kernel_lr, inner_steps=config.inner_steps, t=config.sep_t,
        task_loss=F.l1_loss if config.loss == "mae" else F.mse_loss, scheduler="exponential",
        lr_decay=config.lr_decay,
        # fused Adam (one kernel over all parameters): 5x faster optimiser step on the CPU for this many small tensors
        fused=dev.type in ("cpu", "cuda"), forward=lambda m, x: model_output(m, x, target), device=dev,
        checkpoint_path=None if ckpt_dir is None else ckpt_dir / "last.pt",
        best_checkpoint_path=None if ckpt_dir is None else ckpt_dir / "best.pt", progress=progress,
        monitor=f"val_{config.loss}", patience=config.patience, metadata={"config": comparable_settings(config)})


def _history_row(record: EpochRecord) -> dict:
    """One epoch of the result JSON (keys read by the book)."""
    return {"epoch": record.epoch, "train_loss": record.train_loss, "sep_loss_first": record.sep_loss_first,
            "sep_loss_last": record.sep_loss_last, "seconds": record.seconds, "inner_seconds": record.inner_seconds,
            "windows": record.images, "lr": record.lr, "val_mse": record.extra["val_mse"],
            "val_mae": record.extra["val_mae"], "eval_seconds": record.eval_seconds}


def run(base: ForecastConfig, variants: Sequence[str], seeds: Iterable[int], **kwargs) -> list[dict]:
    """:func:`train_forecaster` for every variant and seed (``base`` with ``variant``/``seed`` replaced);
    the same data splits are loaded once and shared."""
    variants = [check_choice(v, "variant", VARIANTS) for v in variants]
    seeds = [check_int(s, "seed") for s in seeds]
    if not variants or not seeds:
        raise ValueError("variants and seeds must be non-empty")
    splits = kwargs.pop("splits", None) or load_splits(base)
    return [train_forecaster(replace(base, variant=v, seed=s), splits=splits, **kwargs)
            for s in seeds for v in variants]
