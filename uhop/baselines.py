r"""Baselines of Section 4.1, all through the same retrieval code.

* ``mhm``: modern Hopfield model (Ramsauer et al., 2020), softmax on dot products.
* ``sparse_mhm``: sparse modern Hopfield (Hu et al., 2023), sparsemax.
* ``dam``: dense associative memory with a degree-n polynomial separation
  (Krotov & Hopfield, 2016; in the normalised form of Millidge et al., 2022).
* ``l2`` / ``manhattan``: the similarity measures of Millidge et al. (2022),
  as negative distances inside a softmax.

Each takes ``bug_compatible=False``.  ``True`` reproduces the official U-Hop
code (MAGICS-LAB/UHop ``functions.py``) including its bugs: beta multiplies
*after* Sep (``x = Xi (beta Sep(s))``), L2/Manhattan feed the *positive*
distance to softmax (weight goes to the farthest memory), and the DAM update
is the unnormalised ``x = Xi (Xi^T q)^n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ._checks import (
    check_choice,
    check_floating,
    check_int,
    check_memories,
    check_positive,
    check_queries,
    check_tensor,
)
from .retrieval import SIMILARITIES, make_scorer, read_out, retrieve
from .separation import resolve_separation

__all__ = ["mhm", "sparse_mhm", "dam", "l2", "manhattan", "PolynomialSeparation", "official_weights",
           "BASELINES", "baseline", "DAM_DEGREE"]

#: Degree n of DAM's polynomial separation in Section 4.1 (the official code's ``x ** 10``).
DAM_DEGREE = 10


@dataclass(frozen=True)
class PolynomialSeparation:
    r"""Normalised polynomial separation of DAM, ``p_mu = relu(s_mu)^n / sum_nu relu(s_nu)^n``.

    Computed in log space as ``softmax(n * log relu(s))`` (log 0 = -inf gets
    weight 0), so it cannot overflow however large ``s^n`` is.  For
    non-negative scores (e.g. dot products of [0, 1] images) this equals
    Millidge et al.'s "x^n, then renormalise"; negative scores get weight 0
    (for even n, x^n would reward strongly *anti*-correlated memories).
    If every score is <= 0 the weights fall back to uniform (1/M each), the
    limit of ``relu(s + eps)^n`` normalised as all scores tie at 0.
    The result is invariant to scaling s by beta > 0, so DAM has no beta.

    ``normalize=False`` is the official code's unnormalised ``s^n`` (no relu,
    no renormalisation; it overflows for large scores), the bug-compatible DAM.
    """

    degree: int = DAM_DEGREE
    normalize: bool = True

    def __call__(self, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
        if not self.normalize:
            return z.pow(self.degree)
        logp = self.degree * torch.log(torch.relu(z))
        none_positive = torch.isneginf(logp).all(dim=dim, keepdim=True)
        logp = torch.where(none_positive, torch.zeros_like(logp), logp)
        return torch.softmax(logp, dim=dim)


def official_weights(scores: torch.Tensor, *, beta: float = 1.0, separation="softmax",
                     similarity: str = "dot") -> torch.Tensor:
    r"""Weights of the official update ``x <- Xi (beta * Sep(s))`` from the (Q, M) scores of
    :func:`uhop.similarity_scores` (or :func:`uhop.retrieval.make_scorer`) for ``similarity``.

    Two departures from Eq (2.4), both in the official code and kept here to reproduce it: beta multiplies
    *after* Sep (so it is no temperature), and for "l2" / "manhattan" Sep sees ``s = -S``, the *positive*
    distance (weight goes to the farthest memory).  ``separation``: as in :func:`uhop.retrieve`, or
    ``PolynomialSeparation(n, normalize=False)`` for the official DAM.
    """
    check_tensor(scores, "scores")
    check_floating(scores, "scores")
    beta = check_positive(beta, "beta")
    similarity = check_choice(similarity, "similarity", SIMILARITIES)
    sep = resolve_separation(separation)
    s = scores if similarity == "dot" else -scores  # S = -distance; the official code feeds +distance
    return beta * sep(s, dim=-1)


def _official(queries, memories, beta, steps, similarity: str, sep: Callable):
    """The official update iterated: ``x <- Xi (beta * Sep(s(x)))`` (:func:`official_weights`)."""
    check_memories(memories)
    check_queries(queries, memories)
    beta = check_positive(beta, "beta")
    steps = check_int(steps, "steps", minimum=1)
    scorer = make_scorer(memories, similarity=similarity)
    X = queries.unsqueeze(0) if queries.ndim == 1 else queries
    for _ in range(steps):
        X = read_out(official_weights(scorer(X), beta=beta, separation=sep, similarity=similarity), memories)
    return X[0] if queries.ndim == 1 else X


def mhm(queries, memories, beta: float = 1.0, steps: int = 1, bug_compatible: bool = False):
    """Modern Hopfield model, ``x <- Xi softmax(beta Xi^T x)`` (Eq (1.2))."""
    if bug_compatible:
        return _official(queries, memories, beta, steps, "dot", "softmax")
    return retrieve(queries, memories, beta=beta, separation="softmax", steps=steps)


def sparse_mhm(queries, memories, beta: float = 1.0, steps: int = 1, bug_compatible: bool = False):
    """Sparse modern Hopfield model, ``x <- Xi sparsemax(beta Xi^T x)``."""
    if bug_compatible:
        return _official(queries, memories, beta, steps, "dot", "sparsemax")
    return retrieve(queries, memories, beta=beta, separation="sparsemax", steps=steps)


def dam(queries, memories, degree: int = DAM_DEGREE, bug_compatible: bool = False, steps: int = 1):
    r"""Dense associative memory with polynomial separation of degree n.

    Corrected: ``x <- Xi p`` with ``p = relu(Xi^T x)^n / sum relu(Xi^T x)^n``
    (:class:`PolynomialSeparation`).  ``bug_compatible=True``: the official
    ``x <- Xi (Xi^T x)^n``, unnormalised (overflows / saturates to white).
    """
    degree = check_int(degree, "degree", minimum=1)
    if bug_compatible:
        return _official(queries, memories, 1.0, steps, "dot", PolynomialSeparation(degree, normalize=False))
    return retrieve(queries, memories, separation=PolynomialSeparation(degree), steps=steps)


def l2(queries, memories, beta: float = 1.0, steps: int = 1, bug_compatible: bool = False):
    """L2 similarity (Millidge et al., 2022): ``x <- Xi softmax(-beta ||x - xi||_2)``.

    ``bug_compatible=True``: ``Xi (beta softmax(+||x - xi||_2))`` as in the official code.
    """
    if bug_compatible:
        return _official(queries, memories, beta, steps, "l2", "softmax")
    return retrieve(queries, memories, beta=beta, separation="softmax", similarity="l2", steps=steps)


def manhattan(queries, memories, beta: float = 1.0, steps: int = 1, bug_compatible: bool = False):
    """Manhattan similarity: ``x <- Xi softmax(-beta ||x - xi||_1)``.

    ``bug_compatible=True``: ``Xi (beta softmax(+||x - xi||_1))`` as in the official code.
    """
    if bug_compatible:
        return _official(queries, memories, beta, steps, "manhattan", "softmax")
    return retrieve(queries, memories, beta=beta, separation="softmax", similarity="manhattan",
                    steps=steps)


BASELINES = {"mhm": mhm, "sparse_mhm": sparse_mhm, "dam": dam, "l2": l2, "manhattan": manhattan}


def baseline(name: str) -> Callable:
    """The baseline function called ``name`` (one of :data:`BASELINES`)."""
    return BASELINES[check_choice(name, "baseline", BASELINES)]
