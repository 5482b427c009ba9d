r"""The learnable feature map Phi of a U-Hop layer and the separation losses it is trained with.

``FeatureMap`` is Eq (2.1) of the paper, ``Phi(u) = W u`` with ``W in R^{D_Phi x d}``, applied to the
last dimension of any tensor ``(..., d)``.  Optionally every row of ``W`` is kept at unit norm
(Algorithm 1, line 4) by dividing by the row norms *inside* the forward pass, so the constraint holds
throughout training and the optimiser moves directions only.

Two separation losses over a set of stored patterns (rows of ``xi``, or a batch of sets ``(B, M, d)``):

* :func:`dl_separation_loss` -- Definition 3.1 ("separation loss for DL"),
  ``L_bar(Xi; t) = log E_{u, v ~ Xi} exp{2t [K(u, v)^2 - 1]}``;
* ``loss="def2.2"`` in :func:`feature_separation_loss` -- Definition 2.2,
  ``log E exp(-t ||Phi(u) - Phi(v)||^2)`` (``uhop.separation_loss``).

Which one Algorithm 2 uses, and why the features are normalised by default, is explained in
:func:`dl_separation_loss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int, check_t, check_tensor
from ..kernel import LinearKernel

__all__ = ["FeatureMap", "dl_separation_loss", "feature_separation_loss", "SEPARATION_LOSSES", "PAIRS"]

SEPARATION_LOSSES = ("dl", "def2.2")
PAIRS = ("distinct", "all")
FEATURE_INITS = ("identity", "normal")


class FeatureMap(nn.Module):
    r"""Linear feature map ``Phi(u) = W u``, ``W in R^{D_Phi x d}`` (Eq (2.1)), on the last dim.

    Args:
        d: input dimension.
        d_phi: feature dimension D_Phi (default ``d``).
        init: ``"identity"`` -- ``W = [I; 0]`` (needs ``d_phi >= d``): the kernel starts as the dot
            product, so a U-Hop layer starts exactly as the plain Hopfield layer; it consumes no random
            numbers, so a model with and without U-Hop built from the same seed gets identical other
            weights.  ``"normal"`` -- i.i.d. ``N(0, 1/d)`` entries.
        normalize_rows: use ``W / ||W_i||`` row by row (unit-norm rows, Algorithm 1 line 4).
        bias: add a learnable bias (an affine map, as in the official classification code; the paper's
            Phi is linear, so the default is False).
    """

    def __init__(self, d: int, d_phi: int | None = None, init: str = "identity", normalize_rows: bool = False,
                 bias: bool = False):
        super().__init__()
        self.d = check_int(d, "d", minimum=1)
        self.d_phi = self.d if d_phi is None else check_int(d_phi, "d_phi", minimum=1)
        self.init = check_choice(init, "kernel_init", FEATURE_INITS)
        if not isinstance(normalize_rows, bool):
            raise TypeError(f"normalize_rows must be a bool, got {type(normalize_rows).__name__}")
        self.normalize_rows = normalize_rows
        weight = torch.zeros(self.d_phi, self.d)
        if init == "identity":
            if self.d_phi < self.d:
                raise ValueError(f"d_phi must be >= d = {self.d} for kernel_init='identity' (W = [I; 0]), "
                                 f"got d_phi = {self.d_phi}; use kernel_init='normal'")
            weight[: self.d, : self.d] = torch.eye(self.d)
        else:
            nn.init.normal_(weight, std=1.0 / math.sqrt(self.d))
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(self.d_phi)) if bias else None

    def extra_repr(self) -> str:
        return (f"d={self.d}, d_phi={self.d_phi}, init={self.init!r}, normalize_rows={self.normalize_rows}, "
                f"bias={self.bias is not None}")

    def effective_weight(self) -> torch.Tensor:
        """The W actually applied: the parameter, or its row-normalised version."""
        if not self.normalize_rows:
            return self.weight
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d:
            raise ValueError(f"the feature map expects last dimension d = {self.d}, got shape {tuple(x.shape)}")
        return F.linear(x, self.effective_weight(), self.bias)

    def kernel(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``K(u, v) = <Phi(u), Phi(v)>`` for all row pairs: ``(..., Nu, Nv)``."""
        return self(u) @ self(v).transpose(-1, -2)

    def to_linear_kernel(self) -> LinearKernel:
        """The same map as a :class:`uhop.LinearKernel` (for :func:`uhop.retrieve`); needs ``bias=False``."""
        if self.bias is not None:
            raise ValueError("to_linear_kernel needs a linear map (bias=False); uhop.LinearKernel has no bias")
        return LinearKernel.from_weight(self.effective_weight().detach().clone())


def _as_sets(features: torch.Tensor, name: str) -> torch.Tensor:
    check_tensor(features, name)
    if features.ndim == 2:
        features = features.unsqueeze(0)
    if features.ndim != 3:
        raise ValueError(f"{name} must be (M, D) or a batch of sets (B, M, D), got shape {tuple(features.shape)}")
    if not torch.is_floating_point(features):
        raise TypeError(f"{name} must have a floating-point dtype, got {features.dtype}")
    return features


def _pair_mean_log(logits: torch.Tensor, pairs: str) -> torch.Tensor:
    """log mean_{pairs} exp(logits) per set, from an (B, M, M) logit matrix."""
    B, M, _ = logits.shape
    if pairs == "all":
        return torch.logsumexp(logits.reshape(B, -1), dim=1) - math.log(M * M)
    i, j = torch.triu_indices(M, M, offset=1, device=logits.device)
    return torch.logsumexp(logits[:, i, j], dim=1) - math.log(M * (M - 1) / 2)


def _prepared_sets(features, t, pairs, reduction, normalize):
    """Shared argument checks of the set losses: (sets (B, M, D), t, pairs, reduction)."""
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
    loss = _pair_mean_log(2.0 * t * (K.pow(2) - 1.0), pairs)
    return loss.mean() if reduction == "mean" else loss


def feature_separation_loss(features: torch.Tensor, t: float = 2.0, *, loss: str = "dl", normalize: bool = True,
                            pairs: str = "distinct", reduction: str = "mean") -> torch.Tensor:
    r"""Either separation loss on mapped patterns ``(M, D)`` or ``(B, M, D)``.

    ``loss="dl"``: :func:`dl_separation_loss` (Definition 3.1).  ``loss="def2.2"``: Definition 2.2,
    ``log mean exp(-t ||f_u - f_v||^2)`` per set (on normalised features by default, App D.2, where
    ``||a - b||^2 = 2 - 2 <a, b>``); for a single (M, D) set this equals
    ``uhop.separation_loss(features, t=t, normalize=normalize, pairs=pairs)``.
    """
    loss = check_choice(loss, "loss", SEPARATION_LOSSES)
    if loss == "dl":
        return dl_separation_loss(features, t, normalize=normalize, pairs=pairs, reduction=reduction)
    feats, t, pairs, reduction = _prepared_sets(features, t, pairs, reduction, normalize)
    G = feats @ feats.transpose(-1, -2)
    sq = torch.diagonal(G, dim1=-2, dim2=-1)
    D = (sq[..., :, None] + sq[..., None, :] - 2.0 * G).clamp_min(0.0)
    D = D * (1.0 - torch.eye(D.shape[-1], dtype=D.dtype, device=D.device))
    out = _pair_mean_log(-t * D, pairs)
    return out.mean() if reduction == "mean" else out
