"""One group (M, seed) of a grid -> its rows: memories, queries, Stage I once per loss, every method."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..._checks import check_choice
from ...loss import min_pairwise_distance, separation_loss
from ...retrieval import Scorer, make_scorer
from ...stage1 import fit_kernel
from .config import GridConfig, stage1_settings
from .memories import ImagePool, make_queries
from .registry import COLUMNS, METHODS, PROTOCOLS, derive_seed
from .scoring import ScoreCache, evaluate_method, tune_beta

__all__ = ["StageOneKernels", "fit_group_kernels", "evaluate_group", "evaluate_cell"]


@dataclass
class StageOneKernels:
    """The kernels of one Stage-I run at every N of the grid, ready for retrieval."""

    scorers: dict = field(default_factory=dict)   # N -> Scorer of K(Xi, .) (keys B = (W Xi)^T W precomputed)
    diag: dict = field(default_factory=dict)      # N -> dict of separation diagnostics
    n_train: int = 0
    seconds: float = 0.0

    def scores(self, n: int, queries: torch.Tensor) -> torch.Tensor:
        """K(Xi, x) of the kernel after N = n steps for the (Q, d) ``queries``."""
        scorer: Scorer = self.scorers[n]
        return scorer(queries)


def fit_group_kernels(memories: torch.Tensor, ns: tuple, settings: dict, seed: int, t: float) -> StageOneKernels:
    """Stage I once up to ``max(ns)`` (``fit_kernel(checkpoints=ns)``), then per N the retrieval keys and the
    separation diagnostics of the kernel actually used (after row normalisation when the protocol has it)."""
    start = time.perf_counter()
    _, hist = fit_kernel(memories, epochs=max(ns), checkpoints=list(ns), seed=seed, **settings)
    out = StageOneKernels(n_train=hist.n_train)
    with torch.no_grad():
        for n in ns:
            kernel = hist.checkpoints[n].requires_grad_(False)
            out.scorers[n] = make_scorer(memories, kernel=kernel)
            unit = F.normalize(kernel.phi(memories), dim=-1)
            out.diag[n] = dict(
                sep_loss=float(separation_loss(unit, t=t, reduction="avg")),
                sep_loss_max=float(separation_loss(unit, t=t, reduction="max")),
                min_dist=float(min_pairwise_distance(unit)),
                train_loss=float(hist.loss[n]),
            )
    out.seconds = time.perf_counter() - start
    return out


def evaluate_group(cfg: GridConfig, M: int, seed: int, todo: set | None = None, device: str = "cpu",
                   pool: ImagePool | None = None) -> list[dict]:
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
    pool = pool or ImagePool(cfg.dataset, cfg.variant, cfg.split)
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
        needed = tuple(sorted({k[2] for k in keys if k[5] == loss and k[2] is not None}))
        if not needed:
            continue
        lr = cfg.stage1_draw(seed)[1] if cfg.stage1_sampling == "random" else cfg.lr
        settings = stage1_settings(cfg.protocol, cfg.corruption, cfg.noise_mode, loss, lr, cfg.t)
        lrs[loss] = settings["lr"]
        kernels[loss] = fit_group_kernels(mem, needed, settings, derive_seed(seed, f"kernel-M{M}"), cfg.t)
        if mem_h is not None:
            kernels_h[loss] = fit_group_kernels(mem_h, needed, settings, derive_seed(seed, f"kernel-heldout-M{M}"),
                                                cfg.t)

    rows = []
    for level in cfg.noise:
        level_keys = [k for k in keys if k[3] == level]
        if not level_keys:
            continue
        q = make_queries(mem, test.image_shape, cfg.protocol, cfg.corruption, level, cfg.noise_mode, seed)
        scores = ScoreCache(q, mem)
        if mem_h is not None:
            q_h = make_queries(mem_h, held.image_shape, cfg.protocol, cfg.corruption, level, cfg.noise_mode, seed,
                               stream="heldout-query")
            scores_h = ScoreCache(q_h, mem_h)
        for key in level_keys:
            method, _, n, _, _, loss = key
            spec = METHODS[method]
            start = time.perf_counter()
            row = dict(base, method=method, M=M, N=n, noise=level, seed=seed, loss=loss,
                       beta_placement=placement if spec.temperature or spec.official else "none")
            if spec.uhop:
                kr = kernels[loss]
                s = kr.scores(n, q)
                row.update(kr.diag[n], lr=lrs[loss], n_train=kr.n_train, stage1_s=round(kr.seconds, 4))
            else:
                s = scores.get(spec.similarity)
            beta = cfg.beta if (spec.temperature or spec.official) else float("nan")
            if proto.tune_beta and spec.temperature:
                s_h = kernels_h[loss].scores(n, q_h) if spec.uhop else scores_h.get(spec.similarity)
                beta, err_h, edge = tune_beta(spec, s_h, mem_h, cfg.beta_grid, proto.beta_inside)
                row.update(beta_heldout_sse=err_h, beta_at_edge=edge)
            row.update(evaluate_method(spec, s, mem, 1.0 if math.isnan(beta) else beta, proto.beta_inside,
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
    methods that have no Stage I (their row has N = None).  For a whole grid use :func:`run_grid`, which
    shares the work of a group.
    """
    spec = METHODS[check_choice(method, "method", METHODS)]
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
