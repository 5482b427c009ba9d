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

from ._checks import check_choice, check_int, check_memories, check_positive, check_queries
from .retrieval import retrieve
from .separation import softmax, sparsemax

__all__ = ["mhm", "sparse_mhm", "dam", "l2", "manhattan", "PolynomialSeparation",
           "BASELINES", "baseline"]


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
    """

    degree: int = 10

    def __call__(self, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
        logp = self.degree * torch.log(torch.relu(z))
        none_positive = torch.isneginf(logp).all(dim=dim, keepdim=True)
        logp = torch.where(none_positive, torch.zeros_like(logp), logp)
        return torch.softmax(logp, dim=dim)


def _official(queries, memories, beta, steps, score: Callable, sep: Callable):
    """The official update: ``x <- Xi (beta * Sep(score(x)))`` (beta after Sep)."""
    check_memories(memories)
    check_queries(queries, memories)
    beta = check_positive(beta, "beta")
    steps = check_int(steps, "steps", minimum=1)
    X = queries.unsqueeze(0) if queries.ndim == 1 else queries
    for _ in range(steps):
        X = (beta * sep(score(X, memories), dim=-1)) @ memories
    return X[0] if queries.ndim == 1 else X


def _dot(X, Xi):
    return X @ Xi.T


def _plus_l2(X, Xi):  # official l2_distance: sqrt(sum (u - v)^2), positive
    return torch.cdist(X, Xi, p=2.0)


def _plus_l1(X, Xi):  # official manhhatan_distance: sum |u - v|, positive
    return torch.cdist(X, Xi, p=1.0)


def mhm(queries, memories, beta: float = 1.0, steps: int = 1, bug_compatible: bool = False):
    """Modern Hopfield model, ``x <- Xi softmax(beta Xi^T x)`` (Eq (1.2))."""
    if bug_compatible:
        return _official(queries, memories, beta, steps, _dot, softmax)
    return retrieve(queries, memories, beta=beta, separation="softmax", steps=steps)


def sparse_mhm(queries, memories, beta: float = 1.0, steps: int = 1, bug_compatible: bool = False):
    """Sparse modern Hopfield model, ``x <- Xi sparsemax(beta Xi^T x)``."""
    if bug_compatible:
        return _official(queries, memories, beta, steps, _dot, sparsemax)
    return retrieve(queries, memories, beta=beta, separation="sparsemax", steps=steps)


def dam(queries, memories, degree: int = 10, bug_compatible: bool = False, steps: int = 1):
    r"""Dense associative memory with polynomial separation of degree n.

    Corrected: ``x <- Xi p`` with ``p = relu(Xi^T x)^n / sum relu(Xi^T x)^n``
    (:class:`PolynomialSeparation`).  ``bug_compatible=True``: the official
    ``x <- Xi (Xi^T x)^n``, unnormalised (overflows / saturates to white).
    """
    degree = check_int(degree, "degree", minimum=1)
    if bug_compatible:
        return _official(queries, memories, 1.0, steps, _dot, lambda s, dim=-1: s.pow(degree))
    return retrieve(queries, memories, separation=PolynomialSeparation(degree), steps=steps)


def l2(queries, memories, beta: float = 1.0, steps: int = 1, bug_compatible: bool = False):
    """L2 similarity (Millidge et al., 2022): ``x <- Xi softmax(-beta ||x - xi||_2)``.

    ``bug_compatible=True``: ``Xi (beta softmax(+||x - xi||_2))`` as in the official code.
    """
    if bug_compatible:
        return _official(queries, memories, beta, steps, _plus_l2, softmax)
    return retrieve(queries, memories, beta=beta, separation="softmax", similarity="l2", steps=steps)


def manhattan(queries, memories, beta: float = 1.0, steps: int = 1, bug_compatible: bool = False):
    """Manhattan similarity: ``x <- Xi softmax(-beta ||x - xi||_1)``.

    ``bug_compatible=True``: ``Xi (beta softmax(+||x - xi||_1))`` as in the official code.
    """
    if bug_compatible:
        return _official(queries, memories, beta, steps, _plus_l1, softmax)
    return retrieve(queries, memories, beta=beta, separation="softmax", similarity="manhattan",
                    steps=steps)


BASELINES = {"mhm": mhm, "sparse_mhm": sparse_mhm, "dam": dam, "l2": l2, "manhattan": manhattan}


def baseline(name: str) -> Callable:
    """The baseline function called ``name`` (one of :data:`BASELINES`)."""
    return BASELINES[check_choice(name, "baseline", BASELINES)]
