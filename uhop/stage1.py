r"""Stage I of Algorithm 1: learn W by minimising the separation loss of Phi(Xi).

``for i = 1..N: W <- W - gamma grad_W L_Phi(Xi)`` (Algorithm 1, lines 1-3),
then ``normalise the rows of W`` (line 4).  Full batch: one "epoch" is one
gradient step on all (training) memories.

By default the loss is taken on L2-normalised features (App D.2 and the
official code): on raw features ``log mean exp(-t ||W u - W v||^2)`` is
unbounded below, since scaling W up drives every distance to infinity.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ._checks import (
    check_choice,
    check_epochs,
    check_memories,
    check_positive,
    check_t,
)
from .kernel import KERNEL_INITS, LinearKernel, make_generator
from .loss import PAIRS, REDUCTIONS, _loss_from_sq_distances, _sq_distances, _upper

__all__ = ["fit_kernel", "FitHistory", "PRESETS", "OPTIMIZERS", "LR_SCHEDULES", "ENGINES"]

OPTIMIZERS = ("sgd", "adam")
#: "constant": lr_i = lr.  "inv_sqrt": lr_i = lr / sqrt(i + 1).
#: "official": the official ``train_kernel`` decay ``lr <- lr / sqrt(i + 1)``
#: applied after every step i = 0, 1, ..., which compounds to lr_i = lr / sqrt(i!).
LR_SCHEDULES = ("constant", "inv_sqrt", "official")
#: "gram": plain SGD on M x M matrices only (:mod:`uhop.stage1_gram`; no d x d work per step).
#: "autograd": any optimizer, the reference implementation.  "auto": "gram" for plain SGD,
#: "autograd" otherwise.
ENGINES = ("auto", "gram", "autograd")

_OFFICIAL_COMMON = dict(
    init="official",          # square W ~ N(0, 1), torch.randn(d, d)
    d_phi=None,
    pairs="distinct",         # torch.pdist: i < j
    optimizer="sgd",
    normalize_rows=False,     # the official code never row-normalises W
    normalize_features=True,  # F.normalize inside the loss
    train_fraction=0.5,       # train_kernel*(Xi[:int(0.5 * M)])
    t=2.0,
)
#: Presets reproducing the official code paths (MAGICS-LAB/UHop, utils/umhn_utils.py).
PRESETS = {
    # train_kernel_max, used by the README's memory_retrieval_max_loss.py
    "official": dict(_OFFICIAL_COMMON, loss="max", lr=10.0, lr_schedule="constant"),
    "official_max": dict(_OFFICIAL_COMMON, loss="max", lr=10.0, lr_schedule="constant"),
    # train_kernel, used by memory_retrieval.py / memory_retrieval_noise.py
    "official_avg": dict(_OFFICIAL_COMMON, loss="avg", lr=1.0, lr_schedule="official"),
}


class _Default:
    """Marks an argument the caller did not pass (so a preset may fill it).

    Its repr is the default value, so signatures still read ``epochs=100``.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)


FIT_DEFAULTS = dict(
    epochs=100, lr=1.0, t=2.0, loss="avg", pairs="distinct", optimizer="sgd", d_phi=None,
    normalize_rows=True, normalize_features=True, init="identity", train_fraction=1.0,
    lr_schedule="constant",
)
_D = {k: _Default(v) for k, v in FIT_DEFAULTS.items()}


def resolve_settings(preset, given: dict) -> dict:
    """Merge explicitly passed arguments, a preset, and the defaults.

    An explicit argument that differs from the preset's value is an error
    (silently overriding either would hide which protocol was run).
    """
    if preset is not None:
        preset = check_choice(preset, "preset", PRESETS)
        fixed = PRESETS[preset]
    else:
        fixed = {}
    out = {}
    for name, value in given.items():
        explicit = not isinstance(value, _Default)
        if name in fixed:
            if explicit and value != fixed[name]:
                raise ValueError(
                    f"{name}={value!r} conflicts with preset={preset!r}, which sets {name}={fixed[name]!r}"
                )
            out[name] = fixed[name]
        else:
            out[name] = value if explicit else value.value
    return out


@dataclass
class FitHistory:
    """Record of a Stage I run.

    ``loss``, ``min_distance`` and ``w_norm`` have ``epochs + 1`` entries:
    entry 0 is the initial W, entry i the W after i steps (before the row
    normalisation).  ``min_distance`` is min_{u != v} ||f_u - f_v|| of the
    features the loss sees (normalised when ``normalize_features``), i.e.
    2 R_Phi of Definition 2.1; ``w_norm`` is ||W||_F.  ``lr`` lists the learning
    rate used at each of the ``epochs`` steps.  ``final_*`` describe the
    returned kernel (after row normalisation, if any).
    """

    loss: list = field(default_factory=list)
    min_distance: list = field(default_factory=list)
    w_norm: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    epochs: int = 0
    n_train: int = 0
    settings: dict = field(default_factory=dict)
    final_loss: float = float("nan")
    final_min_distance: float = float("nan")
    final_w_norm: float = float("nan")

    def record(self, step: int, loss: float, min_distance: float, w_norm: float, progress: bool,
               engine: str) -> None:
        """Append the diagnostics of the W after ``step`` steps; print every ~10% when ``progress``."""
        self.loss.append(float(loss))
        self.min_distance.append(min_distance)
        self.w_norm.append(w_norm)
        if progress and (step % max(1, self.epochs // 10) == 0 or step == self.epochs):
            print(f"[uhop stage I, {engine}] step {step}/{self.epochs} loss {float(loss):.6g} "
                  f"min distance {min_distance:.4g} |W| {w_norm:.4g}", file=sys.stderr)

    #: epoch -> fitted kernel after that many steps (row-normalised like the final kernel),
    #: for the epochs requested with ``fit_kernel(checkpoints=...)``.
    checkpoints: dict = field(default_factory=dict)


def _lr_at(schedule: str, lr0: float, current: float, i: int) -> float:
    """Learning rate for step i (0-based); ``current`` is the previous step's."""
    if schedule == "constant":
        return lr0
    if schedule == "inv_sqrt":
        return lr0 / math.sqrt(i + 1)
    # official: after step i-1 the code sets lr <- lr / sqrt(i), compounding.
    return lr0 if i == 0 else current / math.sqrt(i)


def _measure(kernel, train, s):
    """(loss tensor with graph, min distance, ||W||_F) at the current W."""
    feats = train @ kernel.weight.T
    if s["normalize_features"]:
        feats = F.normalize(feats, dim=-1)
    D = _sq_distances(feats)
    loss = _loss_from_sq_distances(D, s["t"], s["loss"], s["pairs"])
    min_dist = float(_upper(D.detach()).min().sqrt())
    return loss, min_dist, float(kernel.weight.detach().norm())


def _fit_autograd(kernel: LinearKernel, train: torch.Tensor, s: dict, history: FitHistory,
                  progress: bool) -> None:
    """Full-batch gradient steps on W with autograd (any optimizer / schedule)."""
    W = kernel.weight
    W.requires_grad_(True)
    # Plain gradient descent (Algorithm 1, line 2) is written out: W <- W - lr grad.
    # (Same arithmetic as torch.optim.SGD without momentum, minus its overhead.)
    opt = torch.optim.Adam([W], lr=s["lr"]) if s["optimizer"] == "adam" else None
    lr = s["lr"]
    epochs = s["epochs"]
    for i in range(epochs + 1):
        if i in s.get("checkpoints", ()):
            history.checkpoints[i] = W.detach().clone()
        loss, min_dist, w_norm = _measure(kernel, train, s)
        history.record(i, loss.detach(), min_dist, w_norm, progress, "autograd")
        if i == epochs:
            break
        lr = _lr_at(s["lr_schedule"], s["lr"], lr, i)
        history.lr.append(lr)
        (grad,) = torch.autograd.grad(loss, W)
        if opt is None:
            with torch.no_grad():
                W.add_(grad, alpha=-lr)
        else:
            for group in opt.param_groups:
                group["lr"] = lr
            W.grad = grad
            opt.step()
            W.grad = None


def _fit_gram(kernel: LinearKernel, train: torch.Tensor, s: dict, history: "FitHistory",
              progress: bool) -> None:
    from .stage1_gram import fit_gram  # imported lazily: it imports helpers from this module

    fit_gram(kernel, train, s, history, progress)


_ENGINES = {"autograd": _fit_autograd, "gram": _fit_gram}


def fit_kernel(memories: torch.Tensor, *, epochs=_D["epochs"], lr=_D["lr"], t=_D["t"],
               loss=_D["loss"], pairs=_D["pairs"], optimizer=_D["optimizer"], d_phi=_D["d_phi"],
               normalize_rows=_D["normalize_rows"], normalize_features=_D["normalize_features"],
               init=_D["init"], train_fraction=_D["train_fraction"],
               lr_schedule=_D["lr_schedule"], seed=None, progress: bool = False,
               preset: str | None = None, kernel: LinearKernel | None = None,
               engine: str = "auto", checkpoints=()):
    r"""Stage I of Algorithm 1: fit W of Phi(x) = W x by minimising the separation loss.

    Args:
        memories: (M, d) stored patterns (rows).
        epochs: N, number of full-batch gradient steps (0 = no training).
        lr: step size gamma.
        t: RBF scale of Definition 2.2.
        loss: "avg" (Definition 2.2) or "max" (worst pair, App G.2).
        pairs: "distinct" (i < j) or "all" (M^2 ordered pairs); see :mod:`uhop.loss`.
        optimizer: "sgd" (plain gradient descent, Algorithm 1 line 2) or "adam".
        d_phi: feature dimension D_Phi (default d).
        normalize_rows: rescale the rows of W to unit norm once after Stage I
            (Algorithm 1, line 4).
        normalize_features: compute the loss on L2-normalised features
            (App D.2; default True, see the module docstring).
        init: "identity", "normal" or "official" (see :class:`~uhop.kernel.LinearKernel`).
        train_fraction: train on the first ``int(train_fraction * M)`` memories
            (the official masked-query scripts use 0.5).
        lr_schedule: "constant", "inv_sqrt" (lr / sqrt(i+1)) or "official"
            (compounding lr / sqrt(i!) of the official ``train_kernel``).
        seed: seed of a private ``torch.Generator`` for the random inits; the
            global RNG is never touched.  Same seed, same result.
        progress: print the loss every ~10% of the steps (stderr).
        preset: "official" / "official_max" (the README's ``train_kernel_max``:
            square N(0,1) W, max loss, SGD lr 10 constant, no row
            normalisation, first half of the memories) or "official_avg"
            (``train_kernel``: the same with the avg loss over distinct pairs,
            SGD lr 1 and the compounding decay).  A preset fills unspecified
            arguments; an explicit argument that contradicts it is a ValueError.
        kernel: start from (a copy of) this kernel instead of a fresh init.
        engine: "auto" (default: "gram" when the optimizer is plain SGD, else "autograd"),
            "gram" (Stage I on M x M matrices, no d x d work per step; plain SGD only; see
            :mod:`uhop.stage1_gram`) or "autograd" (reference, any optimizer).  Both give the
            same W up to rounding.
        checkpoints: epoch counts (each in 0..epochs) at which to keep a copy of the kernel,
            returned in ``history.checkpoints[n]`` (row-normalised when ``normalize_rows``),
            so that one run of N_max steps yields the kernels of a whole N sweep.

    Returns:
        ``(kernel, history)``: the fitted :class:`~uhop.kernel.LinearKernel`
        (same dtype and device as ``memories``) and a :class:`FitHistory`.
    """
    check_memories(memories)
    engine = check_choice(engine, "engine", ENGINES)
    given = dict(epochs=epochs, lr=lr, t=t, loss=loss, pairs=pairs, optimizer=optimizer, d_phi=d_phi,
                 normalize_rows=normalize_rows, normalize_features=normalize_features, init=init,
                 train_fraction=train_fraction, lr_schedule=lr_schedule)
    if kernel is not None:
        for name in ("init", "d_phi"):
            if not isinstance(given[name], _Default):
                raise ValueError(f"{name} cannot be combined with kernel= (the kernel fixes W)")
            given[name] = _Default(None if name == "d_phi" else "identity")
    s = resolve_settings(preset, given)
    s["epochs"] = check_epochs(s["epochs"])
    s["lr"] = check_positive(s["lr"], "lr")
    s["t"] = check_t(s["t"])
    check_choice(s["loss"], "loss", REDUCTIONS)
    check_choice(s["pairs"], "pairs", PAIRS)
    if s["loss"] == "max" and s["pairs"] != "distinct":
        raise ValueError("pairs must be 'distinct' for loss='max'")
    check_choice(s["optimizer"], "optimizer", OPTIMIZERS)
    check_choice(s["lr_schedule"], "lr_schedule", LR_SCHEDULES)
    if engine == "auto":
        engine = "gram" if s["optimizer"] == "sgd" else "autograd"
    elif engine == "gram" and s["optimizer"] != "sgd":
        raise ValueError(f"engine='gram' needs optimizer='sgd' (plain gradient descent), got "
                         f"optimizer={s['optimizer']!r}; use engine='autograd'")
    if isinstance(checkpoints, (str, bytes)) or not hasattr(checkpoints, "__iter__"):
        raise TypeError(f"checkpoints must be a sequence of epoch counts, got {type(checkpoints).__name__}")
    checkpoints = sorted({int(c) for c in checkpoints})
    bad = [c for c in checkpoints if not 0 <= c <= s["epochs"]]
    if bad:
        raise ValueError(f"checkpoints must lie in 0..epochs={s['epochs']}, got {bad}")
    s["checkpoints"] = frozenset(checkpoints)
    for name in ("normalize_rows", "normalize_features", "progress"):
        value = progress if name == "progress" else s[name]
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    frac = check_positive(s["train_fraction"], "train_fraction")
    if frac > 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1], got {frac}")
    M, d = memories.shape
    n_train = int(frac * M)
    if n_train < 2:
        raise ValueError(
            f"train_fraction={frac} of M={M} memories leaves {n_train} training memories; "
            "the separation loss needs at least 2 (memories too few?)"
        )
    train = memories[:n_train].detach()

    if kernel is None:
        check_choice(s["init"], "init", KERNEL_INITS)
        kernel = LinearKernel(d, s["d_phi"], init=s["init"], generator=make_generator(seed),
                              dtype=memories.dtype, device=memories.device)
    else:
        if not isinstance(kernel, LinearKernel):
            raise TypeError(f"kernel must be a uhop.LinearKernel or None, got {type(kernel).__name__}")
        if kernel.d != d or kernel.weight.dtype != memories.dtype:
            raise ValueError(f"kernel (d={kernel.d}, {kernel.weight.dtype}) does not match memories "
                             f"(d={d}, {memories.dtype})")
        kernel = copy.deepcopy(kernel)
        s["init"], s["d_phi"] = kernel.init, kernel.d_phi

    history = FitHistory(epochs=s["epochs"], n_train=n_train,
                         settings=dict(s, preset=preset, seed=seed, engine=engine, d=d,
                                       d_phi=kernel.d_phi))
    with torch.enable_grad():
        _ENGINES[engine](kernel, train, s, history, progress)
    if not bool(torch.isfinite(kernel.weight).all()):
        raise FloatingPointError(
            f"Stage I diverged: the fitted W has NaN/Inf entries after {s['epochs']} epochs at lr={s['lr']} "
            f"({engine} engine); lower lr, or check the memories (an all-zero memory has no direction to "
            f"normalise when normalize_features=True)")
    del history.settings["checkpoints"]
    if s["normalize_rows"]:
        kernel.normalize_rows_()
    # The engines leave raw weights in history.checkpoints; wrap them like the final kernel.
    for n, weight in list(history.checkpoints.items()):
        snapshot = LinearKernel.from_weight(weight)
        snapshot.init = kernel.init
        if s["normalize_rows"]:
            snapshot.normalize_rows_()
        history.checkpoints[n] = snapshot
    with torch.no_grad():
        final_loss, final_min, final_norm = _measure(kernel, train, s)
    history.final_loss = float(final_loss)
    history.final_min_distance = final_min
    history.final_w_norm = final_norm
    return kernel, history
