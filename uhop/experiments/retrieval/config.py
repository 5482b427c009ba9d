"""Configuration of a retrieval grid (:class:`GridConfig`) and the Stage-I settings of each protocol."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Iterable

import torch

from ..._checks import check_choice, check_positive
from ...stage1 import PRESETS, Stage1Settings
from .registry import (
    CORRUPTIONS,
    DATASETS,
    DEFAULT_BETA_GRID,
    LOSSES,
    METHODS,
    NOISE_MODES,
    PROTOCOLS,
    STAGE1_SAMPLING,
    derive_seed,
)

__all__ = ["GridConfig", "default_loss", "stage1_settings"]


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
        check_choice(self.dataset, "dataset", DATASETS)
        check_choice(self.protocol, "protocol", tuple(PROTOCOLS))
        methods = _as_tuple(self.methods, "methods", str)
        for m in methods:
            check_choice(m, "method", tuple(METHODS))
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods contains duplicates: {methods}")
        set_("methods", methods)
        sizes = _as_tuple(self.sizes, "sizes", int)
        if min(sizes) < 2:
            raise ValueError(f"sizes (M) must be >= 2 (the separation loss needs pairs), got {sizes}")
        set_("sizes", tuple(sorted(set(sizes))))
        check_choice(self.corruption, "corruption", CORRUPTIONS)
        check_choice(self.noise_mode, "noise_mode", NOISE_MODES)
        check_choice(self.stage1_sampling, "stage1_sampling", STAGE1_SAMPLING)
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
            set_(name, check_positive(getattr(self, name), name))
        if self.lr is not None:
            set_("lr", check_positive(self.lr, "lr"))
        losses = _as_tuple(self.losses, "losses", object)
        resolved = []
        for loss in losses:
            if loss is None:
                loss = default_loss(self.protocol, self.corruption, self.noise_mode)
            resolved.append(check_choice(loss, "loss", LOSSES))
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
        g = torch.Generator().manual_seed(derive_seed(seed, "stage1-draw"))
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


def default_loss(protocol: str, corruption: str, noise_mode: str) -> str:
    """The Stage-I loss a protocol uses when none is given: the paper's average loss, or that of the official
    script behind each figure."""
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
    proto = PROTOCOLS[check_choice(protocol, "protocol", tuple(PROTOCOLS))]
    check_choice(corruption, "corruption", CORRUPTIONS)
    check_choice(noise_mode, "noise_mode", NOISE_MODES)
    loss = default_loss(protocol, corruption, noise_mode) if loss is None else check_choice(loss, "loss", LOSSES)
    if proto.official_stage1:
        # masked-query scripts train on Xi[:int(0.5 M)]; the noise scripts on all memories
        s = PRESETS["official_max" if loss == "max" else "official_avg"].replace(
            train_fraction=0.5 if corruption == "mask" else 1.0)
        if float(t) != s.t:
            raise ValueError(f"the official protocol hard-codes t = {s.t}, got t={t}")
    else:
        # Stage1Settings' defaults are Algorithm 1 as the paper states it (identity init, plain SGD at lr 1,
        # rows of W normalised, features normalised inside the loss, all memories)
        s = Stage1Settings(loss=loss, t=float(t))
    if lr is not None:
        s = s.replace(lr=float(lr))
    return dict(s)
