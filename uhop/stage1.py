r"""Stage I of Algorithm 1: learn W by minimising the separation loss of Phi(Xi).

``for i = 1..N: W <- W - gamma grad_W L_Phi(Xi)`` (Algorithm 1, lines 1-3),
then ``normalise the rows of W`` (line 4).  Full batch: one "epoch" is one
gradient step on all (training) memories.

By default the loss is taken on L2-normalised features (App D.2 and the
official code): on raw features ``log mean exp(-t ||W u - W v||^2)`` is
unbounded below, since scaling W up drives every distance to infinity.

How Stage I is run is one frozen :class:`Stage1Settings`; the presets of the
official code are instances of it.  The number of steps N is not part of it:
N is the length of a run (one run of N_max steps yields every smaller N
through ``checkpoints``), and no preset fixes it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ._checks import (
    check_bool,
    check_choice,
    check_epochs,
    check_int,
    check_memories,
    check_positive,
    check_t,
)
from .kernel import KERNEL_INITS, LinearKernel, make_generator
from .loss import PAIRS, REDUCTIONS, loss_from_sq_distances, sq_distances_from_gram, upper_triangle
from .stage1_gram import fit_gram

__all__ = ["fit_kernel", "FitHistory", "Stage1Settings", "PRESETS", "FIT_DEFAULTS", "DEFAULT_EPOCHS",
           "OPTIMIZERS", "LR_SCHEDULES", "ENGINES"]

OPTIMIZERS = ("sgd", "adam")
#: "constant": lr_i = lr.  "inv_sqrt": lr_i = lr / sqrt(i + 1).
#: "official": the official ``train_kernel`` decay ``lr <- lr / sqrt(i + 1)``
#: applied after every step i = 0, 1, ..., which compounds to lr_i = lr / sqrt(i!).
LR_SCHEDULES = ("constant", "inv_sqrt", "official")
#: "gram": plain SGD on M x M matrices only (:mod:`uhop.stage1_gram`; no d x d work per step).
#: "autograd": any optimizer, the reference implementation.  "auto": "gram" for plain SGD,
#: "autograd" otherwise.
ENGINES = ("auto", "gram", "autograd")
#: N, the number of Stage I steps when none is given (Table 4 of the paper sweeps N = 0..1000).
DEFAULT_EPOCHS = 100


@dataclass(frozen=True)
class Stage1Settings(Mapping):
    """How Stage I is run (everything but the number of steps N); validated on construction.

    Fields (the arguments of :func:`fit_kernel` of the same names):

    * ``lr``: step size gamma (> 0); ``lr_schedule``: "constant", "inv_sqrt" (lr / sqrt(i+1)) or
      "official" (the compounding lr / sqrt(i!) of the official ``train_kernel``).
    * ``t``: RBF scale of Definition 2.2 (> 0); ``loss``: "avg" (Definition 2.2) or "max" (worst
      pair, App G.2); ``pairs``: "distinct" (i < j) or "all" (M^2 ordered pairs), see :mod:`uhop.loss`.
    * ``optimizer``: "sgd" (plain gradient descent, Algorithm 1 line 2) or "adam".
    * ``d_phi``: feature dimension D_Phi (None: d); ``init``: "identity", "normal" or "official"
      (see :class:`~uhop.kernel.LinearKernel`).
    * ``normalize_rows``: rescale the rows of W to unit norm after Stage I (Algorithm 1, line 4);
      ``normalize_features``: take the loss on L2-normalised features (App D.2).
    * ``train_fraction``: train on the first ``int(train_fraction * M)`` memories, in (0, 1].

    Frozen: derive variants with :meth:`replace`.  It is also a read-only mapping of field name
    to value, so ``dict(settings)`` and ``fit_kernel(memories, **settings)`` work.
    """

    lr: float = 1.0
    t: float = 2.0
    loss: str = "avg"
    pairs: str = "distinct"
    optimizer: str = "sgd"
    d_phi: int | None = None
    normalize_rows: bool = True
    normalize_features: bool = True
    init: str = "identity"
    train_fraction: float = 1.0
    lr_schedule: str = "constant"

    def __post_init__(self):
        def fix(name, value):  # store the checked (normalised) value in the frozen instance
            object.__setattr__(self, name, value)

        fix("lr", check_positive(self.lr, "lr"))
        fix("t", check_t(self.t))
        check_choice(self.loss, "loss", REDUCTIONS)
        check_choice(self.pairs, "pairs", PAIRS)
        if self.loss == "max" and self.pairs != "distinct":
            raise ValueError("pairs must be 'distinct' for loss='max'")
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        if self.d_phi is not None:
            fix("d_phi", check_int(self.d_phi, "d_phi", minimum=1))
        check_choice(self.init, "init", KERNEL_INITS)
        for name in ("normalize_rows", "normalize_features"):
            check_bool(getattr(self, name), name)
        frac = check_positive(self.train_fraction, "train_fraction")
        if frac > 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1], got {frac}")
        fix("train_fraction", frac)

    def replace(self, **changes) -> "Stage1Settings":
        """A copy with some fields changed (validated); an unknown name is a TypeError."""
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise TypeError(f"unknown Stage I setting(s) {', '.join(unknown)}; valid: {', '.join(_FIELDS)}")
        return dataclasses.replace(self, **changes)

    def learning_rates(self, epochs: int) -> list[float]:
        """The step size of each of the ``epochs`` steps, computed once for either engine."""
        epochs = check_epochs(epochs)
        if self.lr_schedule == "constant":
            return [self.lr] * epochs
        if self.lr_schedule == "inv_sqrt":
            return [self.lr / math.sqrt(i + 1) for i in range(epochs)]
        # official: after step i - 1 the code sets lr <- lr / sqrt(i), compounding.
        rates, lr = [], self.lr
        for i in range(epochs):
            lr = lr if i == 0 else lr / math.sqrt(i)
            rates.append(lr)
        return rates

    # Read-only mapping of the fields (dict(settings), **settings).
    def __getitem__(self, name):
        if name not in _FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(_FIELDS)

    def __len__(self):
        return len(_FIELDS)


_FIELDS = tuple(f.name for f in dataclasses.fields(Stage1Settings))

_OFFICIAL = Stage1Settings(
    init="official",          # square W ~ N(0, 1), torch.randn(d, d)
    pairs="distinct",         # torch.pdist: i < j
    optimizer="sgd",
    normalize_rows=False,     # the official code never row-normalises W
    normalize_features=True,  # F.normalize inside the loss
    train_fraction=0.5,       # train_kernel*(Xi[:int(0.5 * M)])
    t=2.0,
)
#: Presets reproducing the official code paths (MAGICS-LAB/UHop, utils/umhn_utils.py).  A preset
#: fixes every setting (not N): :func:`fit_kernel` refuses an argument that contradicts it.
PRESETS = {
    # train_kernel_max, used by the README's memory_retrieval_max_loss.py
    "official": _OFFICIAL.replace(loss="max", lr=10.0, lr_schedule="constant"),
    "official_max": _OFFICIAL.replace(loss="max", lr=10.0, lr_schedule="constant"),
    # train_kernel, used by memory_retrieval.py / memory_retrieval_noise.py
    "official_avg": _OFFICIAL.replace(loss="avg", lr=1.0, lr_schedule="official"),
}
#: The defaults of :func:`fit_kernel` as a plain dict (settings and ``epochs``).
FIT_DEFAULTS = dict(Stage1Settings(), epochs=DEFAULT_EPOCHS)


def _resolve(settings, preset, overrides) -> Stage1Settings:
    """The settings of one run: ``settings=`` or a preset (or the defaults), then the keyword overrides.

    An override that differs from the preset's value is an error (silently overriding either
    would hide which protocol was run); overrides of a ``settings=`` object simply replace.
    """
    if preset is None:
        base = Stage1Settings() if settings is None else settings
        if not isinstance(base, Stage1Settings):
            raise TypeError(f"settings must be a uhop.stage1.Stage1Settings or None, got {type(base).__name__}")
        return base.replace(**overrides)
    if settings is not None:
        raise ValueError("pass settings= or preset=, not both")
    base = PRESETS[check_choice(preset, "preset", PRESETS)]
    base.replace(**overrides)  # unknown names and invalid values first
    for name, value in overrides.items():
        if value != base[name]:
            raise ValueError(f"{name}={value!r} conflicts with preset={preset!r}, which sets {name}={base[name]!r}")
    return base


@dataclass
class FitHistory:
    """Record of a Stage I run.

    ``loss``, ``min_distance`` and ``w_norm`` describe the W after ``steps[j]`` steps (before
    the row normalisation): with ``record_every=1`` (the default) ``steps`` is 0..N, so entry i
    is the W after i steps and entry 0 the initial W; with ``record_every=k`` the multiples of k,
    the checkpoints and N.  ``min_distance`` is min_{u != v} ||f_u - f_v|| of the features the
    loss sees (normalised when ``normalize_features``), i.e. 2 R_Phi of Definition 2.1;
    ``w_norm`` is ||W||_F.  ``lr`` lists the learning rate used at each of the ``epochs`` steps.
    ``final_*`` describe the returned kernel (after row normalisation, if any).
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
    #: epoch -> fitted kernel after that many steps (row-normalised like the final kernel),
    #: for the epochs requested with ``fit_kernel(checkpoints=...)``.
    checkpoints: dict = field(default_factory=dict)
    #: the step of each entry of ``loss``, ``min_distance`` and ``w_norm``.
    steps: list = field(default_factory=list)


def _diagnostics(feats: torch.Tensor, settings: Stage1Settings):
    """(loss, squared distances D) of the features ``feats`` (M, D) as the loss sees them; the loss keeps its graph."""
    if settings.normalize_features:
        feats = F.normalize(feats, dim=-1)
    D = sq_distances_from_gram(feats @ feats.T)
    return loss_from_sq_distances(D, settings.t, settings.loss, settings.pairs), D


def _fit_autograd(weight, train, settings: Stage1Settings, rates, record_steps, checkpoints, report):
    """Full-batch gradient steps on W with autograd (any optimizer / schedule), W updated in place.

    Same contract as :func:`uhop.stage1_gram.fit_gram`: returns ``(diagnostics, snapshots, features)``.
    """
    W = weight
    W.requires_grad_(True)
    # Plain gradient descent (Algorithm 1, line 2) is written out: W <- W - lr grad.
    # (Same arithmetic as torch.optim.SGD without momentum, minus its overhead.)
    opt = torch.optim.Adam([W], lr=settings.lr) if settings.optimizer == "adam" else None
    records, snapshots = [], {}
    epochs = len(rates)
    for i in range(epochs + 1):
        if i in checkpoints:
            snapshots[i] = W.detach().clone()
        feats = train @ W.T
        loss, D = _diagnostics(feats, settings)
        if i in record_steps:
            row = torch.stack((loss.detach(), upper_triangle(D.detach()).min().sqrt(), W.detach().norm()))
            records.append(row)
            if report is not None:
                report(i, *row)
        if i == epochs:
            break
        (grad,) = torch.autograd.grad(loss, W)
        if opt is None:
            with torch.no_grad():
                W.add_(grad, alpha=-rates[i])
        else:
            for group in opt.param_groups:
                group["lr"] = rates[i]
            W.grad = grad
            opt.step()
            W.grad = None
    return torch.stack(records), snapshots, feats.detach()


def _progress_printer(epochs: int, engine: str):
    """``report`` callback printing the diagnostics every ~10% of the steps (stderr)."""
    every = max(1, epochs // 10)

    def report(step, loss, min_distance, w_norm):
        if step % every == 0 or step == epochs:
            print(f"[uhop stage I, {engine}] step {step}/{epochs} loss {float(loss):.6g} "
                  f"min distance {float(min_distance):.4g} |W| {float(w_norm):.4g}", file=sys.stderr)

    return report


def fit_kernel(memories: torch.Tensor, *, epochs: int = DEFAULT_EPOCHS, settings: Stage1Settings | None = None,
               preset: str | None = None, seed=None, kernel: LinearKernel | None = None, engine: str = "auto",
               checkpoints=(), record_every: int = 1, progress: bool = False, **overrides):
    r"""Stage I of Algorithm 1: fit W of Phi(x) = W x by minimising the separation loss.

    Args:
        memories: (M, d) stored patterns (rows).
        epochs: N, number of full-batch gradient steps (0 = no training).
        settings: a :class:`Stage1Settings` (default: ``Stage1Settings()``, the paper's
            settings: identity init, avg loss over distinct pairs, SGD lr 1, t = 2, normalised
            features, row-normalised W, all memories).
        preset: instead of ``settings``, the name of one in :data:`PRESETS`: "official" /
            "official_max" (the README's ``train_kernel_max``: square N(0,1) W, max loss, SGD
            lr 10 constant, no row normalisation, first half of the memories) or
            "official_avg" (``train_kernel``: the same with the avg loss over distinct pairs,
            SGD lr 1 and the compounding decay).
        **overrides: any field of :class:`Stage1Settings` by name (``lr=``, ``t=``, ``loss=``,
            ``pairs=``, ``optimizer=``, ``d_phi=``, ``normalize_rows=``,
            ``normalize_features=``, ``init=``, ``train_fraction=``, ``lr_schedule=``),
            replacing the value of ``settings``; with a preset, an argument that contradicts
            the preset is a ValueError.
        seed: seed of a private ``torch.Generator`` for the random inits; the
            global RNG is never touched.  Same seed, same result.
        kernel: start from (a copy of) this kernel instead of a fresh init (then ``init`` and
            ``d_phi`` come from the kernel).
        engine: "auto" (default: "gram" when the optimizer is plain SGD, else "autograd"),
            "gram" (Stage I on M x M matrices, no d x d work per step; plain SGD only; see
            :mod:`uhop.stage1_gram`) or "autograd" (reference, any optimizer).  Both give the
            same W up to rounding.
        checkpoints: epoch counts (each in 0..epochs) at which to keep a copy of the kernel,
            returned in ``history.checkpoints[n]`` (row-normalised when ``normalize_rows``),
            so that one run of N_max steps yields the kernels of a whole N sweep.
        record_every: record the loss, min distance and ||W|| every k steps (and at the
            checkpoints and the last step) instead of at every step; W does not depend on it.
        progress: print the loss every ~10% of the steps (stderr).

    Returns:
        ``(kernel, history)``: the fitted :class:`~uhop.kernel.LinearKernel`
        (same dtype and device as ``memories``) and a :class:`FitHistory`.
    """
    check_memories(memories)
    engine = check_choice(engine, "engine", ENGINES)
    epochs = check_epochs(epochs)
    record_every = check_int(record_every, "record_every", minimum=1)
    if kernel is not None:
        for name in ("init", "d_phi"):
            if name in overrides:
                raise ValueError(f"{name} cannot be combined with kernel= (the kernel fixes W)")
    s = _resolve(settings, preset, overrides)
    if engine == "auto":
        engine = "gram" if s.optimizer == "sgd" else "autograd"
    elif engine == "gram" and s.optimizer != "sgd":
        raise ValueError(f"engine='gram' needs optimizer='sgd' (plain gradient descent), got "
                         f"optimizer={s.optimizer!r}; use engine='autograd'")
    if isinstance(checkpoints, (str, bytes)) or not hasattr(checkpoints, "__iter__"):
        raise TypeError(f"checkpoints must be a sequence of epoch counts, got {type(checkpoints).__name__}")
    checkpoints = sorted({int(c) for c in checkpoints})
    bad = [c for c in checkpoints if not 0 <= c <= epochs]
    if bad:
        raise ValueError(f"checkpoints must lie in 0..epochs={epochs}, got {bad}")
    check_bool(progress, "progress")
    M, d = memories.shape
    n_train = int(s.train_fraction * M)
    if n_train < 2:
        raise ValueError(
            f"train_fraction={s.train_fraction} of M={M} memories leaves {n_train} training memories; "
            "the separation loss needs at least 2 (memories too few?)"
        )
    train = memories[:n_train].detach()

    if kernel is None:
        kernel = LinearKernel(d, s.d_phi, init=s.init, generator=make_generator(seed),
                              dtype=memories.dtype, device=memories.device)
        identity = s.init == "identity" and kernel.d_phi == d
    else:
        if not isinstance(kernel, LinearKernel):
            raise TypeError(f"kernel must be a uhop.LinearKernel or None, got {type(kernel).__name__}")
        if kernel.d != d or kernel.weight.dtype != memories.dtype:
            raise ValueError(f"kernel (d={kernel.d}, {kernel.weight.dtype}) does not match memories "
                             f"(d={d}, {memories.dtype})")
        if kernel.linear_weight() is not kernel.weight:  # e.g. a layer's FeatureMap with unit-norm rows
            raise ValueError("Stage I fits the plain W of K(u, v) = u^T W^T W v; this kernel applies a constraint "
                             "to its weight: pass kernel.to_linear_kernel() instead")
        kernel = copy.deepcopy(kernel)
        w = kernel.weight.detach()
        identity = kernel.d_phi == d and torch.equal(w, torch.eye(d, dtype=w.dtype, device=w.device))

    rates = s.learning_rates(epochs)
    record_steps = sorted({*range(0, epochs + 1, record_every), epochs, *checkpoints})
    report = _progress_printer(epochs, engine) if progress else None
    with torch.enable_grad():
        if engine == "gram":
            diagnostics, snapshots, feats = fit_gram(
                kernel.weight, train, rates, t=s.t, reduction=s.loss, pairs=s.pairs,
                normalize_features=s.normalize_features, record_steps=frozenset(record_steps),
                checkpoints=frozenset(checkpoints), identity=identity, final_features=s.normalize_rows,
                report=report)
        else:
            diagnostics, snapshots, feats = _fit_autograd(kernel.weight, train, s, rates, frozenset(record_steps),
                                                          frozenset(checkpoints), report)
    weight = kernel.weight.detach()
    # One pass over W: a sum is finite only if every entry is (the exact test confirms a rare overflow).
    if not (bool(torch.isfinite(weight.sum())) or bool(torch.isfinite(weight).all())):
        raise FloatingPointError(
            f"Stage I diverged: the fitted W has NaN/Inf entries after {epochs} epochs at lr={s.lr} "
            f"({engine} engine); lower lr, or check the memories (an all-zero memory has no direction to "
            f"normalise when normalize_features=True)")

    loss, min_distance, w_norm = diagnostics.T.tolist()
    history = FitHistory(
        loss=loss, min_distance=min_distance, w_norm=w_norm, lr=rates, epochs=epochs, n_train=n_train,
        settings=dict(s, epochs=epochs, init=kernel.init, d_phi=kernel.d_phi, preset=preset, seed=seed,
                      engine=engine, d=d, record_every=record_every),
        steps=record_steps)
    if s.normalize_rows:
        # Row j of W scales feature j, so the features of the normalised W follow without a
        # (M x d x D_Phi) product; a zero row has a zero feature column either way.
        norms = weight.norm(dim=1)
        kernel.normalize_rows_()
        with torch.no_grad():
            final_loss, D = _diagnostics(feats / norms.clamp_min(torch.finfo(norms.dtype).tiny), s)
        history.final_loss = float(final_loss)
        history.final_min_distance = float(upper_triangle(D).min().sqrt())
        history.final_w_norm = float(weight.norm())
    else:
        history.final_loss, history.final_min_distance, history.final_w_norm = loss[-1], min_distance[-1], w_norm[-1]
    # The engines return raw weights as checkpoints; wrap them like the final kernel.
    for n, snapshot_weight in sorted(snapshots.items()):
        snapshot = LinearKernel.from_weight(snapshot_weight)
        snapshot.init = kernel.init
        if s.normalize_rows:
            snapshot.normalize_rows_()
        history.checkpoints[n] = snapshot
    return kernel, history
