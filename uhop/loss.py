r"""Separation loss L_Phi (Definition 2.2, Eq (2.5)) and pairwise distances.

``L_Phi(Xi; t) = log E_{u, v ~ Xi} exp(-t ||Phi(u) - Phi(v)||^2)``, the log
of the average Phi-RBF similarity of memory pairs.  Minimising it spreads the
features apart (the uniformity loss of Wang & Isola, 2020).

Which pairs enter the average is left implicit in the paper:

* ``pairs="distinct"``: the M(M-1)/2 pairs i < j (the official code's
  ``torch.pdist``; Wang & Isola 2020).
* ``pairs="all"``: all M^2 ordered pairs, u = v included, which is what an
  expectation over two *independent* draws u, v ~ Xi literally means.

With ``S = sum_{i<j} exp(-t d_ij^2)`` the two are related exactly by
``mean_all = (M + 2 S) / M^2`` and ``mean_distinct = S / (M (M - 1) / 2)``
(the M diagonal terms are exp(0) = 1).  Both losses have the same minimisers
in W, but "all" is bounded below by ``log(1/M)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import (
    check_choice,
    check_finite,
    check_floating,
    check_ndim,
    check_t,
    check_tensor,
)

__all__ = [
    "separation_loss",
    "pairwise_sq_distances",
    "min_pairwise_distance",
    "REDUCTIONS",
    "PAIRS",
]

REDUCTIONS = ("avg", "max")
PAIRS = ("distinct", "all")


def _check_features(features, name="features"):
    check_tensor(features, name)
    check_floating(features, name)
    check_ndim(features, name, (2,), "(M, D)")
    if features.shape[0] < 2:
        raise ValueError(f"{name} must contain at least 2 rows (pairs of patterns), got shape "
                         f"{tuple(features.shape)}")
    check_finite(features, name)
    return features


def pairwise_sq_distances(features: torch.Tensor) -> torch.Tensor:
    """(M, M) matrix of ||f_u - f_v||^2 between the rows of ``features``.

    Uses the Gram form ``|f_u|^2 + |f_v|^2 - 2 <f_u, f_v>`` (no (M, M, D)
    intermediate and no square root, so the gradient is finite at 0),
    clamped at 0 against rounding, with an exact zero diagonal.
    """
    _check_features(features)
    return _sq_distances(features)


def _sq_distances(features: torch.Tensor) -> torch.Tensor:
    G = features @ features.T
    sq = torch.diagonal(G)
    D = (sq[:, None] + sq[None, :] - 2.0 * G).clamp_min(0.0)
    # The diagonal is mathematically 0; rounding would otherwise leave ~eps there.
    return D * (1.0 - torch.eye(D.shape[0], dtype=D.dtype, device=D.device))


def _upper(D: torch.Tensor) -> torch.Tensor:
    i, j = torch.triu_indices(D.shape[0], D.shape[0], offset=1, device=D.device)
    return D[i, j]


def min_pairwise_distance(features: torch.Tensor) -> torch.Tensor:
    """min_{u != v} ||f_u - f_v||_2 = 2 R_Phi (Definition 2.1)."""
    return _upper(pairwise_sq_distances(features)).min().sqrt()


def separation_loss(features: torch.Tensor, *, t: float = 2.0, reduction: str = "avg",
                    pairs: str = "distinct", normalize: bool = False) -> torch.Tensor:
    r"""Separation loss of the feature rows ``features`` = Phi(Xi) (M, D).

    * ``reduction="avg"``: Definition 2.2,
      ``log mean_{pairs} exp(-t ||f_u - f_v||^2)`` = logsumexp of the
      Eq (2.5) log-RBF values ``l_Phi = -t ||f_u - f_v||^2`` minus the log of
      the number of pairs (computed stably with ``torch.logsumexp``).
    * ``reduction="max"``: the worst-pair variant of App G.2 (the official
      ``uniform_loss_max``): ``max_{u < v} -t ||f_u - f_v||^2 = -t min d^2``.
      ``pairs`` must be "distinct" (u = v would always give the maximum 0).
    * ``normalize=True``: L2-normalise each row first (App D.2, Eq (D.4);
      the official code does this).  On unit vectors
      ``||a - b||^2 = 2 - 2 <a, b>``, so the loss is bounded and invariant to
      rescaling W; on raw features it is unbounded below (scale W up).

    Returns a scalar tensor, differentiable in ``features``.
    """
    _check_features(features)
    t = check_t(t)
    reduction = check_choice(reduction, "reduction", REDUCTIONS)
    pairs = check_choice(pairs, "pairs", PAIRS)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    if normalize:
        features = F.normalize(features, dim=-1)
    if reduction == "max" and pairs != "distinct":
        raise ValueError("pairs must be 'distinct' for reduction='max' (u = v always gives 0)")
    return _loss_from_sq_distances(_sq_distances(features), t, reduction, pairs)


def _loss_from_sq_distances(D: torch.Tensor, t: float, reduction: str, pairs: str) -> torch.Tensor:
    """The loss from an (M, M) squared-distance matrix (arguments already checked)."""
    M = D.shape[0]
    if reduction == "max":
        return -t * _upper(D).min()
    if pairs == "distinct":
        logits = -t * _upper(D)
        count = M * (M - 1) / 2
    else:
        logits = (-t * D).reshape(-1)
        count = M * M
    return torch.logsumexp(logits, dim=0) - math.log(count)
