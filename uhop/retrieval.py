r"""Retrieval dynamics T_K (Eq (2.4); Algorithm 1, Stage II).

One step maps every query row ``x`` to ``Sep(beta * S(x, Xi)) Xi``: the
similarity of ``x`` to each memory, scaled by the inverse temperature beta
*inside* the separation function, gives weights on the simplex that mix the
memories.  Everything is batched over queries: one (Q x d)(d x M) product for
the scores and one (Q x M)(M x d) product for the read-out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import (
    check_bool,
    check_choice,
    check_floating,
    check_int,
    check_memories,
    check_positive,
    check_queries,
    check_same_dtype_device,
    check_tensor,
)
from .energy import energy_from_scores
from .kernel import LinearKernel, check_kernel
from .separation import Separation, resolve_separation

__all__ = ["retrieve", "retrieval_step", "association", "similarity_scores", "SIMILARITIES", "Scorer",
           "make_scorer", "separate", "read_out", "flush_subnormal"]

#: Similarity measures S(x, xi).  "l2" and "manhattan" are the negative
#: distances of Millidge et al. (2022), so that *closer* memories score higher.
SIMILARITIES = ("dot", "l2", "manhattan")


@dataclass
class Scorer:
    """S(., Xi) for one memory set, with its query-independent part computed once (:func:`make_scorer`).

    ``scorer(X)`` returns the (Q, M) scores of the (Q, d) states ``X`` without checking them again: the
    retrieval iteration and the experiment runner call it on states they produced or checked themselves.
    """

    similarity: str
    keys: torch.Tensor            # (M, d) for "dot"; (M, D_Phi) features for distances
    kernel: LinearKernel | None

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        if self.similarity == "dot":
            return X @ self.keys.T
        feats = X if self.kernel is None else self.kernel.phi(X)
        p = 2.0 if self.similarity == "l2" else 1.0
        return -torch.cdist(feats, self.keys, p=p)

    def self_similarity(self, X: torch.Tensor) -> torch.Tensor:
        """K(x, x) per row (only meaningful for "dot")."""
        feats = X if self.kernel is None else self.kernel.phi(X)
        return (feats * feats).sum(-1)


def make_scorer(memories: torch.Tensor, *, similarity: str = "dot", kernel: LinearKernel | None = None,
                keys: torch.Tensor | None = None) -> Scorer:
    """The :class:`Scorer` of ``memories`` (M, d) for a similarity (and kernel), checked once.

    With "dot" and a kernel its keys are ``B = kernel.precompute(memories) = (W Xi)^T W``, so that
    ``K(Xi, x) = B x`` costs one product, as a plain MHM score (``keys=`` passes a B computed before).
    """
    check_memories(memories)
    similarity = check_choice(similarity, "similarity", SIMILARITIES)
    kernel = check_kernel(kernel, memories)
    if keys is not None:
        check_tensor(keys, "keys")
        if kernel is None:
            raise ValueError("keys (the precomputed B = (W Xi)^T W) require the kernel they came from")
        if similarity != "dot":
            raise ValueError(f"keys are only used with similarity='dot', got similarity={similarity!r}")
        if keys.shape != memories.shape:
            raise ValueError(
                f"keys must have the memories' shape {tuple(memories.shape)}, got {tuple(keys.shape)}"
            )
        check_same_dtype_device(keys, "keys", memories, "memories")
        return Scorer(similarity, keys, kernel)
    if similarity == "dot":
        # K(Xi, x) = B x with B = (W Xi)^T W: computed once, reused by every step.
        keys = memories if kernel is None else kernel.precompute(memories)
    else:
        keys = memories if kernel is None else kernel.phi(memories)
    return Scorer(similarity, keys, kernel)


def _as_batch(queries):
    return (queries.unsqueeze(0), True) if queries.ndim == 1 else (queries, False)


def _validate(queries, memories, beta, separation):
    check_memories(memories)
    check_queries(queries, memories)
    beta = check_positive(beta, "beta")
    sep = resolve_separation(separation)
    return beta, sep


def similarity_scores(queries: torch.Tensor, memories: torch.Tensor, *,
                      kernel: LinearKernel | None = None, similarity: str = "dot",
                      keys: torch.Tensor | None = None) -> torch.Tensor:
    """S(x, Xi): (Q, M) scores ((M,) for one query).

    "dot": ``Xi^T x``, or ``K(Xi, x)`` with a kernel; "l2": ``-||x - xi||_2``;
    "manhattan": ``-||x - xi||_1`` (in feature space when a kernel is given).
    """
    check_memories(memories)
    check_queries(queries, memories)
    X, single = _as_batch(queries)
    s = make_scorer(memories, similarity=similarity, kernel=kernel, keys=keys)(X)
    return s[0] if single else s


def association(queries: torch.Tensor, memories: torch.Tensor, *, beta: float = 1.0,
                separation="softmax", kernel: LinearKernel | None = None,
                similarity: str = "dot", keys: torch.Tensor | None = None) -> torch.Tensor:
    """Separation weights ``Sep(beta * S(x, Xi))`` of Eq (2.4): (Q, M), or (M,) for one query.

    Rows lie on the simplex; with sparsemax/entmax they contain exact zeros
    (count them with :func:`uhop.separation.support_size`).  These are the
    weights the read-out uses, so subnormal ones are 0 (:func:`flush_subnormal`).
    """
    beta, sep = _validate(queries, memories, beta, separation)
    X, single = _as_batch(queries)
    scores = make_scorer(memories, similarity=similarity, kernel=kernel, keys=keys)(X)
    p = flush_subnormal(_separate(sep, beta, scores))
    return p[0] if single else p


def separate(scores: torch.Tensor, *, beta: float = 1.0, separation="softmax") -> torch.Tensor:
    """``Sep(beta * scores)`` (Eq (2.4)) of precomputed (Q, M) scores, e.g. from :func:`similarity_scores`.

    For callers that reuse one score matrix at many betas or with several separations (the experiment
    runner).  Raises ``FloatingPointError`` when ``beta * scores`` is not finite.  The weights are returned as
    the separation map gives them, subnormal floats included; :func:`read_out` flushes those.
    """
    check_tensor(scores, "scores")
    check_floating(scores, "scores")
    beta = check_positive(beta, "beta")
    return _separate(resolve_separation(separation), beta, scores)


def _separate(sep, beta: float, scores: torch.Tensor) -> torch.Tensor:
    """``sep(beta * scores)`` after checking that the scaled scores are finite: an overflow (huge patterns or
    beta) would otherwise come back as NaN weights, or as an index error from inside the sort-based solvers."""
    z = beta * scores
    lo, hi = torch.aminmax(z.detach()) if z.numel() else (z.new_zeros(()), z.new_zeros(()))
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        raise FloatingPointError(
            f"the similarity scores times beta={beta:g} are not finite (largest |score| overflowed {z.dtype}): scale "
            "the memories and queries down, lower beta, or use float64")
    return sep(z, dim=-1)


def flush_subnormal(weights: torch.Tensor) -> torch.Tensor:
    """Set the weights whose magnitude is at most the smallest normal float of their dtype to 0.

    A sharp softmax (a fitted U-Hop kernel, large beta) leaves a few percent of its weights as subnormal
    floats, which many CPUs multiply tens of times slower than normal ones: the read-out ``weights @ memories``
    then costs several times a plain MHM step.  Each such weight is at most 1.2e-38 (float32), so dropping it
    changes a retrieved pattern by at most that times the largest memory entry -- far below rounding.  The
    user's global torch settings (``torch.set_flush_denormal``) are left alone.  ``hardshrink`` does it in one
    pass without temporaries (NaN stays NaN), a small fraction of the read-out's cost.
    """
    return F.hardshrink(weights, torch.finfo(weights.dtype).tiny)


def read_out(weights: torch.Tensor, memories: torch.Tensor) -> torch.Tensor:
    """The read-out ``Xi p`` of Eq (2.4) for weight rows ``p``: ``weights @ memories``, (Q, M)(M, d) -> (Q, d).

    Subnormal weights are flushed to 0 first (:func:`flush_subnormal`), so that a sharp separation costs
    no more than a plain MHM step.  Every retrieval path of the package ends here.
    """
    check_tensor(weights, "weights")
    check_tensor(memories, "memories")
    return flush_subnormal(weights) @ memories


def retrieval_step(queries: torch.Tensor, memories: torch.Tensor, **kwargs) -> torch.Tensor:
    """One application of T_K (Eq (2.4)); same keywords as :func:`association`."""
    return association(queries, memories, **kwargs) @ memories


def _check_retrieve(queries, memories, beta, separation, similarity, steps, tol, return_energies):
    """The arguments of :func:`retrieve`, checked (kept apart so that the function reads as the iteration)."""
    beta, sep = _validate(queries, memories, beta, separation)
    steps = check_int(steps, "steps", minimum=1)
    if tol is not None:
        tol = check_positive(tol, "tol")
    check_bool(return_energies, "return_energies")
    if return_energies:
        if similarity != "dot":
            raise ValueError(
                f"return_energies is only defined for similarity='dot' (energies E_MHM / E_K), "
                f"got similarity={similarity!r}"
            )
        if not isinstance(sep, Separation):
            raise ValueError("return_energies needs an alpha-entmax separation, not a custom callable")
    return beta, sep, steps, tol


def retrieve(queries: torch.Tensor, memories: torch.Tensor, *, beta: float = 1.0,
             separation="softmax", kernel: LinearKernel | None = None,
             similarity: str = "dot", steps: int = 1, tol: float | None = None,
             return_energies: bool = False, keys: torch.Tensor | None = None):
    r"""Iterate the retrieval dynamics ``x_{t+1} = Xi Sep(beta S(x_t, Xi))`` (Eq (2.4)).

    Shape convention: ``memories`` is (M, d) with one memory per **row** (the
    paper's Xi in R^{d x M} is its transpose); ``queries`` is (d,) or (Q, d).
    The result has the shape of ``queries``.

    Args:
        queries: (d,) or (Q, d), same dtype/device as ``memories``.
        memories: (M, d).
        beta: inverse temperature, multiplies the similarity inside Sep.
        separation: "softmax" (alpha=1, MHM), "sparsemax" (alpha=2),
            "entmax15", a float alpha in [1, 2], a Separation, or a callable
            ``f(z, dim)`` returning simplex weights (no energies then).
        kernel: a :class:`~uhop.kernel.LinearKernel`; with "dot" the scores
            are K(Xi, x) = (W Xi)^T (W x) (U-Hop, Theorem 2.1).  With "l2" /
            "manhattan" the distances are taken between Phi(x) and Phi(xi).
        similarity: "dot", "l2" (``-||x - xi||_2``) or "manhattan" (``-||x - xi||_1``).
        steps: maximum number of update steps (>= 1).
        tol: stop early once ``max_q ||x_{t+1} - x_t||_2 < tol``.
        return_energies: also return the energy (Eq (1.1) / (2.2)) of the
            initial state and after each step; only for similarity="dot" and
            an alpha-entmax separation.
        keys: the (M, d) matrix ``kernel.precompute(memories)``, to skip its
            computation (a fitted :class:`~uhop.model.UHop` passes it).

    Returns:
        ``x`` with the shape of ``queries``; with ``return_energies=True`` the
        pair ``(x, energies)`` with energies of shape (steps_done + 1, Q), or
        (steps_done + 1,) for a single query.

    The kernel's B = (W Xi)^T W is computed once, so each kernelized step
    costs the same two matrix products as a plain MHM step.  Gradients flow
    through the computation (wrap the call in ``torch.no_grad()`` for speed
    when the kernel weight requires grad).
    """
    beta, sep, steps, tol = _check_retrieve(queries, memories, beta, separation, similarity, steps, tol,
                                            return_energies)
    scorer = make_scorer(memories, similarity=similarity, kernel=kernel, keys=keys)
    X, single = _as_batch(queries)

    energies = []

    def record(X_now, scores_now, weights_now=None):
        energies.append(energy_from_scores(scores_now, scorer.self_similarity(X_now), beta, sep,
                                           weights_now))

    # The scores (and weights) of a state serve both its energy and the next step.
    scores = scorer(X)
    weights = _separate(sep, beta, scores)
    if return_energies:
        record(X, scores, weights)
    for t in range(steps):
        X_new = read_out(weights, memories)
        converged = tol is not None and bool((X_new - X).norm(dim=-1).max() < tol)
        X = X_new
        last = converged or t == steps - 1
        if return_energies or not last:
            scores = scorer(X)
            weights = _separate(sep, beta, scores)
        if return_energies:
            record(X, scores, weights)
        if converged:
            break

    out = X[0] if single else X
    if not return_energies:
        return out
    E = torch.stack(energies)  # (steps_done + 1, Q)
    return out, (E[:, 0] if single else E)
