r"""Algorithm 2 of the paper ("U-Hop for learning") as a trainer for any model with U-Hop layers.

For each outer step (one mini-batch of size ``B_2`` of the task):

1. ``inner_steps`` (N_i) times: sample a mini-batch of size ``B_1``, run the model forward without
   gradients while every U-Hop layer records its (normalised) stored patterns, and take one SGD step
   (``kernel_lr``, 0.1 in Tables 5-6) on the separation loss of the mapped stored patterns
   ``Phi(Xi)`` -- **over the feature-map parameters only** (the parameters of every
   :class:`~uhop.nn.kernel.FeatureMap` in the model, found by module type);
2. one Adam step (``lr``) on the task loss over the model's parameters.

Which patterns form a memory set ``Xi``: each sample's own stored patterns (for the vision models, the
patch tokens of one image are the memories its CLS query retrieves from), the loss being averaged over
the ``B_1`` samples and over the U-Hop layers.  The separation loss is Definition 3.1 on unit-normalised
features by default (``sep_loss="dl"``; ``"def2.2"`` selects Definition 2.2); see
:func:`uhop.nn.kernel.dl_separation_loss` for why.

Gaps in the paper filled here (all configurable): the outer step also updates Phi
(``outer_includes_kernel=True``; Algorithm 2 names separate parameters theta and theta_F without saying
whether theta is part of theta_F); Algorithm 2 writes SGD for the outer step but Tables 5-6 use Adam;
N_i, B_1 and t are not given for classification (defaults 1, B_2 and 2).

Around these steps, per epoch, :class:`BilevelTrainer` owns what a training run needs and both experiment
packages use (classification and forecasting): batches from a :class:`~uhop.nn.batches.BatchSource`, a
learning-rate schedule, an evaluation with optional early stopping (the best weights restored), and atomic
checkpoints (:mod:`uhop.nn.checkpoints`) from which an interrupted run resumes bit for bit.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int, check_positive, check_t
from .batches import BatchSource, TensorBatches
from .checkpoints import global_rng_state, load_checkpoint, save_checkpoint, set_global_rng_state
from .kernel import PAIRS, SEPARATION_LOSSES, FeatureMap
from .layers import hopfield_layers, record_stored_patterns

try:  # tqdm is part of the book extra; the trainer works without it.
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None

# TensorBatches, save_checkpoint and load_checkpoint live in .batches / .checkpoints; importing them from here
# keeps working.
__all__ = ["BilevelTrainer", "EpochRecord", "kernel_parameters", "separation_step", "TensorBatches",
           "save_checkpoint", "load_checkpoint"]


def kernel_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every :class:`FeatureMap` in ``model`` (the U-Hop kernels), each once."""
    seen, out = set(), []
    for module in model.modules():
        if isinstance(module, FeatureMap):
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def _layer_loss(layer, t, sep_loss, normalize, pairs, include_state):
    patterns = layer.recorded_stored
    if include_state:
        patterns = torch.cat([layer.recorded_state, patterns], dim=-2)
    if pairs == "distinct" and patterns.shape[-2] < 2:
        return None  # one stored pattern: nothing to separate
    return layer.separation_loss(patterns, t, loss=sep_loss, normalize=normalize, pairs=pairs, normalized=True)


def separation_step(model: nn.Module, inputs, optimizer: torch.optim.Optimizer | None = None, *,
                    forward: Callable | None = None, t: float = 2.0, sep_loss: str = "dl", normalize: bool = True,
                    pairs: str = "distinct", include_state: bool = False) -> float:
    """One inner step of Algorithm 2 (line 4): forward ``inputs`` without gradients while recording the
    U-Hop layers' stored patterns, then (if ``optimizer`` is given) one step on the mean separation loss over
    the feature-map parameters only.  Returns the loss before the step (NaN if no layer has >= 2 patterns)."""
    params = kernel_parameters(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), record_stored_patterns(model) as layers:
            model(inputs) if forward is None else forward(model, inputs)
    finally:
        model.train(was_training)
    losses = [loss for loss in (_layer_loss(layer, t, sep_loss, normalize, pairs, include_state)
                                for layer in layers) if loss is not None]
    for layer in layers:
        layer.recorded_stored = layer.recorded_state = None
    if not losses:
        return float("nan")
    total = torch.stack(losses).mean()
    if optimizer is not None:
        grads = torch.autograd.grad(total, params, allow_unused=True)
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(total.detach())


@dataclass
class EpochRecord:
    """Metrics of one training epoch (``extra`` holds the evaluation results, e.g. test accuracy; ``lr`` is the
    outer learning rate the epoch was trained with; ``seconds`` is the training pass alone and ``eval_seconds`` the
    ``evaluate`` call after it, None without one or in a record older than the field)."""

    epoch: int
    train_loss: float
    train_acc: float | None
    sep_loss_first: float | None
    sep_loss_last: float | None
    seconds: float
    inner_seconds: float
    outer_seconds: float
    images: int
    extra: dict = field(default_factory=dict)
    lr: float | None = None
    eval_seconds: float | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EpochRecord":
        """Inverse of :meth:`as_dict` (a field missing from an older checkpoint gets its default)."""
        keys = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: d[k] for k in keys if k in d}, extra={k: v for k, v in d.items() if k not in keys})


#: Entries of a trainer checkpoint; anything without them (e.g. a forecasting ``last.pt`` written before the
#: forecasting loop used this trainer) is refused by name instead of failing with a KeyError.
_CHECKPOINT_KEYS = ("model", "outer_optimizer", "kernel_optimizer", "scheduler", "epoch", "history", "rng")


class BilevelTrainer:
    r"""Train a model with Algorithm 2 (bilevel: separation loss on Phi inside, task loss outside).

    Args:
        model: any ``nn.Module``; its U-Hop layers (``Hopfield(kernel="linear")``) are found by type.  A
            model without them is trained normally (no inner steps): the same trainer serves the baselines.
        lr: Adam learning rate of the outer (task) step.
        kernel_lr: SGD learning rate of the inner steps (0.1 in Tables 5-6).
        inner_steps: N_i, inner steps per outer step (0 disables Stage I).
        t: scale of the separation loss.
        sep_loss: ``"dl"`` (Definition 3.1, default) or ``"def2.2"``.
        normalize / pairs: passed to the loss (unit-normalised features, distinct pairs by default).
        include_state: add the layer's state (query) patterns to each memory set (the official code
            separates the CLS token from the patches too).
        task_loss: ``f(outputs, targets)`` (default cross-entropy).
        weight_decay: Adam weight decay.
        scheduler: the outer learning rate per epoch: ``None`` (constant), ``"cosine"`` (cosine annealing of
            ``lr`` to 0 over ``epochs`` of :meth:`fit`), ``"exponential"`` (``lr * lr_decay ** epoch``) or a
            function ``epoch -> lr`` of the 0-based epoch, applied before the epoch.
        lr_decay: the factor per epoch of ``scheduler="exponential"``.
        fused: ``torch.optim.Adam``'s ``fused`` (one kernel over all parameters: much faster steps for many
            small tensors); ``None`` leaves Adam's default.
        outer_includes_kernel: whether the task loss also trains Phi (default True).
        forward: ``f(model, inputs) -> outputs`` (default ``model(inputs)``), for the task and the inner steps.
        device: where the model and batches live.
        checkpoint_path: file for per-epoch checkpoints (model, both optimizers, scheduler, epoch, history,
            early-stopping state, every RNG state); written atomically.
        progress: show a tqdm progress bar.
        seed: seeds the batch order and the inner-batch sampling (when :meth:`fit` gets tensors).
        monitor: name of a metric returned by ``evaluate`` (lower is better); the weights of the epoch with its
            lowest value are kept and restored at the end of :meth:`fit`.
        patience: stop when ``monitor`` has not improved for this many epochs (0: never stop early).
        best_checkpoint_path: where the best weights are kept (default: in memory, or next to
            ``checkpoint_path`` as ``<name>.best<suffix>`` so that they survive an interruption).
        metadata: plain-Python entries written into every checkpoint (e.g. the run's configuration); a
            checkpoint whose entries differ is refused on resume.

    Time across interruptions: :meth:`elapsed` is the wall and process CPU time spent on this training since
    ``clock_start`` (the trainer's construction; a caller that did setup work before may set it to an earlier
    ``(time.perf_counter(), time.process_time())``) plus what the checkpoint it resumed from had spent, so a run
    resumed any number of times reports its whole cost (less the work an interrupted process did after its last
    checkpoint, which the next one redoes).  Every checkpoint records it (``"elapsed"``).
    """

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, kernel_lr: float = 0.1, inner_steps: int = 1,
                 t: float = 2.0, sep_loss: str = "dl", normalize: bool = True, pairs: str = "distinct",
                 include_state: bool = False, task_loss: Callable = F.cross_entropy, weight_decay: float = 0.0,
                 scheduler: str | Callable[[int], float] | None = None, lr_decay: float = 1.0,
                 fused: bool | None = None, outer_includes_kernel: bool = True,
                 forward: Callable | None = None, device: str | torch.device = "cpu",
                 checkpoint_path: str | os.PathLike | None = None, progress: bool = True, seed: int = 0,
                 monitor: str | None = None, patience: int = 0,
                 best_checkpoint_path: str | os.PathLike | None = None, metadata: dict | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model.to(device)
        self.device = torch.device(device)
        self.lr = check_positive(lr, "lr")
        self.kernel_lr = check_positive(kernel_lr, "kernel_lr")
        self.inner_steps = check_int(inner_steps, "inner_steps", minimum=0)
        self.t = check_t(t)
        self.sep_loss = check_choice(sep_loss, "sep_loss", SEPARATION_LOSSES)
        self.normalize = bool(normalize)
        self.pairs = check_choice(pairs, "pairs", PAIRS)
        self.include_state = bool(include_state)
        self.task_loss = task_loss
        self.lr_decay = check_positive(lr_decay, "lr_decay")
        if scheduler is None or callable(scheduler):
            self.scheduler_name = None
            self.lr_schedule = scheduler
        else:
            self.scheduler_name = check_choice(scheduler, "scheduler", ("cosine", "exponential"))
            # the product written as the forecasting loop always wrote it: the same floats, bit for bit
            self.lr_schedule = (lambda epoch: self.lr * self.lr_decay ** epoch) if scheduler == "exponential" else None
        self.forward = forward
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.progress = progress
        self.seed = check_int(seed, "seed")
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a metric of evaluate, got {type(monitor).__name__}")
        self.monitor = monitor
        self.patience = check_int(patience, "patience", minimum=0)
        if self.patience and monitor is None:
            raise ValueError("patience needs monitor (the evaluate metric whose lack of progress stops training)")
        if best_checkpoint_path is None and monitor is not None and self.checkpoint_path is not None:
            p = self.checkpoint_path
            best_checkpoint_path = p.with_name(f"{p.stem}.best{p.suffix}")
        self.best_checkpoint_path = None if best_checkpoint_path is None else Path(best_checkpoint_path)
        self.metadata = dict(metadata or {})
        clash = sorted(set(self.metadata) & set(_CHECKPOINT_KEYS + ("best",)))
        if clash:
            raise ValueError(f"metadata keys {clash} are the trainer's own checkpoint entries; rename them")
        self.kernel_params = kernel_parameters(model)
        self.uhop = bool(self.kernel_params) and bool(hopfield_layers(model, uhop_only=True))
        kernel_ids = {id(p) for p in self.kernel_params}
        outer = [p for p in model.parameters()
                 if p.requires_grad and (outer_includes_kernel or id(p) not in kernel_ids)]
        adam_options = {} if fused is None else {"fused": bool(fused)}
        self.outer_optimizer = torch.optim.Adam(outer, lr=self.lr, weight_decay=weight_decay, **adam_options)
        self.kernel_optimizer = (torch.optim.SGD(self.kernel_params, lr=self.kernel_lr)
                                 if self.kernel_params else None)
        self.scheduler = None
        self.history: list[EpochRecord] = []
        self.start_epoch = 0
        # early stopping: the best monitored value, its 1-based epoch (0: none yet), epochs since it improved
        self.best_value, self.best_epoch, self.bad_epochs = float("inf"), 0, 0
        self._best_state: dict | None = None
        self.stopped_early = self.interrupted = False
        self.clock_start = (time.perf_counter(), time.process_time())
        # what earlier processes spent on this run (from the checkpoint resumed from); cpu_s None: not recorded
        self.elapsed_before: dict = {"wall_s": 0.0, "cpu_s": 0.0, "processes": 0}

    def elapsed(self, now: tuple[float, float] | None = None) -> dict:
        """``{"wall_s", "cpu_s", "processes"}``: wall and CPU seconds spent on this training in every process so
        far (this one since ``clock_start``, earlier ones from the checkpoint resumed from), and how many
        processes that was.  ``cpu_s`` is None when an earlier process's CPU time is unknown (a checkpoint of
        an older version, whose wall time is then the sum of its epochs' training and evaluation seconds).
        ``now``: the ``(time.perf_counter(), time.process_time())`` to count to (default: the present)."""
        wall0, cpu0 = self.clock_start
        wall1, cpu1 = (time.perf_counter(), time.process_time()) if now is None else now
        before = self.elapsed_before
        return {"wall_s": before["wall_s"] + wall1 - wall0,
                "cpu_s": None if before["cpu_s"] is None else before["cpu_s"] + cpu1 - cpu0,
                "processes": before["processes"] + 1}

    # -- checkpoints --------------------------------------------------------------------------------------

    def state_dict(self, batches: BatchSource | None = None, inner: BatchSource | None = None) -> dict:
        rng = global_rng_state()
        if batches is not None:
            rng["batches"] = batches.get_state()
        if inner is not None and inner is not batches:
            rng["inner"] = inner.get_state()
        return {
            "model": self.model.state_dict(),
            "outer_optimizer": self.outer_optimizer.state_dict(),
            "kernel_optimizer": None if self.kernel_optimizer is None else self.kernel_optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch": len(self.history) - 1,
            "history": [r.as_dict() for r in self.history],
            "best": {"value": self.best_value, "epoch": self.best_epoch, "bad_epochs": self.bad_epochs},
            "rng": rng,
            "elapsed": self.elapsed(),
            **self.metadata,
        }

    def load_checkpoint(self, path: str | os.PathLike) -> dict:
        """Restore model, optimizers, scheduler, history and early-stopping state from ``path``; returns the raw
        checkpoint.  Refuses (``ValueError`` naming the file) a file that is not a trainer checkpoint or whose
        ``metadata`` entries differ from this trainer's."""
        ckpt = load_checkpoint(path, map_location=self.device)
        missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
        if missing:
            raise ValueError(f"{path} is not a checkpoint of uhop.nn.BilevelTrainer (it has no {missing}); it was "
                             "probably written by an older version of uhop: delete it or pass resume=False")
        differ = sorted(k for k, v in self.metadata.items() if k not in ckpt or ckpt[k] != v)
        if differ:
            raise ValueError(f"{path} was written by a different configuration ({', '.join(differ)} differ); "
                             "delete it or pass resume=False")
        self.model.load_state_dict(ckpt["model"])
        self.outer_optimizer.load_state_dict(ckpt["outer_optimizer"])
        if self.kernel_optimizer is not None and ckpt["kernel_optimizer"] is not None:
            self.kernel_optimizer.load_state_dict(ckpt["kernel_optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.history = [EpochRecord.from_dict(d) for d in ckpt["history"]]
        self.start_epoch = ckpt["epoch"] + 1
        if "elapsed" in ckpt:
            self.elapsed_before = dict(ckpt["elapsed"])
        else:  # an older checkpoint: its epochs' own timings are what is known of the time spent
            self.elapsed_before = {"wall_s": sum(r.seconds + (r.eval_seconds or 0.0) for r in self.history),
                                   "cpu_s": None, "processes": 1}
        best = ckpt.get("best", {"value": float("inf"), "epoch": 0, "bad_epochs": 0})  # older checkpoints: none
        self.best_value, self.best_epoch, self.bad_epochs = best["value"], best["epoch"], best["bad_epochs"]
        if self.monitor is not None and self.best_epoch and self.best_checkpoint_path is not None \
                and not self.best_checkpoint_path.exists():
            raise FileNotFoundError(f"{self.best_checkpoint_path} is missing next to {path}; cannot resume")
        return ckpt

    # -- training -------------------------------------------------------------------------------------------

    def _call(self, x):
        return self.model(x) if self.forward is None else self.forward(self.model, x)

    def inner_step(self, x) -> float:
        """One separation-loss SGD step on the kernels (Algorithm 2, line 4)."""
        return separation_step(self.model, x, self.kernel_optimizer, forward=self.forward, t=self.t,
                               sep_loss=self.sep_loss, normalize=self.normalize, pairs=self.pairs,
                               include_state=self.include_state)

    def _sources(self, train, batch_size, inner_batch_size, transform, inner_transform, inner):
        """The task and inner batch sources of :meth:`fit`."""
        if isinstance(train, BatchSource):
            given = [n for n, v in (("inner_batch_size", inner_batch_size), ("transform", transform),
                                    ("inner_transform", inner_transform)) if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply to tensors (X, y); a batch source makes its own batches")
            return train, train if inner is None else inner
        if not (isinstance(train, (tuple, list)) and len(train) == 2):
            raise TypeError("train must be a pair (X, y) of tensors or a batch source (uhop.nn.batches.BatchSource)")
        X, y = train
        for name, t in (("X", X), ("y", y)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"train = (X, y): {name} must be a torch.Tensor, got {type(t).__name__} "
                                "(convert with torch.as_tensor)")
        device = self.device
        move = transform if transform is not None else (lambda x: x.to(device))
        batches = TensorBatches(X, y, batch_size, seed=self.seed, transform=move)
        if inner is None:
            inner = TensorBatches(X, y, inner_batch_size or batch_size, seed=self.seed + 1,
                                  transform=inner_transform if inner_transform is not None else move)
        return batches, inner

    def fit(self, train, epochs: int, *, batch_size: int = 128, inner_batch_size: int | None = None,
            transform: Callable | None = None, evaluate: Callable[[nn.Module], dict] | None = None,
            resume: bool = True, callback: Callable[[EpochRecord], None] | None = None,
            inner_transform: Callable | None = None, inner: BatchSource | None = None,
            stop_after_epochs: int | None = None) -> list[EpochRecord]:
        """Train for ``epochs`` epochs over ``train``: a pair ``(X, y)`` of tensors (batches of ``batch_size`` =
        B_2) or a :class:`~uhop.nn.batches.BatchSource`.

        For tensors, ``inner_batch_size`` is B_1 (default B_2); ``transform`` maps an X batch to model input (it
        should also move it to the device); ``inner_transform`` does so for the inner (Stage I) batches (default
        ``transform``; a deterministic one keeps a random augmentation's generator in step between a model with
        and without U-Hop).  ``inner`` is the source of the inner batches (default: the tensors with seed + 1,
        or the source ``train`` itself).  ``evaluate(model)`` returns extra metrics per epoch (e.g. test
        accuracy; the ``monitor`` metric).  With a ``checkpoint_path`` that exists and ``resume=True``, training
        continues after its epoch.  ``stop_after_epochs`` ends this call after that many epochs (an
        interruption: ``self.interrupted``, the best weights are not restored).
        """
        epochs = check_int(epochs, "epochs", minimum=0)
        batches, inner = self._sources(train, batch_size, inner_batch_size, transform, inner_transform, inner)
        if self.scheduler_name == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.outer_optimizer, T_max=max(epochs, 1))
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            ckpt = self.load_checkpoint(self.checkpoint_path)
            set_global_rng_state(ckpt["rng"])
            if "batches" in ckpt["rng"]:
                batches.set_state(ckpt["rng"]["batches"])
            if "inner" in ckpt["rng"] and inner is not batches:
                inner.set_state(ckpt["rng"]["inner"])
        self.stopped_early = self.interrupted = False
        done = 0
        for epoch in range(self.start_epoch, epochs):
            if self.patience and self.bad_epochs >= self.patience:
                self.stopped_early = True
                break
            if self.lr_schedule is not None:
                for group in self.outer_optimizer.param_groups:
                    group["lr"] = self.lr_schedule(epoch)
            if hasattr(batches, "set_epoch"):  # a random augmentation reseeded per epoch resumes exactly
                batches.set_epoch(epoch)
            record = self._epoch(epoch, batches, inner, epochs)
            if evaluate is not None:
                was = self.model.training
                self.model.eval()
                start = time.perf_counter()
                with torch.no_grad():
                    record.extra.update(evaluate(self.model))
                record.eval_seconds = time.perf_counter() - start
                self.model.train(was)
            if self.monitor is not None:
                self._track_best(record)
            self.history.append(record)
            if self.scheduler is not None:
                self.scheduler.step()
            if self.checkpoint_path is not None:
                save_checkpoint(self.checkpoint_path, self.state_dict(batches, inner))
            if callback is not None:
                callback(record)
            done += 1
            if stop_after_epochs is not None and done >= stop_after_epochs and epoch + 1 < epochs:
                self.interrupted = True
                break
        self.start_epoch = len(self.history)
        if self.monitor is not None and not self.interrupted:
            self.restore_best()
        return self.history

    def _track_best(self, record: EpochRecord) -> None:
        if self.monitor not in record.extra:
            raise KeyError(f"monitor {self.monitor!r} is not among the metrics of evaluate: {sorted(record.extra)}")
        value = record.extra[self.monitor]
        if value < self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = value, record.epoch, 0
            if self.best_checkpoint_path is not None:
                save_checkpoint(self.best_checkpoint_path, {"model": self.model.state_dict(), "epoch": record.epoch,
                                                            **self.metadata})
            else:
                self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def restore_best(self) -> None:
        """Load the weights of the best epoch so far (by ``monitor``) into the model, if any were kept."""
        if self.best_checkpoint_path is not None and self.best_checkpoint_path.exists():
            self.model.load_state_dict(load_checkpoint(self.best_checkpoint_path, map_location=self.device)["model"])
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    def _epoch(self, epoch: int, batches: BatchSource, inner: BatchSource, epochs: int) -> EpochRecord:
        self.model.train()
        total_loss, correct, seen, counted = 0.0, 0, 0, 0
        sep_first = sep_last = None
        t_inner = t_outer = 0.0
        start = time.perf_counter()
        it = batches.epoch()
        bar = None
        if self.progress and _tqdm is not None:
            bar = _tqdm(it, total=len(batches), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
            it = bar
        for xb, yb in it:
            if self.uhop and self.inner_steps:
                t0 = time.perf_counter()
                for _ in range(self.inner_steps):
                    xi, _ = inner.sample(inner.batch_size)
                    value = self.inner_step(xi)
                    if sep_first is None:
                        sep_first = value
                    sep_last = value
                t_inner += time.perf_counter() - t0
            t0 = time.perf_counter()
            yb = yb.to(self.device)
            out = self._call(xb)
            loss = self.task_loss(out, yb)
            self.outer_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.outer_optimizer.step()
            t_outer += time.perf_counter() - t0
            n = len(yb)
            total_loss += float(loss.detach()) * n
            seen += n
            if out.ndim == 2 and not torch.is_floating_point(yb):
                correct += int((out.detach().argmax(-1) == yb).sum())
                counted += n
            if bar is not None:
                bar.set_postfix(loss=f"{total_loss / seen:.3f}",
                                acc=f"{correct / counted:.3f}" if counted else "-")
        if bar is not None:
            bar.close()
        return EpochRecord(epoch=epoch + 1, train_loss=total_loss / max(seen, 1),
                           train_acc=(correct / counted) if counted else None, sep_loss_first=sep_first,
                           sep_loss_last=sep_last, seconds=time.perf_counter() - start, inner_seconds=t_inner,
                           outer_seconds=t_outer, images=seen, lr=self.outer_optimizer.param_groups[0]["lr"])
