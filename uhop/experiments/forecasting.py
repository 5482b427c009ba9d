r"""Time-series forecasting with STanHop-Net, with and without U-Hop (Section 4.2, App F.5, Tables 7-8).

:func:`train_forecaster` trains one variant on one dataset/horizon/seed and returns (and optionally writes)
its metrics; :func:`run` loops over variants and seeds.  Variants:

* ``"stanhop"`` -- :class:`uhop.models.stanhop.STanHopNet` (our construction; learnable-alpha entmax);
* ``"stanhop_uhop"`` -- the same network with every Hopfield layer kernelized (U-Hop), trained with
  Algorithm 2: before each outer Adam step on the task loss, ``inner_steps`` SGD steps (``kernel_lr``,
  0.1 in Table 7) on the separation loss of every U-Hop layer's stored patterns, over the kernel (Phi)
  parameters only (:func:`uhop.nn.separation_step`);
* ``"persistence"`` -- repeat the last observed value (no training);
* ``"linear"`` -- one ``Linear(input_len -> horizon)`` **shared by all channels** (the "Linear" model of
  DLinear, Zeng et al. 2023, with ``individual=False``), trained by the same loop.

Protocol (all from the data layer, :func:`uhop.data.time_series_splits`): standard train/val/test row splits
(``protocol="stanhop"`` by default: ETT 12/4/4 months, WTH 28/10/10 months), z-scored with train statistics;
every window of a split is one sample (stride 1).  Metrics: MSE and MAE on the standardised scale, averaged
over **all** windows, steps and channels of the test split (exact means, not means of batch means).

Training (Table 7 where it says something): Adam ``lr=1e-4``, batch 16, up to 50 epochs, early stopping with
patience 25 on the validation loss (the training criterion on the validation split), the best-validation
weights restored for the test (saved atomically as ``best.pt``), the task loss MAE (App F.5: "minimize both
separation loss and the MAE loss"; ``loss="mse"`` gives the official STanHop code's criterion).  Every epoch
writes ``last.pt`` (model, optimizers, early-stopping state, RNG states) so that an interrupted run resumes
where it stopped and reproduces the uninterrupted run.

:func:`retest` re-tests finished runs from their ``best.pt`` on another set of test windows and measures how far
U-Hop's feature maps moved (:func:`kernel_drift`); command line::

    python -m uhop.experiments.forecasting retest --runs results/forecasting/runs \
        --checkpoints _build/forecasting/checkpoints --cells ETTh1_96,WTH_96 --out results/forecasting/full_test/x.json
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int, check_positive
from ..data import time_series_splits
from ..models.stanhop import DEFAULTS, STanHopNet, blocks_for_horizon
from ..nn import kernel_parameters, separation_step
from ..nn.bilevel import load_checkpoint, save_checkpoint
from ..provenance import atomic_write_text, write_manifest

try:  # plain text bars: they work in terminals, logs and notebook kernels alike (no ipywidgets needed)
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None

__all__ = ["VARIANTS", "VARIANT_LABELS", "DATASETS", "HORIZONS", "PAPER_TABLE8", "ForecastConfig", "Persistence",
           "LinearForecaster", "build_model", "evaluate", "train_forecaster", "run", "load_results", "summarize",
           "paper_table", "run_key", "load_runs", "retest", "kernel_drift", "main", "config_from_parameters",
           "paired_differences", "tier_status"]

VARIANTS = ("stanhop", "stanhop_uhop", "persistence", "linear")
VARIANT_LABELS = {"stanhop": "STanHop-Net", "stanhop_uhop": "STanHop-Net + U-Hop", "persistence": "persistence",
                  "linear": "linear (shared)"}
DATASETS = ("ETTh1", "ETTm1", "WTH")
HORIZONS = (96, 192, 336, 720)
LOSSES = ("mae", "mse")

#: Table 8 of the paper: (MSE, MAE) on the standardised test split ("ETTh" in the paper = ETTh1).
PAPER_TABLE8 = {
    ("ETTh1", 96): {"stanhop": (0.395, 0.402), "stanhop_uhop": (0.392, 0.400)},
    ("ETTh1", 192): {"stanhop": (0.425, 0.432), "stanhop_uhop": (0.420, 0.428)},
    ("ETTh1", 336): {"stanhop": (0.495, 0.487), "stanhop_uhop": (0.470, 0.473)},
    ("ETTh1", 720): {"stanhop": (0.631, 0.600), "stanhop_uhop": (0.572, 0.559)},
    ("ETTm1", 96): {"stanhop": (0.334, 0.366), "stanhop_uhop": (0.333, 0.365)},
    ("ETTm1", 192): {"stanhop": (0.351, 0.380), "stanhop_uhop": (0.355, 0.385)},
    ("ETTm1", 336): {"stanhop": (0.391, 0.393), "stanhop_uhop": (0.392, 0.399)},
    ("ETTm1", 720): {"stanhop": (0.436, 0.431), "stanhop_uhop": (0.435, 0.423)},
    ("WTH", 96): {"stanhop": (0.494, 0.505), "stanhop_uhop": (0.483, 0.498)},
    ("WTH", 192): {"stanhop": (0.513, 0.526), "stanhop_uhop": (0.528, 0.536)},
    ("WTH", 336): {"stanhop": (0.523, 0.539), "stanhop_uhop": (0.523, 0.539)},
    ("WTH", 720): {"stanhop": (0.601, 0.609), "stanhop_uhop": (0.603, 0.589)},
}


@dataclass(frozen=True)
class ForecastConfig:
    """Everything that defines one forecasting run (``device`` excepted, it does not change the numbers' meaning).

    Defaults are the paper's Table 7 where it gives a value; ``input_len`` (not stated in the paper) is 96.
    ``patience`` 0 disables early stopping; ``lr_decay`` multiplies the learning rate after every epoch (1: constant,
    the paper states no schedule; 0.5 halves it every epoch like the official code's ``lradj``).
    ``max_train_windows`` / ``max_val_windows`` cap the windows per epoch for a CPU budget (a fixed seeded
    random subset of the training windows; evenly spaced validation windows).  ``epoch_windows`` instead makes
    every epoch a *fresh* seeded random sample of that many training windows (drawn without replacement from
    all of them, from the same generator as the batch order, so that paired variants see the same windows):
    an epoch of fixed cost on every dataset that still visits all the training data over the run.  ``max_test_windows`` tests on
    evenly spaced windows of the test split (smoke runs and the CPU tier, whose results are labelled as
    subsampled; the paper and the GPU commands use the full split).
    """

    dataset: str = "ETTh1"
    horizon: int = 96
    variant: str = "stanhop"
    input_len: int = 96
    features: str = "M"
    target: str | None = None
    protocol: str = "stanhop"
    epochs: int = 50
    patience: int = 25
    batch_size: int = 16
    lr: float = 1e-4
    lr_decay: float = 1.0
    loss: str = "mae"
    kernel_lr: float = 0.1
    inner_steps: int = 1
    sep_t: float = 2.0
    d_model: int = DEFAULTS["d_model"]
    n_heads: int = DEFAULTS["n_heads"]
    d_ff: int = DEFAULTS["d_ff"]
    factor: int = DEFAULTS["factor"]
    dropout: float = DEFAULTS["dropout"]
    seg_len: int = DEFAULTS["seg_len"]
    win_size: int = DEFAULTS["win_size"]
    n_blocks: int | None = None
    alpha_init: float = DEFAULTS["alpha_init"]
    max_train_windows: int | None = None
    max_val_windows: int | None = None
    max_test_windows: int | None = None
    eval_batch_size: int = 256
    seed: int = 0
    epoch_windows: int | None = None

    def __post_init__(self):
        check_choice(self.variant, "variant", VARIANTS)
        check_choice(self.loss, "loss", LOSSES)
        for name in ("horizon", "input_len", "batch_size", "eval_batch_size", "d_model", "n_heads", "d_ff",
                     "factor", "seg_len", "win_size"):
            check_int(getattr(self, name), name, minimum=1)
        for name in ("epochs", "patience", "inner_steps"):
            check_int(getattr(self, name), name, minimum=0)
        check_int(self.seed, "seed")
        for name in ("n_blocks", "max_train_windows", "max_val_windows", "max_test_windows", "epoch_windows"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        check_positive(self.lr, "lr")
        check_positive(self.kernel_lr, "kernel_lr")
        check_positive(self.sep_t, "sep_t")
        if not 0.0 < float(self.lr_decay) <= 1.0:
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")

    @property
    def blocks(self) -> int:
        return blocks_for_horizon(self.horizon) if self.n_blocks is None else self.n_blocks

    @property
    def trains(self) -> bool:
        return self.variant != "persistence"


#: Fields added after runs were committed, with the value that reproduces the earlier behaviour: left out of
#: the run key at that value, so that the keys (and checkpoints) of earlier runs stay valid.
_LATER_FIELDS = {"epoch_windows": None}


def _settings(config: ForecastConfig | dict) -> dict:
    """The configuration as a dict without later fields at their neutral value (compared on resume, hashed)."""
    d = asdict(config) if isinstance(config, ForecastConfig) else dict(config)
    return {k: v for k, v in d.items() if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}


def run_key(config: ForecastConfig) -> str:
    """File-name key of a run: dataset, horizon, variant, seed and a hash of the whole configuration."""
    digest = hashlib.sha256(json.dumps(_settings(config), sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.dataset}_h{config.horizon}_{config.variant}_s{config.seed}_{digest}"


class Persistence(nn.Module):
    """Repeat the last observed row over the horizon: ``(B, L, C)`` -> ``(B, horizon, C)``."""

    def __init__(self, horizon: int):
        super().__init__()
        self.horizon = check_int(horizon, "horizon", minimum=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:, :].expand(-1, self.horizon, -1)


class LinearForecaster(nn.Module):
    """One ``Linear(input_len -> horizon)`` along time, shared by all channels (DLinear's "Linear",
    ``individual=False``): ``(B, L, C)`` -> ``(B, horizon, C)``."""

    def __init__(self, input_len: int, horizon: int):
        super().__init__()
        self.linear = nn.Linear(check_int(input_len, "input_len", minimum=1), check_int(horizon, "horizon", minimum=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


def build_model(config: ForecastConfig, n_vars: int) -> nn.Module:
    """The network of ``config.variant`` for ``n_vars`` channels (seeded by the caller)."""
    if config.variant == "persistence":
        return Persistence(config.horizon)
    if config.variant == "linear":
        return LinearForecaster(config.input_len, config.horizon)
    return STanHopNet(n_vars, config.input_len, config.horizon, n_blocks=config.n_blocks, seg_len=config.seg_len,
                      win_size=config.win_size, d_model=config.d_model, n_heads=config.n_heads, d_ff=config.d_ff,
                      factor=config.factor, dropout=config.dropout, alpha_init=config.alpha_init,
                      uhop=config.variant == "stanhop_uhop")


# -- data -----------------------------------------------------------------------------------------------------


class _Windows:
    """Windows of one split as start indices into a ``(T, C)`` tensor; gathers batches without a DataLoader."""

    def __init__(self, dataset, starts: torch.Tensor, device):
        self.values = dataset.values.to(device)
        self.L, self.H = dataset.input_len, dataset.horizon
        self.target = dataset.target_index
        self.starts = starts
        self.ar_x = torch.arange(self.L, device=device)
        self.ar_y = torch.arange(self.L, self.L + self.H, device=device)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = starts.to(self.values.device)[:, None]
        x = self.values[s + self.ar_x]
        y = self.values[s + self.ar_y]
        if self.target is not None:
            y = y[..., self.target:self.target + 1]
        return x, y


def _load_splits(config: ForecastConfig):
    """The splits ``config`` asks for (dataset, look-back, features, target, protocol)."""
    return time_series_splits(config.dataset, config.input_len, features=config.features, target=config.target,
                              protocol=config.protocol)


def _evenly_spaced(n: int, cap: int | None) -> torch.Tensor:
    """Indices of ``cap`` evenly spaced windows out of ``n`` (all ``n`` when ``cap`` is None or not smaller)."""
    if cap is None or cap >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, cap).round().long().unique()


def _check_splits(splits, config: ForecastConfig, what: str) -> None:
    """Refuse splits cut differently from what ``config`` asks for (dataset, look-back, features, protocol)."""
    got = (splits.name.lower(), splits.input_len, splits.features, splits.protocol)
    want = (config.dataset.lower(), config.input_len, config.features, config.protocol)
    if got != want:
        raise ValueError(f"splits (dataset, input_len, features, protocol) = {got} do not match {what}: {want}")


def _output(model, x, target):
    out = model(x)
    return out if target is None else out[..., target:target + 1]


@torch.no_grad()
def evaluate(model: nn.Module, windows: _Windows, batch_size: int = 256) -> dict[str, float]:
    """MSE and MAE over all windows, steps and channels (exact means)."""
    was = model.training
    model.eval()
    sse = sae = 0.0
    count = 0
    for i in range(0, len(windows), batch_size):
        x, y = windows.batch(windows.starts[i:i + batch_size])
        err = (_output(model, x, windows.target) - y).double()
        sse += float(err.pow(2).sum())
        sae += float(err.abs().sum())
        count += err.numel()
    model.train(was)
    return {"mse": sse / count, "mae": sae / count}


# -- checkpoints ------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# -- training -------------------------------------------------------------------------------------------------


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
        resume: continue from ``last.pt`` if it exists (its configuration must be identical).
        progress: tqdm bars (epochs and batches).
        stop_after_epochs: stop (without testing) after this many epochs of this call -- simulates an
            interruption; returns ``{"interrupted": True, ...}``.

    Raises ValueError for an unknown dataset, target or variant, a horizon or input length that does not fit
    the splits, or NaN in the series (from the data layer).
    """
    if not isinstance(config, ForecastConfig):
        raise TypeError(f"config must be a ForecastConfig, got {type(config).__name__}")
    start_time = time.perf_counter()
    dev = torch.device(device)
    if splits is None:
        splits = _load_splits(config)
    else:
        _check_splits(splits, config, "the config")
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
    val_starts = _evenly_spaced(n_val, config.max_val_windows)
    test_starts = _evenly_spaced(n_test, config.max_test_windows)
    train = _Windows(datasets["train"], train_starts, dev)
    val = _Windows(datasets["val"], val_starts, dev)
    test = _Windows(datasets["test"], test_starts, dev)

    model = build_model(config, n_vars).to(dev)
    key = run_key(config)
    result = {"key": key, "config": asdict(config), "device": str(device), "n_vars": n_vars,
              "n_params": sum(p.numel() for p in model.parameters()), "n_blocks": config.blocks if
              config.variant.startswith("stanhop") else None,
              "windows": {"train": len(train), "train_available": n_train, "val": len(val), "val_available": n_val,
                          "test": len(test), "test_available": n_test}}
    history: list[dict] = []
    best = {"val": math.inf, "epoch": 0, "state": None}
    bad_epochs = 0
    first_epoch = 0

    if config.trains:
        loss_fn = F.l1_loss if config.loss == "mae" else F.mse_loss
        # fused Adam (one kernel over all parameters): 5x faster optimiser step on the CPU for this many small tensors
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=dev.type in ("cpu", "cuda"))
        kparams = kernel_parameters(model) if config.variant == "stanhop_uhop" else []
        kernel_opt = torch.optim.SGD(kparams, lr=config.kernel_lr) if kparams else None
        batch_gen = torch.Generator().manual_seed(config.seed + 1)
        inner_gen = torch.Generator().manual_seed(config.seed + 2)
        ckpt_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / key
        last_path = None if ckpt_dir is None else ckpt_dir / "last.pt"
        best_path = None if ckpt_dir is None else ckpt_dir / "best.pt"
        if resume and last_path is not None and last_path.exists():
            ck = load_checkpoint(last_path, map_location=dev)
            if _settings(ck["config"]) != _settings(config):
                raise ValueError(f"{last_path} was written by a different configuration; delete it or pass "
                                 "resume=False")
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            if kernel_opt is not None:
                kernel_opt.load_state_dict(ck["kernel_optimizer"])
            history, bad_epochs = ck["history"], ck["bad_epochs"]
            best.update(val=ck["best_val"], epoch=ck["best_epoch"])
            torch.set_rng_state(ck["rng"]["torch"])
            if ck["rng"].get("cuda") is not None and dev.type == "cuda":
                torch.cuda.set_rng_state(ck["rng"]["cuda"], dev)
            batch_gen.set_state(ck["rng"]["batches"])
            inner_gen.set_state(ck["rng"]["inner"])
            first_epoch = len(history)
            if best_path is None or not best_path.exists():
                raise FileNotFoundError(f"{best_path} is missing next to {last_path}; cannot resume")
        epochs_bar = range(first_epoch, config.epochs)
        if progress and _tqdm is not None:
            epochs_bar = _tqdm(epochs_bar, total=config.epochs, initial=first_epoch, desc=key, leave=True)
        done_this_call = 0
        for epoch in epochs_bar:
            if config.patience and bad_epochs >= config.patience:
                break  # early stopping (patience 0 disables it)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * config.lr_decay ** epoch
            record = _train_epoch(model, train, optimizer, kernel_opt, loss_fn, config, batch_gen, inner_gen, epoch,
                                  progress)
            v = evaluate(model, val, config.eval_batch_size)
            record.update(val_mse=v["mse"], val_mae=v["mae"])
            val_loss = v[config.loss]
            if val_loss < best["val"]:
                best.update(val=val_loss, epoch=epoch + 1)
                bad_epochs = 0
                if best_path is not None:
                    save_checkpoint(best_path, {"model": model.state_dict(), "epoch": epoch + 1,
                                                "config": asdict(config)})
                else:
                    best["state"] = {k: t.detach().clone() for k, t in model.state_dict().items()}
            else:
                bad_epochs += 1
            history.append(record)
            if last_path is not None:
                save_checkpoint(last_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "kernel_optimizer": None if kernel_opt is None else kernel_opt.state_dict(),
                    "history": history, "bad_epochs": bad_epochs, "best_val": best["val"],
                    "best_epoch": best["epoch"], "config": asdict(config),
                    "rng": {"torch": torch.get_rng_state(), "batches": batch_gen.get_state(),
                            "inner": inner_gen.get_state(),
                            "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}})
            if hasattr(epochs_bar, "set_postfix"):
                epochs_bar.set_postfix(train=f"{record['train_loss']:.4f}", val_mse=f"{v['mse']:.4f}",
                                       bad=bad_epochs)
            done_this_call += 1
            if stop_after_epochs is not None and done_this_call >= stop_after_epochs and epoch + 1 < config.epochs:
                result.update(interrupted=True, history=history)
                return result
        if hasattr(epochs_bar, "close"):
            epochs_bar.close()
        if best_path is not None and best_path.exists():
            model.load_state_dict(load_checkpoint(best_path, map_location=dev)["model"])
        elif best["state"] is not None:
            model.load_state_dict(best["state"])

    val_metrics = evaluate(model, val, config.eval_batch_size)
    test_metrics = evaluate(model, test, config.eval_batch_size)
    train_seconds = sum(r["seconds"] for r in history)
    trained_windows = sum(r["windows"] for r in history)
    result.update(
        interrupted=False, history=history, epochs_run=len(history), best_epoch=best["epoch"] or None,
        stopped_early=bool(config.trains and len(history) < config.epochs),
        val_mse=val_metrics["mse"], val_mae=val_metrics["mae"], test_mse=test_metrics["mse"],
        test_mae=test_metrics["mae"],
        seconds_per_epoch=(train_seconds / len(history)) if history else None,
        train_windows_per_s=(trained_windows / train_seconds) if train_seconds else None,
        wall_time_s=time.perf_counter() - start_time,
    )
    if isinstance(model, STanHopNet):
        alphas = model.alphas()
        result["alpha"] = {"min": float(alphas.min()), "max": float(alphas.max()), "mean": float(alphas.mean())}
    if out_dir is not None:
        out = Path(out_dir) / f"{key}.json"
        atomic_write_text(out, json.dumps(result, indent=1, default=float) + "\n")
        write_manifest(str(out) + ".manifest.json", command="uhop.experiments.forecasting.train_forecaster",
                       parameters=asdict(config), wall_time_s=result["wall_time_s"], device=str(device))
    return result


def _train_epoch(model, train, optimizer, kernel_opt, loss_fn, config, batch_gen, inner_gen, epoch, progress) -> dict:
    model.train()
    start = time.perf_counter()
    perm = train.starts[torch.randperm(len(train), generator=batch_gen)]
    if config.epoch_windows is not None:
        perm = perm[:config.epoch_windows]  # a fresh random sample of the training windows every epoch
    batches = range(0, len(perm), config.batch_size)
    bar = None
    if progress and _tqdm is not None:
        bar = _tqdm(batches, desc=f"epoch {epoch + 1}", leave=False)
        batches = bar
    total = 0.0
    seen = 0
    inner_seconds = 0.0
    sep_first = sep_last = None
    for i in batches:
        if kernel_opt is not None and config.inner_steps:
            t0 = time.perf_counter()
            for _ in range(config.inner_steps):
                idx = torch.randint(len(train), (config.batch_size,), generator=inner_gen)
                xi, _ = train.batch(train.starts[idx])
                value = separation_step(model, xi, kernel_opt, t=config.sep_t)
                sep_first = value if sep_first is None else sep_first
                sep_last = value
            inner_seconds += time.perf_counter() - t0
        x, y = train.batch(perm[i:i + config.batch_size])
        loss = loss_fn(_output(model, x, train.target), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(x)
        seen += len(x)
        if bar is not None:
            bar.set_postfix(loss=f"{total / seen:.4f}")
    if bar is not None:
        bar.close()
    return {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "sep_loss_first": sep_first,
            "sep_loss_last": sep_last, "seconds": time.perf_counter() - start, "inner_seconds": inner_seconds,
            "windows": seen, "lr": optimizer.param_groups[0]["lr"]}


def run(base: ForecastConfig, variants: Sequence[str], seeds: Iterable[int], **kwargs) -> list[dict]:
    """:func:`train_forecaster` for every variant and seed (``base`` with ``variant``/``seed`` replaced);
    the same data splits are loaded once and shared."""
    variants = [check_choice(v, "variant", VARIANTS) for v in variants]
    seeds = [check_int(s, "seed") for s in seeds]
    if not variants or not seeds:
        raise ValueError("variants and seeds must be non-empty")
    splits = kwargs.pop("splits", None) or _load_splits(base)
    return [train_forecaster(replace(base, variant=v, seed=s), splits=splits, **kwargs)
            for s in seeds for v in variants]


#: The notebook's (and ``notebooks/full_size.yml``'s) parameters whose 0 means "no cap" (None in the config).
ZERO_MEANS_ALL = ("max_train_windows", "max_val_windows", "max_test_windows", "epoch_windows")
#: Notebook parameters that are not fields of :class:`ForecastConfig`.
RUN_PARAMETERS = ("variants", "n_seeds", "threads", "out_dir", "checkpoint_dir", "device", "command")


def config_from_parameters(parameters: dict) -> tuple[ForecastConfig, list[str], list[int]]:
    """``(base config, variants, seeds)`` from the parameters of ``notebooks/forecasting.py`` (as written in
    ``notebooks/full_size.yml``): the one translation used by the notebook and by ``python -m
    uhop.experiments.forecasting train``, so that both give the same configurations (and run keys).

    ``variants`` is a comma-separated string, seeds are ``seed .. seed + n_seeds - 1``, a 0 in
    :data:`ZERO_MEANS_ALL` means no cap.  Unknown names raise ``ValueError`` listing the valid ones.
    """
    fields = {f for f in ForecastConfig.__dataclass_fields__}
    unknown = sorted(set(parameters) - fields - set(RUN_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown forecasting parameter(s) {unknown}; valid: {sorted(fields | set(RUN_PARAMETERS))}")
    kwargs = {k: v for k, v in parameters.items() if k in fields and k != "variant"}
    for name in ZERO_MEANS_ALL:
        if kwargs.get(name) == 0:
            kwargs[name] = None
    variants = [v.strip() for v in str(parameters.get("variants", "stanhop")).split(",") if v.strip()]
    for v in variants:
        check_choice(v, "variants", VARIANTS)
    seed = check_int(parameters.get("seed", 0), "seed")
    n_seeds = check_int(parameters.get("n_seeds", 1), "n_seeds", minimum=1)
    return ForecastConfig(**kwargs), variants, list(range(seed, seed + n_seeds))


# -- results ----------------------------------------------------------------------------------------------------

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

    from .report import paired_interval

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
        if dm["n"] < 2:
            verdict = "one seed"
        elif dm["high"] < 0:
            verdict = "U-Hop better"
        elif dm["low"] > 0:
            verdict = "U-Hop worse"
        else:
            verdict = "no resolved difference"
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


def tier_status(prefix: str, out_dir: str | os.PathLike, exact: bool = False) -> tuple[list[dict], list[dict]]:
    """``(finished, pending)`` runs of the ``notebooks/full_size.yml`` forecasting entries named ``prefix*``
    (``exact``: the one entry named ``prefix``):
    every (entry, variant, seed) they declare, split by whether ``out_dir/<run_key>.json`` exists.  Each item:
    ``{"run", "dataset", "horizon", "variant", "seed", "key"}``."""
    from ..reproduce import load_runs as load_full_size

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


# -- checks of finished runs ------------------------------------------------------------------------------------


def kernel_drift(model: nn.Module) -> dict | None:
    """How far U-Hop's feature maps moved from their identity start: ``||W - [I; 0]||_F / ||I||_F`` per
    :class:`uhop.nn.FeatureMap` (min, mean, max over the layers); ``None`` for a model without U-Hop."""
    from ..nn import FeatureMap

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
            _check_splits(splits, config, result["key"])
            splits_cache[data_key] = splits
        elif data_key not in splits_cache:
            splits_cache[data_key] = _load_splits(config)
        run_splits = splits_cache[data_key]
        test_set = run_splits.dataset("test", config.horizon)
        starts = _evenly_spaced(len(test_set), max_test_windows)
        model = build_model(config, run_splits.train.shape[1]).to(dev)
        if config.trains:
            best = Path(checkpoint_dir) / result["key"] / "best.pt"
            if not best.exists():
                raise FileNotFoundError(f"{best} not found: re-run {result['key']} with this checkpoint_dir")
            state = load_checkpoint(best, map_location=dev)
            if _settings(state["config"]) != _settings(result["config"]):
                raise ValueError(f"{best} was written by a different configuration than run {result['key']}")
            model.load_state_dict(state["model"])
        t0 = time.perf_counter()
        metrics = (evaluate(model, _Windows(test_set, starts, dev), config.eval_batch_size) if test
                   else {"mse": None, "mae": None})
        out.append({"key": result["key"], "dataset": config.dataset, "horizon": config.horizon,
                    "variant": config.variant, "seed": config.seed, "windows": len(starts) if test else 0,
                    "recorded_windows": result["windows"]["test"], "recorded_mse": result["test_mse"],
                    "recorded_mae": result["test_mae"], "mse": metrics["mse"], "mae": metrics["mae"],
                    "kernel_drift": kernel_drift(model), "seconds": time.perf_counter() - t0})
    return out


def _train_command(args) -> int:
    """``train``: some (variant, seed) runs of one ``notebooks/full_size.yml`` entry, one at a time."""
    from .notebook import full_size_entry, notebook_path

    params = dict(full_size_entry(args.run, "forecasting").get("parameters") or {})
    base, variants, seeds = config_from_parameters(params)
    if args.variants:
        variants = [check_choice(v.strip(), "variant", VARIANTS) for v in args.variants.split(",") if v.strip()]
    if args.seeds:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out_dir = notebook_path(params["out_dir"]) if params.get("out_dir") else None
    ckpt = notebook_path(params["checkpoint_dir"]) if params.get("checkpoint_dir") else None
    splits = _load_splits(base)
    for seed in seeds:
        for variant in variants:
            config = replace(base, variant=variant, seed=seed)
            if out_dir and (Path(out_dir) / f"{run_key(config)}.json").exists() and not args.force:
                print(f"{run_key(config)}: already done", flush=True)
                continue
            r = train_forecaster(config, device=args.device, splits=splits, out_dir=out_dir,
                                 checkpoint_dir=ckpt or None, progress=args.progress)
            print(f"{r['key']}: test MSE {r['test_mse']:.4f} MAE {r['test_mae']:.4f}, {r['epochs_run']} epochs "
                  f"(best {r['best_epoch']}), {r['wall_time_s']:.0f} s", flush=True)
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
    from .notebook import add_train_parser

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


if __name__ == "__main__":
    raise SystemExit(main())
