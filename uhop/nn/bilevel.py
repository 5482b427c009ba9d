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
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int, check_positive, check_t
from .kernel import PAIRS, SEPARATION_LOSSES, FeatureMap
from .layers import hopfield_layers, record_stored_patterns

try:  # tqdm is part of the book extra; the trainer works without it.
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None

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


class TensorBatches:
    """Seeded mini-batches over in-memory tensors ``(X, y)`` (much faster than a per-item DataLoader).

    ``epoch()`` yields a fresh permutation's batches; ``sample(b)`` draws ``b`` distinct random rows.
    ``transform`` is applied to each X batch (e.g. uint8 -> normalised float on the device).
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0,
                 transform: Callable | None = None, drop_last: bool = False):
        if len(X) != len(y):
            raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
        if len(X) == 0:
            raise ValueError("the training set is empty")
        self.X, self.y = X, y
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.transform = transform
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.X)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _get(self, idx):
        x = self.X[idx]
        return (self.transform(x) if self.transform is not None else x), self.y[idx]

    def epoch(self) -> Iterator:
        perm = torch.randperm(len(self.X), generator=self.generator)
        for i in range(len(self)):
            yield self._get(perm[i * self.batch_size:(i + 1) * self.batch_size])

    def sample(self, b: int):
        n = len(self.X)
        idx = torch.randperm(n, generator=self.generator)[:min(b, n)]
        return self._get(idx)


@dataclass
class EpochRecord:
    """Metrics of one training epoch (``extra`` holds the evaluation results, e.g. test accuracy)."""

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

    def as_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d


def _rng_state() -> dict:
    """Every global RNG state as tensors and plain Python types (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                         int(has_gauss), float(cached)),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy().astype(np.uint32) if isinstance(keys, torch.Tensor) else np.asarray(keys, dtype=np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(..., weights_only=True)``: only
    tensors and plain Python containers and scalars are accepted, so a checkpoint received from someone else
    cannot run code when it is loaded (a full unpickle can).  Anything else raises ``ValueError`` naming the
    file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds objects other than tensors and plain Python types, which uhop does not "
                         f"load (unpickling them could run code); re-create the checkpoint with this version of "
                         f"uhop. Details: {str(err).splitlines()[0]}") from None


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
        scheduler: ``None`` or ``"cosine"`` (cosine annealing of ``lr`` to 0 over ``epochs`` of :meth:`fit`).
        outer_includes_kernel: whether the task loss also trains Phi (default True).
        forward: ``f(model, inputs) -> outputs`` (default ``model(inputs)``).
        device: where the model and batches live.
        checkpoint_path: file for per-epoch checkpoints (model, both optimizers, scheduler, epoch,
            history, all RNG states); written atomically.
        progress: show a tqdm progress bar.
        seed: seeds the batch order and the inner-batch sampling.
    """

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, kernel_lr: float = 0.1, inner_steps: int = 1,
                 t: float = 2.0, sep_loss: str = "dl", normalize: bool = True, pairs: str = "distinct",
                 include_state: bool = False, task_loss: Callable = F.cross_entropy, weight_decay: float = 0.0,
                 scheduler: str | None = None, outer_includes_kernel: bool = True,
                 forward: Callable | None = None, device: str | torch.device = "cpu",
                 checkpoint_path: str | os.PathLike | None = None, progress: bool = True, seed: int = 0):
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
        self.scheduler_name = None if scheduler is None else check_choice(scheduler, "scheduler", ("cosine",))
        self.forward = forward
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.progress = progress
        self.seed = check_int(seed, "seed")
        self.kernel_params = kernel_parameters(model)
        self.uhop = bool(self.kernel_params) and bool(hopfield_layers(model, uhop_only=True))
        kernel_ids = {id(p) for p in self.kernel_params}
        outer = [p for p in model.parameters() if p.requires_grad and (outer_includes_kernel or id(p) not in kernel_ids)]
        self.outer_optimizer = torch.optim.Adam(outer, lr=self.lr, weight_decay=weight_decay)
        self.kernel_optimizer = (torch.optim.SGD(self.kernel_params, lr=self.kernel_lr)
                                 if self.kernel_params else None)
        self.scheduler = None
        self.history: list[EpochRecord] = []
        self.start_epoch = 0

    # -- checkpoints --------------------------------------------------------------------------------------

    def state_dict(self, batches: TensorBatches | None = None, inner: TensorBatches | None = None) -> dict:
        rng = _rng_state()
        if batches is not None:
            rng["batches"] = batches.generator.get_state()
        if inner is not None:
            rng["inner"] = inner.generator.get_state()
        return {
            "model": self.model.state_dict(),
            "outer_optimizer": self.outer_optimizer.state_dict(),
            "kernel_optimizer": None if self.kernel_optimizer is None else self.kernel_optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch": len(self.history) - 1,
            "history": [r.as_dict() for r in self.history],
            "rng": rng,
        }

    def load_checkpoint(self, path: str | os.PathLike) -> dict:
        """Restore model, optimizers, scheduler and history from ``path``; returns the raw checkpoint."""
        ckpt = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        self.outer_optimizer.load_state_dict(ckpt["outer_optimizer"])
        if self.kernel_optimizer is not None and ckpt["kernel_optimizer"] is not None:
            self.kernel_optimizer.load_state_dict(ckpt["kernel_optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        keys = set(EpochRecord.__dataclass_fields__) - {"extra"}
        self.history = [EpochRecord(**{k: d[k] for k in keys}, extra={k: v for k, v in d.items() if k not in keys})
                        for d in ckpt["history"]]
        self.start_epoch = ckpt["epoch"] + 1
        return ckpt

    # -- training -------------------------------------------------------------------------------------------

    def _call(self, x):
        return self.model(x) if self.forward is None else self.forward(self.model, x)

    def inner_step(self, x) -> float:
        """One separation-loss SGD step on the kernels (Algorithm 2, line 4)."""
        return separation_step(self.model, x, self.kernel_optimizer, forward=self.forward, t=self.t,
                               sep_loss=self.sep_loss, normalize=self.normalize, pairs=self.pairs,
                               include_state=self.include_state)

    def fit(self, train: tuple[torch.Tensor, torch.Tensor], epochs: int, *, batch_size: int = 128,
            inner_batch_size: int | None = None, transform: Callable | None = None,
            evaluate: Callable[[nn.Module], dict] | None = None, resume: bool = True,
            callback: Callable[[EpochRecord], None] | None = None,
            inner_transform: Callable | None = None) -> list[EpochRecord]:
        """Train for ``epochs`` epochs over ``train = (X, y)`` (batches of ``batch_size`` = B_2).

        ``inner_batch_size`` is B_1 (default B_2); ``transform`` maps an X batch to model input (it should
        also move it to the device); ``inner_transform`` does so for the inner (Stage I) batches (default
        ``transform``; a deterministic one keeps a random augmentation's generator in step between a model with
        and without U-Hop); ``evaluate(model)`` returns extra metrics per epoch (e.g. test accuracy).
        With a ``checkpoint_path`` that exists and ``resume=True``, training continues after its epoch.
        """
        epochs = check_int(epochs, "epochs", minimum=0)
        if not (isinstance(train, (tuple, list)) and len(train) == 2):
            raise TypeError("train must be a pair (X, y) of tensors")
        X, y = train
        for name, t in (("X", X), ("y", y)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"train = (X, y): {name} must be a torch.Tensor, got {type(t).__name__} "
                                "(convert with torch.as_tensor)")
        device = self.device
        move = transform if transform is not None else (lambda x: x.to(device))
        batches = TensorBatches(X, y, batch_size, seed=self.seed, transform=move)
        inner = TensorBatches(X, y, inner_batch_size or batch_size, seed=self.seed + 1,
                              transform=inner_transform if inner_transform is not None else move)
        if self.scheduler_name == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.outer_optimizer, T_max=max(epochs, 1))
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            ckpt = self.load_checkpoint(self.checkpoint_path)
            _set_rng_state(ckpt["rng"])
            if "batches" in ckpt["rng"]:
                batches.generator.set_state(ckpt["rng"]["batches"])
            if "inner" in ckpt["rng"]:
                inner.generator.set_state(ckpt["rng"]["inner"])
        for epoch in range(self.start_epoch, epochs):
            if hasattr(move, "set_epoch"):  # a random augmentation reseeded per epoch resumes exactly
                move.set_epoch(epoch)
            record = self._epoch(epoch, batches, inner, epochs)
            if evaluate is not None:
                was = self.model.training
                self.model.eval()
                with torch.no_grad():
                    record.extra.update(evaluate(self.model))
                self.model.train(was)
            self.history.append(record)
            if self.scheduler is not None:
                self.scheduler.step()
            if self.checkpoint_path is not None:
                save_checkpoint(self.checkpoint_path, self.state_dict(batches, inner))
            if callback is not None:
                callback(record)
        self.start_epoch = max(self.start_epoch, epochs)
        return self.history

    def _epoch(self, epoch: int, batches: TensorBatches, inner: TensorBatches, epochs: int) -> EpochRecord:
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
                           outer_seconds=t_outer, images=seen)
