"""One method on one (query set, memory set): weights, read-out, metrics, and the beta search of "tuned".

Every similarity, separation and read-out here is the core's (:mod:`uhop.retrieval`, :mod:`uhop.baselines`);
this module only decides which core call a method makes under a protocol and turns the output into the
metrics of a results row.
"""

from __future__ import annotations

import math

import torch

from ...baselines import PolynomialSeparation, official_weights
from ...metrics import sse
from ...retrieval import read_out, separate, similarity_scores
from ...separation import support_size, tsallis_entropy
from .registry import DAM_DEGREE, MethodSpec

__all__ = ["ScoreCache", "method_weights", "evaluate_method", "mean_sse", "tune_beta"]


class ScoreCache:
    """``S(queries, memories)`` per similarity (:func:`uhop.similarity_scores`), computed once and shared by the
    methods of a group (MHM, sparse MHM and DAM share the dot products, a method and its ``*_official``
    variant the distances)."""

    def __init__(self, queries: torch.Tensor, memories: torch.Tensor):
        self.queries, self.memories = queries, memories
        self._cache = {}

    def get(self, similarity: str) -> torch.Tensor:
        if similarity not in self._cache:
            self._cache[similarity] = similarity_scores(self.queries, self.memories, similarity=similarity)
        return self._cache[similarity]


def method_weights(spec: MethodSpec, scores: torch.Tensor, beta: float,
                   beta_inside: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(read-out weights, weights on the simplex for the diagnostics) of a method from its scores S.

    ``scores``: S of :func:`uhop.similarity_scores` (dot products, negative distances) or the kernel scores.
    Corrected methods under a beta-inside protocol: ``Sep(beta S)`` (Eq (2.4), :func:`uhop.retrieval.separate`).
    The official code's update ``beta Sep(s)`` (:func:`uhop.baselines.official_weights`) serves the
    ``*_official`` methods, which also keep its sign bug (s = +distance), and every method of a protocol that
    places beta after Sep.
    """
    if spec.separation == "poly":
        if spec.official:
            # x <- Xi (beta (Xi^T q)^n): unnormalised; float64 so that it saturates rather than overflows
            w = official_weights(scores.double(), beta=beta, separation=PolynomialSeparation(DAM_DEGREE, False))
            return w, w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        p = separate(scores, separation=PolynomialSeparation(DAM_DEGREE))  # beta-invariant
        return p, p
    if spec.official or not beta_inside:
        # the sign bug belongs to the *_official methods; the corrected ones only move beta after Sep
        similarity = spec.similarity if spec.official else "dot"
        w = official_weights(scores, beta=beta, separation=spec.separation, similarity=similarity)
        return w, w / beta
    p = separate(scores, beta=beta, separation=spec.separation)
    return p, p


def _metrics(out: torch.Tensor, memories: torch.Tensor, weights: torch.Tensor, success_mse: float) -> dict:
    out = out.clamp(0.0, 1.0).to(memories.dtype)  # NaN (if any) stays NaN
    err = sse(out, memories).double()
    mse = err / memories.shape[1]
    M = memories.shape[0]
    # nearest memory by pixel distance (a metric, not a retrieval similarity: it must tolerate the NaN outputs
    # of an overflowing official DAM, which uhop.similarity_scores refuses)
    hit = torch.cdist(out, memories).argmin(-1) == torch.arange(M, device=out.device)
    w = weights.double()
    std = lambda x: float(x.std(unbiased=True)) if x.numel() > 1 else 0.0  # noqa: E731
    return dict(
        sse_mean=float(err.mean()), sse_std=std(err), mse_mean=float(mse.mean()), mse_std=std(mse),
        success=float((mse <= success_mse).double().mean()), hit=float(hit.double().mean()),
        eff_support=float(tsallis_entropy(w, 1.0).exp().mean()), support=float(support_size(w).double().mean()),
        top_weight=float(w.max(-1).values.mean()),
    )


def _read_out(weights: torch.Tensor, memories: torch.Tensor) -> torch.Tensor:
    return read_out(weights, memories.double() if weights.dtype == torch.float64 else memories)


def evaluate_method(spec: MethodSpec, scores: torch.Tensor, memories: torch.Tensor, beta: float,
                    beta_inside: bool, success_mse: float) -> dict:
    """The metrics of one retrieval step of ``spec`` (one row's error and diagnostic columns)."""
    w, simplex = method_weights(spec, scores, beta, beta_inside)
    return _metrics(_read_out(w, memories), memories, simplex, success_mse)


def mean_sse(spec: MethodSpec, scores: torch.Tensor, memories: torch.Tensor, beta: float,
             beta_inside: bool) -> float:
    """Mean SSE over the queries of one retrieval step (the criterion of the beta search)."""
    w, _ = method_weights(spec, scores, beta, beta_inside)
    return float(sse(_read_out(w, memories).clamp(0.0, 1.0), memories).double().mean())


def tune_beta(spec: MethodSpec, scores: torch.Tensor, memories: torch.Tensor, grid,
              beta_inside: bool) -> tuple[float, float, bool]:
    """(best beta, its mean SSE, at the grid edge?) on one (held-out) memory set."""
    errs = [mean_sse(spec, scores, memories, b, beta_inside) for b in grid]
    finite = [(e if math.isfinite(e) else math.inf) for e in errs]
    i = min(range(len(grid)), key=lambda k: (finite[k], k))
    return float(grid[i]), float(errs[i]), i in (0, len(grid) - 1)
