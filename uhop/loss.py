r"""The separation losses of the paper and pairwise distances: the one home of both.

* Definition 2.2 (Eq (2.5)), :func:`separation_loss`: Stage I of Algorithm 1 (memory retrieval);
* Definition 3.1, :func:`dl_separation_loss`: the "separation loss for DL" that Algorithm 2 minimises in
  the ``uhop.nn`` layers, over one memory set ``(M, D)`` or a batch of sets ``(B, M, D)``;
* :func:`feature_separation_loss`: either of the two on mapped patterns, by name (``SEPARATION_LOSSES``).

Definition 2.2 in detail:

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
    check_bool,
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
    "sq_distances_from_gram",
    "upper_triangle",
    "loss_from_sq_distances",
    "loss_grad_from_sq_distances",
    "dl_separation_loss",
    "feature_separation_loss",
    "log_mean_exp_pairs",
    "REDUCTIONS",
    "PAIRS",
    "SEPARATION_LOSSES",
]

REDUCTIONS = ("avg", "max")
PAIRS = ("distinct", "all")
#: the two losses a U-Hop layer can be trained with: Definition 3.1 ("dl") and Definition 2.2.
SEPARATION_LOSSES = ("dl", "def2.2")


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
    return sq_distances_from_gram(features @ features.T)


def sq_distances_from_gram(K: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """(..., M, M) squared feature distances from the feature Gram matrices ``K = F F^T`` (unchecked).

    ``||f_u - f_v||^2 = K_uu + K_vv - 2 K_uv``; with ``normalize`` the features are L2-normalised
    first (App D.2, Eq (D.4)): ``||f_u/|f_u| - f_v/|f_v|||^2 = 2 - 2 K_uv / sqrt(K_uu K_vv)``.
    Clamped at 0 against rounding, with an exact zero diagonal (differentiable in ``K``).  Leading
    dimensions are independent sets.  The building block of :func:`pairwise_sq_distances`, of
    Definition 2.2 on batches of sets (:func:`feature_separation_loss`) and of the Gram form of
    Stage I (:mod:`uhop.stage1_gram`), for callers that have validated ``K`` already.
    """
    diag = torch.diagonal(K, dim1=-2, dim2=-1)
    if normalize:
        inv = diag.clamp_min(torch.finfo(K.dtype).tiny).rsqrt()
        D = 2.0 - 2.0 * K * inv[..., :, None] * inv[..., None, :]
    else:
        D = diag[..., :, None] + diag[..., None, :] - 2.0 * K
    D = D.clamp_min(0.0)
    # The diagonal is mathematically 0; rounding would otherwise leave ~eps there.  (In place on
    # the clamp's output, which its backward does not need.)
    torch.diagonal(D, dim1=-2, dim2=-1).zero_()
    return D


def upper_triangle(D: torch.Tensor) -> torch.Tensor:
    """The M(M-1)/2 entries ``D[..., i, j]``, i < j, of square matrices: one per distinct pair."""
    i, j = torch.triu_indices(D.shape[-1], D.shape[-1], offset=1, device=D.device)
    return D[..., i, j]


def log_mean_exp_pairs(logits: torch.Tensor, pairs: str) -> torch.Tensor:
    """``log mean exp`` of (..., M, M) pair logits over the pairs that enter the expectation.

    "distinct": the M(M-1)/2 entries i < j (the logits must be symmetric); "all": all M^2 entries.
    The one reduction shared by Definition 2.2 (logits ``-t D``) and Definition 3.1 (logits
    ``2t (K^2 - 1)``); computed with ``torch.logsumexp``, one value per leading index.
    """
    M = logits.shape[-1]
    if pairs == "distinct":
        return torch.logsumexp(upper_triangle(logits), dim=-1) - math.log(M * (M - 1) / 2)
    return torch.logsumexp(logits.reshape(*logits.shape[:-2], M * M), dim=-1) - math.log(M * M)


def min_pairwise_distance(features: torch.Tensor) -> torch.Tensor:
    """min_{u != v} ||f_u - f_v||_2 = 2 R_Phi (Definition 2.1)."""
    return upper_triangle(pairwise_sq_distances(features)).min().sqrt()


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
    check_bool(normalize, "normalize")
    if normalize:
        features = F.normalize(features, dim=-1)
    if reduction == "max" and pairs != "distinct":
        raise ValueError("pairs must be 'distinct' for reduction='max' (u = v always gives 0)")
    return loss_from_sq_distances(sq_distances_from_gram(features @ features.T), t, reduction, pairs)


def loss_from_sq_distances(D: torch.Tensor, t: float, reduction: str, pairs: str) -> torch.Tensor:
    """The separation loss from (..., M, M) squared-distance matrices ``D`` (arguments unchecked).

    The core of :func:`separation_loss` (Definition 2.2; ``reduction="max"``: App G.2), for
    callers that have validated ``t``, ``reduction`` and ``pairs`` already (Stage I).
    "distinct" and "max" read the entries i < j of ``D``, "all" every entry.  One value per
    leading index (a scalar for one matrix).  Differentiable.
    """
    if reduction == "max":
        return -t * upper_triangle(D).amin(dim=-1)
    return log_mean_exp_pairs(-t * D, pairs)


def loss_grad_from_sq_distances(D: torch.Tensor, t: float, reduction: str, pairs: str):
    r"""The loss of :func:`loss_from_sq_distances`, its gradient in ``D`` in closed form, and min D.

    Returns ``(loss, G, min_sq)``: ``G = dL/dD`` is an (M, M) matrix, nonzero only on the entries
    the loss reads (i < j for "distinct" and "max"), and ``min_sq = min_{i<j} D_ij``
    (= (2 R_Phi)^2 of Definition 2.1 when D holds feature distances).  No autograd: Stage I in
    Gram form (:mod:`uhop.stage1_gram`) calls this at every step.

    * "avg": ``L = log(sum_p exp(-t D_p)) - log(#pairs)`` over the pairs p read, so
      ``dL/dD_p = -t softmax(-t D)_p`` (the softmax over the same pairs).
    * "max": ``L = -t min_{i<j} D_ij``; the gradient ``-t`` is split evenly over tied minima,
      the subgradient :func:`torch.min` back-propagates.
    """
    M = D.shape[0]
    off_pairs = torch.full((M, M), math.inf, dtype=D.dtype, device=D.device).tril_()
    distinct = D + off_pairs                     # the pairs i < j; +inf elsewhere
    min_sq = distinct.amin()
    if reduction == "max":
        grad = (distinct == min_sq).to(D.dtype)
        return -t * min_sq, grad.mul_(-t / grad.sum()), min_sq
    if pairs == "distinct":
        logits = distinct * -t                   # -inf off the upper triangle: weight 0 there
        count = M * (M - 1) / 2
    else:
        logits = D * -t
        count = M * M
    weights = torch.softmax(logits.view(-1), dim=0).view(M, M)
    # The largest logit m has weight exp(0) / Z, so log sum exp(logits) = m + log Z = m - log max(weights).
    loss = logits.amax() - weights.amax().log() - math.log(count)
    return loss, weights.mul_(-t), min_sq


# -- Definition 3.1 and the losses of the nn layers -------------------------------------------------------


def _as_sets(features: torch.Tensor, name: str) -> torch.Tensor:
    check_tensor(features, name)
    if features.ndim == 2:
        features = features.unsqueeze(0)
    if features.ndim != 3:
        raise ValueError(f"{name} must be (M, D) or a batch of sets (B, M, D), got shape {tuple(features.shape)}")
    check_floating(features, name)
    return features


def _prepared_sets(features, t, pairs, reduction, normalize):
    """Argument checks shared by the set losses: (sets (B, M, D), t, pairs, reduction)."""
    feats = _as_sets(features, "features")
    t = check_t(t)
    pairs = check_choice(pairs, "pairs", PAIRS)
    reduction = check_choice(reduction, "reduction", ("mean", "none"))
    if pairs == "distinct" and feats.shape[1] < 2:
        raise ValueError(f"features must hold at least 2 patterns per set for pairs='distinct', got shape "
                         f"{tuple(features.shape)} (a single stored pattern has no pair to separate)")
    if normalize:
        feats = F.normalize(feats, dim=-1)
    return feats, t, pairs, reduction


def dl_separation_loss(features: torch.Tensor, t: float = 2.0, *, normalize: bool = True,
                       pairs: str = "distinct", reduction: str = "mean") -> torch.Tensor:
    r"""Definition 3.1: ``L_bar(Xi; t) = log E_{u,v ~ Xi} exp{2t [K(u, v)^2 - 1]}`` from the mapped patterns.

    Args:
        features: ``Phi(Xi)`` as rows, ``(M, D)``, or a batch of independent sets ``(B, M, D)`` (e.g. the
            patch tokens of each image: each image's tokens are the memories of its own association).
        t: the scale ``t > 0`` (default 2, the paper's value in Section 4.1).
        normalize: L2-normalise each feature first, so that ``K(u, v)`` is a cosine in [-1, 1] and
            ``K(u, u) = 1``.  **Default True**, because on raw features the loss is minimised by
            ``Phi = 0`` (every ``K = 0``, including ``u = v``): the literal definition has a trivial,
            collapsed minimiser.  On the unit sphere the minimum over distinct pairs, ``-2t``, is reached
            exactly when the mapped patterns are pairwise orthogonal -- the hypothesis
            ``l_bar(u, v) = -2t`` (i.e. ``K_bar(u, v) = 0``) of Theorem 3.1, possible only when
            ``M <= D``.
        pairs: ``"distinct"`` (u != v, the default; at least 2 patterns needed) or ``"all"``
            (independent draws, u = v included: each diagonal term is ``exp(2t [K(u,u)^2 - 1])``,
            1 on normalised features).
        reduction: ``"mean"`` over the sets of a batch, or ``"none"`` (one loss per set).

    This is the loss Algorithm 2 minimises by default (its line 4 differentiates ``L_bar``): unlike
    Definition 2.2, whose minimiser on the sphere is a regular simplex (cosines ``-1/(M-1)``), its
    minimiser is an orthonormal set, which is what the representation theorem needs.
    """
    feats, t, pairs, reduction = _prepared_sets(features, t, pairs, reduction, normalize)
    K = feats @ feats.transpose(-1, -2)
    loss = log_mean_exp_pairs(2.0 * t * (K.pow(2) - 1.0), pairs)
    return loss.mean() if reduction == "mean" else loss


def feature_separation_loss(features: torch.Tensor, t: float = 2.0, *, loss: str = "dl", normalize: bool = True,
                            pairs: str = "distinct", reduction: str = "mean") -> torch.Tensor:
    r"""Either separation loss on mapped patterns ``(M, D)`` or ``(B, M, D)``, chosen by ``loss``.

    ``loss="dl"``: :func:`dl_separation_loss` (Definition 3.1).  ``loss="def2.2"``: Definition 2.2,
    ``log mean exp(-t ||f_u - f_v||^2)`` per set (on normalised features by default, App D.2), the same
    computation as :func:`separation_loss` batched over sets: for one (M, D) set the two are equal.
    """
    loss = check_choice(loss, "loss", SEPARATION_LOSSES)
    if loss == "dl":
        return dl_separation_loss(features, t, normalize=normalize, pairs=pairs, reduction=reduction)
    feats, t, pairs, reduction = _prepared_sets(features, t, pairs, reduction, normalize)
    out = loss_from_sq_distances(sq_distances_from_gram(feats @ feats.transpose(-1, -2)), t, "avg", pairs)
    return out.mean() if reduction == "mean" else out
