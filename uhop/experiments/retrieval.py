r"""Memory-retrieval experiments of Section 4.1 (Appendix F.2-F.3, G.1-G.3), as a reusable runner.

Vocabulary
----------
* A **protocol** fixes how queries are corrupted, how Stage I is run and where beta sits:
  see :data:`PROTOCOLS` and the table below.
* A **method** is one retrieval rule: see :data:`METHODS`.
* A **grid cell** is (dataset, protocol, method, M, N, noise, seed); it gives one row of results:
  the mean and standard deviation over the M queries of the per-memory error, and diagnostics.
* A **group** is (M, seed): the memory set and its queries are drawn once per group, the
  baselines (which do not depend on N) run once, and Stage I runs once up to the largest N with
  ``fit_kernel(checkpoints=...)``, which returns the kernels of the whole N grid from one run.

Protocols
---------
``"paper"`` -- the paper as written.
    Query: 50% of the *pixels* zeroed (all channels of a pixel together, no rescaling), or
    Gaussian noise.  Stage I: average separation loss (Definition 2.2, distinct pairs, features
    L2-normalised inside the loss), on **all** M memories, W initialised to the identity
    (D_Phi = d), plain SGD with constant learning rate 1 (Table 4), t = 2, rows of W normalised
    after Stage I (Algorithm 1, line 4).  Retrieval: one step of ``Xi Sep(beta S(x, Xi))`` with
    beta = 1 *inside* Sep.  Baselines: the corrected ones (negative distances, normalised
    polynomial); the official bug-compatible variants are separate methods (``*_official``).
``"official"`` -- what the public scripts (MAGICS-LAB/UHop) do.
    Masked query: per-entry inverted dropout, ``torch.dropout(x, 0.5)``: 50% of the *entries*
    zeroed, kept entries multiplied by 2.  Stage I follows the script that produced each figure:
    masked queries -> ``memory_retrieval_max_loss.py`` = ``fit_kernel(preset="official")``
    (square W ~ N(0, 1), no row normalisation, max loss, SGD lr 10, **first half** of the
    memories); noise of total norm sigma -> ``memory_retrieval_noise_max_loss.py`` (the same
    Stage I on **all** memories); per-entry noise -> ``memory_retrieval_noise.py`` (preset
    ``"official_avg"``: avg loss, lr 1 with the compounding decay, all memories).  Retrieval:
    ``beta * Sep(S(x, Xi)) Xi``, beta *after* Sep (so beta = 1 means no temperature at all).
``"tuned"`` -- the temperature-matched control.
    Queries and Stage I as in ``"paper"``.  For every method whose beta is an inverse
    temperature (MHM, sparse MHM, both U-Hop variants -- with their learned kernels --, l2 and
    Manhattan) beta is chosen from ``beta_grid`` by minimising the mean SSE on a **held-out**
    memory set: M memories drawn with a different seed and disjoint from the test memories, with
    their own queries and their own Stage I run.  The chosen beta is then used once on the test
    memory set, which never influences the choice.  The normalised DAM is invariant to beta and the
    ``*_official`` methods multiply beta *after* Sep (not a temperature): they run as in "paper".
    U-Hop therefore cannot gain from an implicitly larger beta.

Noise (``corruption="noise"``): ``noise_mode="total_norm"`` adds ``sigma g / ||g||`` (a Gaussian
vector rescaled to norm sigma: the paper's text and ``memory_retrieval_noise_max_loss.py``);
``"per_entry"`` adds N(0, sigma^2) to every entry (``memory_retrieval_noise.py``); both return
``clamp(|x + n|, 0, 1)``.  For ``corruption="mask"`` the ``noise`` axis holds the masked fraction.
The same random numbers are reused at every level of a group (common random numbers), so a curve
over noise levels compares like with like.

Metrics (per query, then mean / std over the M queries of a run): ``sse`` = sum of squared
differences of the clamped images (the paper's metric), ``mse`` = SSE / d, ``success`` = fraction
with ``mse <= success_mse`` (default 60/784, Millidge et al.'s SSE threshold of 60 on 784-pixel
MNIST, per pixel), ``hit`` = fraction whose output is closer (L2) to its own memory than to any
other memory.  Diagnostics: ``eff_support`` = exp(entropy) of the separation weights (1 = one
memory, M = uniform), ``support`` = number of non-zero weights (exact for sparsemax; for softmax
it counts float32 weights that did not underflow), ``top_weight``; for U-Hop the separation loss
of the kernel actually used (avg and max, on all M memories, t) and the minimum pairwise
distance of its normalised features (``min_dist`` = 2 R_Phi), and ``train_loss``, the Stage I
objective at step N (before row normalisation).  Baseline rows have N empty (they do not depend on
N); plot them against N as flat lines.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .._checks import check_int
from ..baselines import PolynomialSeparation
from ..corruptions import gaussian_noise, random_mask
from ..loss import min_pairwise_distance, separation_loss
from ..metrics import sse as _sse
from ..provenance import atomic_write_text, write_manifest, writer_lock
from ..separation import softmax as _softmax
from ..separation import sparsemax as _sparsemax
from ..stage1 import PRESETS, fit_kernel

__all__ = [
    "PROTOCOLS", "METHODS", "DATASETS", "CORRUPTIONS", "NOISE_MODES", "COLUMNS", "Protocol",
    "MethodSpec", "GridConfig", "ConfigMismatchError", "stage1_settings", "load_memory_set",
    "make_queries", "evaluate_group", "evaluate_cell", "run_grid", "read_results",
]

# --------------------------------------------------------------------------------------------
# Registries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """How a protocol corrupts queries, runs Stage I and applies beta (see the module docstring)."""

    name: str
    description: str
    mask_per: str          # "pixel" or "entry" (random_mask's per=)
    mask_rescale: bool     # inverted-dropout x 1/(1-p)
    beta_inside: bool      # Sep(beta s) (True) or beta Sep(s) (False)
    official_stage1: bool  # official presets instead of the paper's settings
    tune_beta: bool        # choose beta on held-out memories


PROTOCOLS = {
    "paper": Protocol(
        "paper", "paper as written: per-pixel 50% mask (no rescale), avg loss on all memories, identity init, "
        "row-normalised W, SGD lr 1, beta inside Sep, corrected baselines",
        mask_per="pixel", mask_rescale=False, beta_inside=True, official_stage1=False, tune_beta=False),
    "official": Protocol(
        "official", "official scripts: per-entry inverted dropout (x2), preset='official' Stage I (square N(0,1) W, "
        "max loss, lr 10, first half of the memories for masked queries), beta after Sep",
        mask_per="entry", mask_rescale=True, beta_inside=False, official_stage1=True, tune_beta=False),
    "tuned": Protocol(
        "tuned", "temperature-matched control: 'paper' queries and Stage I, beta of every temperature method chosen "
        "on a disjoint held-out memory set",
        mask_per="pixel", mask_rescale=False, beta_inside=True, official_stage1=False, tune_beta=True),
}


@dataclass(frozen=True)
class MethodSpec:
    """One retrieval rule.

    ``similarity``: "dot", "kernel" (U-Hop's learned K), "l2" or "manhattan" (distances);
    ``separation``: "softmax", "sparsemax" or "poly" (degree-10 polynomial);
    ``official``: bug-compatible with the official code (beta after Sep, +distance, unnormalised
    polynomial) whatever the protocol; ``temperature``: beta is an inverse temperature (tunable).
    """

    name: str
    label: str
    similarity: str
    separation: str
    official: bool = False
    temperature: bool = True

    @property
    def uhop(self) -> bool:
        return self.similarity == "kernel"


METHODS = {m.name: m for m in (
    MethodSpec("mhm", "MHM", "dot", "softmax"),
    MethodSpec("sparse_mhm", "Sparse MHM", "dot", "sparsemax"),
    MethodSpec("uhop_mhm", "U-Hop + MHM", "kernel", "softmax"),
    MethodSpec("uhop_sparse_mhm", "U-Hop + Sparse MHM", "kernel", "sparsemax"),
    MethodSpec("dam", "DAM (poly-10)", "dot", "poly", temperature=False),
    MethodSpec("dam_official", "DAM (poly-10, official)", "dot", "poly", official=True, temperature=False),
    MethodSpec("l2", "L2 MHM", "l2", "softmax"),
    MethodSpec("l2_official", "L2 MHM (official)", "l2", "softmax", official=True, temperature=False),
    MethodSpec("manhattan", "Manhattan MHM", "manhattan", "softmax"),
    MethodSpec("manhattan_official", "Manhattan MHM (official)", "manhattan", "softmax", official=True,
               temperature=False),
)}

SYNTHETIC_POOL = 1000          # patterns in the synthetic dataset
SYNTHETIC_SHAPE = (1, 8, 8)    # (C, H, W) of a synthetic pattern
DATASETS = ("synthetic", "mnist", "cifar10", "cifar100", "tiny_imagenet")
CORRUPTIONS = ("mask", "noise")
NOISE_MODES = ("total_norm", "per_entry")
LOSSES = ("avg", "max")
STAGE1_SAMPLING = ("grid", "random")
DAM_DEGREE = 10
DEFAULT_BETA_GRID = tuple(round(10.0 ** (k / 4), 6) for k in range(-8, 17))  # 1e-2 .. 1e4, 4 per decade

#: Columns of a results CSV, in order.
COLUMNS = (
    "experiment", "dataset", "variant", "exact", "d", "protocol", "corruption", "noise_mode", "method",
    "M", "N", "noise", "seed", "loss", "lr", "n_train", "beta", "beta_placement",
    "sse_mean", "sse_std", "mse_mean", "mse_std", "success", "hit",
    "eff_support", "support", "top_weight",
    "sep_loss", "sep_loss_max", "min_dist", "train_loss",
    "beta_heldout_sse", "beta_at_edge", "stage1_s", "wall_s",
)


class ConfigMismatchError(ValueError):
    """An existing results file was produced by a different configuration."""


def _choice(value, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; valid choices: {', '.join(map(repr, choices))}")
    return value


def _derive(seed: int, tag: str) -> int:
    """A 31-bit seed derived from (seed, tag): independent streams for memories, queries, kernels."""
    digest = hashlib.sha256(f"{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _as_tuple(value, name, kind):
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        value = [value]
    out = []
    for v in value:
        if kind is int:
            if isinstance(v, bool) or int(v) != v:
                raise ValueError(f"{name} must contain integers, got {v!r}")
            out.append(int(v))
        elif kind is float:
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"{name} must contain finite numbers, got {v!r}")
            out.append(v)
        else:
            out.append(v)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return tuple(out)


@dataclass(frozen=True)
class GridConfig:
    """Everything that determines the numbers of a results file (its fingerprint).

    Args:
        experiment: a label stored in every row (e.g. "capacity", "noise", "epochs", "loss_error").
        dataset: one of :data:`DATASETS` ("synthetic" = random sparse 8x8 patterns, for tests).
        protocol: one of :data:`PROTOCOLS`.
        methods: names from :data:`METHODS`.
        sizes: memory-set sizes M.
        epochs: Stage I epochs N (the N grid); with ``stage1_sampling="random"`` the range
            ``(lo, hi)`` from which each run draws its N uniformly.
        noise: corruption levels: masked fraction p in [0, 1) for "mask", sigma >= 0 for "noise".
        seeds: one run per seed (memory set, queries and kernel init all derive from it).
        corruption: "mask" or "noise".  noise_mode: "total_norm" or "per_entry".
        beta: inverse temperature (ignored by "tuned" for temperature methods).  t: RBF scale.
        losses: Stage I losses to run ("avg", "max"); None = the protocol's default.
        lr: Stage I learning rate; None = the protocol's (paper 1, official 10 or 1).
        stage1_sampling: "grid", or "random" (Fig 1 / Fig 7): each run draws its learning rate as
            |z|, z ~ N(0, 1) (the paper says N(0, 1); a negative step would ascend the loss) and
            its N uniformly in ``epochs``.
        beta_grid: candidate betas of the "tuned" protocol.
        success_mse: per-pixel MSE threshold of the success rate.
        variant / split: which copy and split of the image data (see :mod:`uhop.data`).
    """

    experiment: str
    dataset: str
    protocol: str
    methods: tuple
    sizes: tuple
    epochs: tuple = (100,)
    noise: tuple = (0.5,)
    seeds: tuple = (0,)
    corruption: str = "mask"
    noise_mode: str = "total_norm"
    beta: float = 1.0
    t: float = 2.0
    losses: tuple = (None,)
    lr: float | None = None
    stage1_sampling: str = "grid"
    beta_grid: tuple = DEFAULT_BETA_GRID
    success_mse: float = 60.0 / 784.0
    variant: str = "auto"
    split: str = "train"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if not isinstance(self.experiment, str) or not self.experiment:
            raise ValueError(f"experiment must be a non-empty string, got {self.experiment!r}")
        _choice(self.dataset, "dataset", DATASETS)
        _choice(self.protocol, "protocol", tuple(PROTOCOLS))
        methods = _as_tuple(self.methods, "methods", str)
        for m in methods:
            _choice(m, "method", tuple(METHODS))
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods contains duplicates: {methods}")
        set_("methods", methods)
        sizes = _as_tuple(self.sizes, "sizes", int)
        if min(sizes) < 2:
            raise ValueError(f"sizes (M) must be >= 2 (the separation loss needs pairs), got {sizes}")
        set_("sizes", tuple(sorted(set(sizes))))
        _choice(self.corruption, "corruption", CORRUPTIONS)
        _choice(self.noise_mode, "noise_mode", NOISE_MODES)
        _choice(self.stage1_sampling, "stage1_sampling", STAGE1_SAMPLING)
        epochs = _as_tuple(self.epochs, "epochs", int)
        if min(epochs) < 0:
            raise ValueError(f"epochs (N) must be >= 0, got {epochs}")
        if self.stage1_sampling == "random":
            if len(epochs) != 2 or epochs[0] > epochs[1]:
                raise ValueError(f"with stage1_sampling='random', epochs must be a range (lo, hi), got {epochs}")
        else:
            epochs = tuple(sorted(set(epochs)))
        set_("epochs", epochs)
        noise = _as_tuple(self.noise, "noise", float)
        if min(noise) < 0:
            raise ValueError(f"noise levels must be >= 0, got {noise}")
        if self.corruption == "mask" and max(noise) >= 1:
            raise ValueError(f"noise levels are masked fractions for corruption='mask' and must lie in [0, 1), "
                             f"got {noise}")
        set_("noise", tuple(sorted(set(noise))))
        seeds = _as_tuple(self.seeds, "seeds", int)
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds contains duplicates: {seeds}")
        set_("seeds", seeds)
        for name in ("beta", "t", "success_mse"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
            set_(name, v)
        if self.lr is not None:
            lr = float(self.lr)
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"lr must be a positive number or None, got {self.lr!r}")
            set_("lr", lr)
        losses = _as_tuple(self.losses, "losses", object)
        resolved = []
        for loss in losses:
            if loss is None:
                loss = _default_loss(self.protocol, self.corruption, self.noise_mode)
            resolved.append(_choice(loss, "loss", LOSSES))
        set_("losses", tuple(dict.fromkeys(resolved)))
        grid = _as_tuple(self.beta_grid, "beta_grid", float)
        if min(grid) <= 0:
            raise ValueError(f"beta_grid must contain positive numbers, got {grid}")
        set_("beta_grid", tuple(sorted(set(grid))))
        if not isinstance(self.variant, str) or not isinstance(self.split, str):
            raise ValueError("variant and split must be strings")
        mode_split = self.split if self.dataset != "synthetic" else "train"
        set_("split", mode_split)

    # -- helpers ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, data: dict) -> "GridConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GridConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the configuration (what the numbers depend on)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def uhop_methods(self) -> tuple:
        return tuple(m for m in self.methods if METHODS[m].uhop)

    @property
    def baseline_methods(self) -> tuple:
        return tuple(m for m in self.methods if not METHODS[m].uhop)

    def stage1_draw(self, seed: int) -> tuple[int, float | None]:
        """(N, lr) of a run with ``stage1_sampling="random"``: lr = |z|, z ~ N(0, 1); N ~ U{lo..hi}."""
        g = torch.Generator().manual_seed(_derive(seed, "stage1-draw"))
        lr = abs(float(torch.randn((), generator=g, dtype=torch.float64)))
        lo, hi = self.epochs
        n = int(torch.randint(lo, hi + 1, (), generator=g))
        return n, max(lr, 1e-12)

    def cells(self, M: int, seed: int) -> list[tuple]:
        """The cell keys (method, M, N, noise, seed, loss) of group (M, seed)."""
        keys = []
        for level in self.noise:
            for m in self.baseline_methods:
                keys.append((m, M, None, level, seed, ""))
            if self.stage1_sampling == "random":
                ns = (self.stage1_draw(seed)[0],)
            else:
                ns = self.epochs
            for m in self.uhop_methods:
                for loss in self.losses:
                    for n in ns:
                        keys.append((m, M, n, level, seed, loss))
        return keys

    def groups(self) -> list[tuple[int, int]]:
        """(M, seed) groups in run order: seeds outer, so an interrupted run has complete curves."""
        return [(M, s) for s in self.seeds for M in self.sizes]


def _default_loss(protocol: str, corruption: str, noise_mode: str) -> str:
    if PROTOCOLS[protocol].official_stage1:
        # memory_retrieval_noise.py (per-entry noise) is the one official script with the avg loss.
        return "avg" if (corruption == "noise" and noise_mode == "per_entry") else "max"
    return "avg"


def stage1_settings(protocol: str, corruption: str = "mask", noise_mode: str = "total_norm",
                    loss: str | None = None, lr: float | None = None, t: float = 2.0) -> dict:
    """Keyword arguments of :func:`uhop.fit_kernel` for a protocol (without epochs/seed/checkpoints).

    >>> stage1_settings("official")["train_fraction"], stage1_settings("paper")["train_fraction"]
    (0.5, 1.0)
    """
    proto = PROTOCOLS[_choice(protocol, "protocol", tuple(PROTOCOLS))]
    _choice(corruption, "corruption", CORRUPTIONS)
    _choice(noise_mode, "noise_mode", NOISE_MODES)
    loss = _default_loss(protocol, corruption, noise_mode) if loss is None else _choice(loss, "loss", LOSSES)
    if proto.official_stage1:
        s = dict(PRESETS["official_max" if loss == "max" else "official_avg"])
        # masked-query scripts train on Xi[:int(0.5 M)]; the noise scripts on all memories
        s["train_fraction"] = 0.5 if corruption == "mask" else 1.0
        if float(t) != s["t"]:
            raise ValueError(f"the official protocol hard-codes t = {s['t']}, got t={t}")
    else:
        s = dict(init="identity", d_phi=None, pairs="distinct", optimizer="sgd", normalize_rows=True,
                 normalize_features=True, train_fraction=1.0, loss=loss, lr=1.0, lr_schedule="constant",
                 t=float(t))
    if lr is not None:
        s["lr"] = float(lr)
    return s


# --------------------------------------------------------------------------------------------
# Data and queries
# --------------------------------------------------------------------------------------------


@dataclass
class MemoryData:
    """A memory set with what the results must report about its source."""

    memories: torch.Tensor      # (M, d) float32 in [0, 1]
    indices: torch.Tensor       # positions in the pool
    image_shape: tuple
    dataset: str
    variant: str
    exact: bool


class _Pool:
    """All images of a dataset split as uint8 (loaded once per run)."""

    def __init__(self, dataset: str, variant: str = "auto", split: str = "train"):
        self.dataset = dataset
        self.key = (dataset, variant, split)  # what it was asked for (a worker reuses a pool with the same key)
        if dataset == "synthetic":
            g = torch.Generator().manual_seed(20240721)
            on = torch.rand((SYNTHETIC_POOL,) + SYNTHETIC_SHAPE, generator=g) < 0.35
            level = torch.randint(64, 256, (SYNTHETIC_POOL,) + SYNTHETIC_SHAPE, generator=g)
            self.images = (on * level).to(torch.uint8)
            self.image_shape, self.variant, self.exact = SYNTHETIC_SHAPE, "synthetic", True
        else:
            from ..data import load_images

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the approximate-data warning: recorded in every row instead
                data = load_images(dataset, split, variant=variant)
            self.images = data.images
            self.image_shape, self.variant, self.exact = tuple(data.image_shape), data.variant, bool(data.exact)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, idx: torch.Tensor) -> MemoryData:
        mem = self.images[idx].reshape(len(idx), -1).to(torch.float32).div_(255.0)
        return MemoryData(mem, idx, self.image_shape, self.dataset, self.variant, self.exact)

    def sample(self, M: int, seed: int) -> MemoryData:
        """The M memories of ``uhop.data.sample_memories(dataset, M, seed)`` (same permutation)."""
        self._check_size(M)
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed)))[:M]
        return self.take(idx)

    def heldout(self, M: int, seed: int, exclude: torch.Tensor) -> MemoryData:
        """M memories drawn with a different seed, disjoint from ``exclude`` (the test memories)."""
        self._check_size(M, held_out=True)
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(_derive(seed, "heldout-memories")))
        taken = torch.zeros(len(self), dtype=torch.bool)
        taken[exclude] = True
        idx = perm[~taken[perm]][:M]
        return self.take(idx)

    def _check_size(self, M, held_out=False):
        need = 2 * M if held_out else M
        if need > len(self):
            extra = " (the tuned protocol needs 2 M images: M test + M disjoint held-out memories)" if held_out else ""
            raise ValueError(f"sizes: M={M} exceeds what the {len(self)} images of {self.dataset} "
                             f"(variant {self.variant!r}) allow{extra}")


def load_memory_set(dataset: str, M: int, seed: int, variant: str = "auto", split: str = "train") -> MemoryData:
    """M memories of ``dataset`` for ``seed`` (identical to ``uhop.data.sample_memories``)."""
    _choice(dataset, "dataset", DATASETS)
    return _Pool(dataset, variant, split).sample(int(M), int(seed))


def make_queries(memories: torch.Tensor, image_shape, protocol: str, corruption: str, level: float,
                 noise_mode: str = "total_norm", seed: int = 0, stream: str = "query") -> torch.Tensor:
    """Corrupted queries of a protocol: the same random numbers for every ``level`` of a seed."""
    proto = PROTOCOLS[_choice(protocol, "protocol", tuple(PROTOCOLS))]
    _choice(corruption, "corruption", CORRUPTIONS)
    if level < 0:
        raise ValueError(f"noise level must be >= 0, got {level}")
    g = torch.Generator().manual_seed(_derive(seed, stream))
    x = memories.detach().cpu()
    if corruption == "mask":
        q = random_mask(x, p=float(level), per=proto.mask_per, rescale=proto.mask_rescale, generator=g,
                        shape=tuple(image_shape))
    else:
        q = gaussian_noise(x, float(level), mode=_choice(noise_mode, "noise_mode", NOISE_MODES), clamp=True,
                           generator=g)
    return q.to(memories.device)


# --------------------------------------------------------------------------------------------
# Retrieval for one method (vectorised over all queries)
# --------------------------------------------------------------------------------------------


class _Scores:
    """Query-memory similarities computed once per (query set, memory set) and shared by methods."""

    def __init__(self, queries, memories):
        self.q, self.m = queries, memories
        self._cache = {}

    def get(self, kind: str) -> torch.Tensor:
        if kind not in self._cache:
            if kind == "dot":
                self._cache[kind] = self.q @ self.m.T
            elif kind == "l2":
                self._cache[kind] = torch.cdist(self.q, self.m, p=2.0)
            elif kind == "manhattan":
                self._cache[kind] = torch.cdist(self.q, self.m, p=1.0)
            else:  # pragma: no cover
                raise KeyError(kind)
        return self._cache[kind]


def _weights(spec: MethodSpec, raw: torch.Tensor, beta: float, beta_inside: bool):
    """(read-out weights, normalised weights for the diagnostics) of a method from raw scores.

    ``raw``: dot products / kernel scores, or the (positive) distances for l2 / manhattan.
    """
    s = raw
    if spec.similarity in ("l2", "manhattan") and not spec.official:
        s = -raw  # Millidge et al.: closer memories score higher
    if spec.separation == "poly":
        if spec.official:
            # x <- Xi (beta (Xi^T q)^10): unnormalised; float64 so that it saturates rather than overflows
            p = s.double().pow(DAM_DEGREE)
            norm = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
            return beta * p, norm
        p = PolynomialSeparation(DAM_DEGREE)(s)
        return p, p
    sep = _softmax if spec.separation == "softmax" else _sparsemax
    if spec.official or not beta_inside:
        p = sep(s, dim=-1)
        return beta * p, p
    p = sep(beta * s, dim=-1)
    return p, p


def _metrics(out: torch.Tensor, memories: torch.Tensor, weights: torch.Tensor, success_mse: float) -> dict:
    out = out.clamp(0.0, 1.0).to(memories.dtype)  # NaN (if any) stays NaN
    err = _sse(out, memories).double()
    d = memories.shape[1]
    mse = err / d
    M = memories.shape[0]
    hit = (torch.cdist(out.clamp(0.0, 1.0), memories).argmin(-1) == torch.arange(M, device=out.device))
    w = weights.double()
    entropy = -torch.special.xlogy(w, w).sum(-1)
    std = lambda x: float(x.std(unbiased=True)) if x.numel() > 1 else 0.0  # noqa: E731
    return dict(
        sse_mean=float(err.mean()), sse_std=std(err), mse_mean=float(mse.mean()), mse_std=std(mse),
        success=float((mse <= success_mse).double().mean()), hit=float(hit.double().mean()),
        eff_support=float(entropy.exp().mean()), support=float((w > 0).sum(-1).double().mean()),
        top_weight=float(w.max(-1).values.mean()),
    )


def _retrieve(spec, raw, memories, beta, beta_inside, success_mse):
    w, norm = _weights(spec, raw, beta, beta_inside)
    out = w @ (memories.double() if w.dtype == torch.float64 else memories)
    return _metrics(out, memories, norm, success_mse)


def _mean_sse(spec, raw, memories, beta, beta_inside) -> float:
    w, _ = _weights(spec, raw, beta, beta_inside)
    out = w @ memories
    return float(_sse(out.clamp(0.0, 1.0), memories).double().mean())


def _tune_beta(spec, raw, memories, grid, beta_inside) -> tuple[float, float, bool]:
    """(best beta, its mean SSE, at the grid edge?) on one (held-out) memory set."""
    errs = [_mean_sse(spec, raw, memories, b, beta_inside) for b in grid]
    finite = [(e if math.isfinite(e) else math.inf) for e in errs]
    i = min(range(len(grid)), key=lambda k: (finite[k], k))
    return float(grid[i]), float(errs[i]), i in (0, len(grid) - 1)


# --------------------------------------------------------------------------------------------
# Stage I for a group
# --------------------------------------------------------------------------------------------


@dataclass
class _Kernels:
    keys: dict = field(default_factory=dict)      # N -> (M, d) B = (W Xi)^T W
    diag: dict = field(default_factory=dict)      # N -> dict of separation diagnostics
    n_train: int = 0
    seconds: float = 0.0


def _stage1(memories: torch.Tensor, ns: tuple, settings: dict, seed: int, t: float) -> _Kernels:
    start = time.perf_counter()
    kernel, hist = fit_kernel(memories, epochs=max(ns), checkpoints=list(ns), seed=seed, **settings)
    out = _Kernels(n_train=hist.n_train)
    for n in ns:
        W = hist.checkpoints[n].weight.detach()
        with torch.no_grad():
            feats = memories @ W.T
            out.keys[n] = feats @ W
            unit = F.normalize(feats, dim=-1)
            out.diag[n] = dict(
                sep_loss=float(separation_loss(unit, t=t, reduction="avg")),
                sep_loss_max=float(separation_loss(unit, t=t, reduction="max")),
                min_dist=float(min_pairwise_distance(unit)),
                train_loss=float(hist.loss[n]),
            )
    out.seconds = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------------------------
# One group -> rows
# --------------------------------------------------------------------------------------------


def evaluate_group(cfg: GridConfig, M: int, seed: int, todo: set | None = None, device: str = "cpu",
                   pool: _Pool | None = None) -> list[dict]:
    """Rows of every cell of group (M, seed) (or only those whose key is in ``todo``).

    The memories and queries are drawn once, the baselines run once for all N, and Stage I runs
    once per loss up to the largest N (``checkpoints=`` gives the kernel at every N).
    """
    proto = PROTOCOLS[cfg.protocol]
    keys = cfg.cells(M, seed)
    if todo is not None:
        keys = [k for k in keys if k in todo]
    if not keys:
        return []
    pool = pool or _Pool(cfg.dataset, cfg.variant, cfg.split)
    test = pool.sample(M, seed)
    mem = test.memories.to(device)
    held = pool.heldout(M, seed, test.indices) if proto.tune_beta else None
    mem_h = held.memories.to(device) if held is not None else None
    base = dict(experiment=cfg.experiment, dataset=cfg.dataset, variant=test.variant, exact=test.exact,
                d=int(mem.shape[1]), protocol=cfg.protocol, corruption=cfg.corruption,
                noise_mode=cfg.noise_mode if cfg.corruption == "noise" else "")
    placement = "inside" if proto.beta_inside else "after"

    # Stage I once per loss (and once more on the held-out set for "tuned")
    kernels, kernels_h, lrs = {}, {}, {}
    for loss in cfg.losses:
        needed = sorted({k[2] for k in keys if k[5] == loss and k[2] is not None})
        if not needed:
            continue
        lr = cfg.lr
        if cfg.stage1_sampling == "random":
            lr = cfg.stage1_draw(seed)[1]
        settings = stage1_settings(cfg.protocol, cfg.corruption, cfg.noise_mode, loss, lr, cfg.t)
        lrs[loss] = settings["lr"]
        kseed = _derive(seed, f"kernel-M{M}")
        kernels[loss] = _stage1(mem, tuple(needed), settings, kseed, cfg.t)
        if mem_h is not None:
            kernels_h[loss] = _stage1(mem_h, tuple(needed), settings, _derive(seed, f"kernel-heldout-M{M}"), cfg.t)

    rows = []
    for level in cfg.noise:
        level_keys = [k for k in keys if k[3] == level]
        if not level_keys:
            continue
        q = make_queries(mem, test.image_shape, cfg.protocol, cfg.corruption, level, cfg.noise_mode, seed)
        scores = _Scores(q, mem)
        if mem_h is not None:
            q_h = make_queries(mem_h, held.image_shape, cfg.protocol, cfg.corruption, level, cfg.noise_mode, seed,
                               stream="heldout-query")
            scores_h = _Scores(q_h, mem_h)
        for key in level_keys:
            method, _, n, _, _, loss = key
            spec = METHODS[method]
            start = time.perf_counter()
            row = dict(base, method=method, M=M, N=n, noise=level, seed=seed, loss=loss,
                       beta_placement=placement if spec.temperature or spec.official else "none")
            if spec.uhop:
                kr = kernels[loss]
                raw = q @ kr.keys[n].T
                row.update(kr.diag[n], lr=lrs[loss], n_train=kr.n_train, stage1_s=round(kr.seconds, 4))
            else:
                raw = scores.get(spec.similarity)
            beta = cfg.beta if (spec.temperature or spec.official) else float("nan")
            if proto.tune_beta and spec.temperature:
                raw_h = q_h @ kernels_h[loss].keys[n].T if spec.uhop else scores_h.get(spec.similarity)
                beta, err_h, edge = _tune_beta(spec, raw_h, mem_h, cfg.beta_grid, proto.beta_inside)
                row.update(beta_heldout_sse=err_h, beta_at_edge=edge)
            row.update(_retrieve(spec, raw, mem, 1.0 if math.isnan(beta) else beta, proto.beta_inside,
                                 cfg.success_mse))
            row["beta"] = beta
            row["wall_s"] = round(time.perf_counter() - start, 4)
            rows.append(row)
    return rows


def evaluate_cell(dataset: str, protocol: str, method: str, M: int, N: int | None, noise: float, seed: int,
                  *, device: str = "cpu", **config) -> dict:
    """One grid cell (dataset, protocol, method, M, N, noise, seed) -> one row (a dict of :data:`COLUMNS`).

    ``config`` takes the other :class:`GridConfig` fields (corruption, noise_mode, beta, t, lr,
    beta_grid, ...) and ``loss=`` ("avg" / "max"; default: the protocol's).  N is ignored for
    methods that have no Stage I (their row has N = None).  For a whole grid use :func:`run_grid`, which shares the work of a group.
    """
    spec = METHODS[_choice(method, "method", tuple(METHODS))]
    if "loss" in config:
        config["losses"] = (config.pop("loss"),)
    epochs = (0 if N is None else N,) if spec.uhop else config.pop("epochs", (100,))
    config.pop("epochs", None)
    cfg = GridConfig(experiment=config.pop("experiment", "cell"), dataset=dataset, protocol=protocol,
                     methods=(method,), sizes=(M,), epochs=epochs, noise=(noise,), seeds=(seed,), **config)
    rows = evaluate_group(cfg, cfg.sizes[0], seed, device=device)
    if len(rows) != 1:  # pragma: no cover - one method, one N, one level, one loss
        raise RuntimeError(f"expected one row, got {len(rows)}")
    return {c: rows[0].get(c) for c in COLUMNS}


# --------------------------------------------------------------------------------------------
# Grid runner: CSV + config fingerprint + manifest, resumable
# --------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_fmt(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def _parse_key(row: dict) -> tuple:
    n = row["N"]
    return (row["method"], int(row["M"]), None if n in ("", None) else int(float(n)), float(row["noise"]),
            int(row["seed"]), row["loss"] or "")


def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ConfigMismatchError(f"{path} does not have the columns of this version of the runner; delete it "
                                      f"(and its .config.json / .manifest.json) to start fresh, or pick another output")
        return list(reader)


def _sidecars(path: Path) -> tuple[Path, Path]:
    return Path(f"{path}.config.json"), Path(f"{path}.manifest.json")


def _check_config(path: Path, cfg: GridConfig) -> None:
    conf_path, _ = _sidecars(path)
    fp = cfg.fingerprint()
    if not path.exists():
        return
    if not conf_path.exists():
        raise ConfigMismatchError(
            f"{path} exists but has no {conf_path.name}, so its configuration is unknown and it will not be "
            f"overwritten. Delete {path} to start fresh, or pick another output path.")
    stored = json.loads(conf_path.read_text())
    if stored.get("fingerprint") != fp:
        old = stored.get("config", {})
        new = cfg.to_dict()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
        raise ConfigMismatchError(
            f"{path} was produced by a different configuration (fingerprint {stored.get('fingerprint')} != {fp}; "
            f"{detail}). Refusing to mix or overwrite results: delete {path} and its {conf_path.name} / "
            f".manifest.json to start fresh, or pick another output path.")


def read_results(path) -> "object":
    """A results CSV as a pandas DataFrame (N empty for baselines -> NaN)."""
    import pandas as pd

    return pd.read_csv(path)


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is in the book extra; the runner works without it
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="group", file=sys.stderr)


def run_grid(config: GridConfig | dict, output, *, device: str = "cpu", threads: int | None = None,
             resume: bool = True, progress: bool = True, command: str | None = None,
             max_groups: int | None = None, callback: Callable[[int, int], None] | None = None, jobs: int = 1):
    """Run every cell of ``config``, one CSV row per cell, and return the results as a DataFrame.

    Args:
        config: a :class:`GridConfig` (or a dict of its fields).
        output: the CSV path, e.g. ``results/retrieval/capacity/mnist_paper.csv``.  Beside it:
            ``<output>.config.json`` (configuration and its fingerprint) and
            ``<output>.manifest.json`` (command, parameters, version, git commit, date, machine,
            wall time; :func:`uhop.provenance.write_manifest`).
        device: torch device of the computation.
        threads: ``torch.set_num_threads(threads)`` for the run (None: leave it).  On a shared
            2-core machine 1 thread is several times faster than oversubscribed threads.
        resume: skip the cells already in ``output``.  A file written by a different
            configuration raises :class:`ConfigMismatchError` (never overwritten silently).
        progress: a tqdm bar over the groups (M, seed).
        command: the command recorded in the manifest (default: ``sys.argv``).
        max_groups: compute at most this many groups, then return (the rest on a later call).
        callback: called as ``callback(groups_done, groups_total)`` after each group is saved.
        jobs: groups (M, seed) computed at a time, each in its own process with one torch thread; this
            process stays the only writer of the CSV.  Every group seeds itself, and the rows are written in
            the sequential order, so the CSV equals a ``jobs=1`` run's (tested).

    The CSV is rewritten atomically (temporary file + rename) after each group, so an interrupted
    run loses at most the group in progress; running again resumes.
    """
    cfg = config if isinstance(config, GridConfig) else GridConfig.from_dict(dict(config))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one writer per CSV for the whole run: a second run_grid on the same output (same or other settings) is
    # refused instead of mixing its rows into this one's
    with writer_lock(path, what="retrieval grid CSV"):
        return _run_grid(cfg, path, device=device, threads=threads, resume=resume, progress=progress,
                         command=command, max_groups=max_groups, callback=callback,
                         jobs=check_int(jobs, "jobs", minimum=1))


def _group_in_worker(cfg_dict: dict, M: int, seed: int, todo: set, device: str) -> list[dict]:
    """One group in a worker process (one torch thread; the data pool is loaded once per worker)."""
    global _WORKER_POOL
    torch.set_num_threads(1)
    cfg = GridConfig.from_dict(cfg_dict)
    if _WORKER_POOL is None or _WORKER_POOL.key != (cfg.dataset, cfg.variant, cfg.split):
        _WORKER_POOL = _Pool(cfg.dataset, cfg.variant, cfg.split)
    return evaluate_group(cfg, M, seed, todo=todo, device=device, pool=_WORKER_POOL)


_WORKER_POOL = None


def _run_grid(cfg, path, *, device, threads, resume, progress, command, max_groups, callback, jobs=1):
    conf_path, manifest_path = _sidecars(path)
    _check_config(path, cfg)
    if path.exists() and not resume:
        raise ConfigMismatchError(f"{path} exists and resume=False: delete it (and its .config.json / "
                                  f".manifest.json) to start fresh, or pick another output path")
    rows = _read_rows(path) if path.exists() else []
    done = {_parse_key(r) for r in rows}
    previous = {}
    if manifest_path.exists():
        try:
            previous = json.loads(manifest_path.read_text())
        except ValueError:
            previous = {}
    prior_total = float(previous.get("wall_time_total_s") or 0.0) if rows else 0.0
    if threads is not None:
        torch.set_num_threads(int(threads))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(conf_path, json.dumps({"fingerprint": cfg.fingerprint(), "config": cfg.to_dict()},
                                            indent=2, sort_keys=True) + "\n")
    pool = _Pool(cfg.dataset, cfg.variant, cfg.split)
    data_before = (previous.get("data") or {}).get("variant") if rows else None
    if data_before is not None and data_before != pool.variant:
        raise ConfigMismatchError(f"{path} holds rows computed on the {data_before!r} copy of {cfg.dataset}, but this "
                                  f"run resolves the {pool.variant!r} copy: rows from two data variants would mix; "
                                  "pin variant= in the config or use another output path")
    for M in cfg.sizes:
        pool._check_size(M, held_out=PROTOCOLS[cfg.protocol].tune_beta)

    groups = cfg.groups()
    todo_of = {g: {k for k in cfg.cells(*g) if k not in done} for g in groups}
    pending = [g for g in groups if todo_of[g]]
    n_done = len(groups) - len(pending)
    bar = _progress(len(groups), n_done, progress, f"{cfg.experiment}/{cfg.dataset}/{cfg.protocol}")
    start = time.perf_counter()
    new_rows = 0

    def save_manifest():
        wall = time.perf_counter() - start
        write_manifest(
            manifest_path,
            command=command or " ".join(sys.argv),
            parameters=cfg.to_dict(),
            wall_time_s=wall,
            device=device,
            extra=dict(
                fingerprint=cfg.fingerprint(), rows=len(rows), groups_total=len(groups),
                groups_done=len(groups) - len(pending), complete=not pending,
                wall_time_total_s=round(prior_total + wall, 3), threads=torch.get_num_threads(),
                data=dict(dataset=cfg.dataset, variant=pool.variant, exact=pool.exact, split=cfg.split,
                          note=_data_note(cfg.dataset, pool.variant, pool.exact)),
                output=str(path),
            ),
        )

    order = {g: i for i, g in enumerate(groups)}

    def finish(g, new):
        nonlocal new_rows
        rows.extend({c: r.get(c) for c in COLUMNS} for r in new)
        # rows in the order of a sequential run, whatever order the groups finished in: a stable sort by group
        # (key = (method, M, N, noise, seed, loss); group = (M, seed)) keeps each group's own row order
        rows.sort(key=lambda r: order.get((int(r["M"]), int(r["seed"])), -1))
        new_rows += len(new)
        atomic_write_text(path, _to_csv(rows))
        pending.remove(g)
        if bar is not None:
            bar.update(1)
        save_manifest()
        if callback is not None:
            callback(len(groups) - len(pending), len(groups))

    chosen = pending[:max_groups] if max_groups is not None else list(pending)
    try:
        if jobs == 1 or len(chosen) < 2:
            for g in chosen:
                finish(g, evaluate_group(cfg, g[0], g[1], todo=todo_of[g], device=device, pool=pool))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
                futures = {ex.submit(_group_in_worker, cfg.to_dict(), g[0], g[1], todo_of[g], device): g
                           for g in chosen}
                for fut in as_completed(futures):
                    finish(futures[fut], fut.result())
    finally:
        if bar is not None:
            bar.close()
    if not path.exists():  # nothing to do and no file yet (empty grid cannot happen, but be safe)
        atomic_write_text(path, _to_csv(rows))
    if new_rows == 0 and not manifest_path.exists():
        save_manifest()
    return read_results(path)


def _data_note(dataset: str, variant: str, exact: bool) -> str:
    if dataset == "synthetic":
        return f"synthetic: {SYNTHETIC_POOL} random sparse 8x8 patterns (seeded), for tests only"
    if dataset == "cifar10" and variant == "jpeg":
        return ("CIFAR-10 from the 60k JPEG re-encoding (lossy: mean abs. pixel error ~6/255 against the "
                "canonical pixels), not the canonical binary files")
    return f"{dataset} ({variant}{'' if exact else ', approximate copy'})"
