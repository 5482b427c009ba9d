r"""The learnable feature map Phi of a U-Hop layer: :class:`uhop.LinearKernel` as a layer component.

``FeatureMap`` is Eq (2.1) of the paper, ``Phi(u) = W u`` with ``W in R^{D_Phi x d}``, applied to the
last dimension of any tensor ``(..., d)``.  It *is* a :class:`uhop.LinearKernel` (one feature map in
the package: the same weight, inits, kernel, Gram matrix and precomputed keys) with two layer options:
every row of ``W`` kept at unit norm (Algorithm 1, line 4) by dividing by the row norms *inside* the
forward pass, so the constraint holds throughout training and the optimiser moves directions only; and
an optional bias (the official classification code's affine map).  Its random init draws from torch's
global generator, as every ``torch.nn`` layer does, so ``torch.manual_seed`` fixes a model's weights.

The separation losses it is trained with live in :mod:`uhop.loss` (Definition 3.1:
:func:`~uhop.loss.dl_separation_loss`; either definition: :func:`~uhop.loss.feature_separation_loss`)
and are re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_choice
from ..kernel import LinearKernel
from ..loss import PAIRS, SEPARATION_LOSSES, dl_separation_loss, feature_separation_loss

__all__ = ["FeatureMap", "dl_separation_loss", "feature_separation_loss", "SEPARATION_LOSSES", "PAIRS",
           "FEATURE_INITS"]

#: the inits of a layer's feature map (the ``official`` init of :class:`uhop.LinearKernel` is Stage-I only).
FEATURE_INITS = ("identity", "normal")


class FeatureMap(LinearKernel):
    r"""Linear feature map ``Phi(u) = W u``, ``W in R^{D_Phi x d}`` (Eq (2.1)), on the last dim.

    Args:
        d: input dimension.
        d_phi: feature dimension D_Phi (default ``d``).
        init: ``"identity"`` -- ``W = [I; 0]`` (needs ``d_phi >= d``): the kernel starts as the dot
            product, so a U-Hop layer starts exactly as the plain Hopfield layer; it consumes no random
            numbers, so a model with and without U-Hop built from the same seed gets identical other
            weights.  ``"normal"`` -- i.i.d. ``N(0, 1/d)`` entries from torch's global generator.
        normalize_rows: use ``W / ||W_i||`` row by row (unit-norm rows, Algorithm 1 line 4).
        bias: add a learnable bias (an affine map, as in the official classification code; the paper's
            Phi is linear, so the default is False).  An affine map has no ``W^T W`` kernel form:
            :meth:`gram`, :meth:`precompute` and :meth:`to_linear_kernel` refuse it.
    """

    def __init__(self, d: int, d_phi: int | None = None, init: str = "identity", normalize_rows: bool = False,
                 bias: bool = False):
        init = check_choice(init, "kernel_init", FEATURE_INITS)
        check_bool(normalize_rows, "normalize_rows")
        super().__init__(d, d_phi, init, generator=torch.default_generator)
        self.normalize_rows = normalize_rows
        self.bias = nn.Parameter(torch.zeros(self.d_phi)) if bias else None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, normalize_rows={self.normalize_rows}, bias={self.bias is not None}"

    def effective_weight(self) -> torch.Tensor:
        """The W actually applied: the parameter, or its row-normalised version."""
        if not self.normalize_rows:
            return self.weight
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """``Phi(x) = W x (+ b)`` on the last dimension of ``x`` (..., d) -> (..., D_Phi)."""
        if x.shape[-1] != self.d:
            raise ValueError(f"the feature map expects last dimension d = {self.d}, got shape {tuple(x.shape)}")
        return F.linear(x, self.effective_weight(), self.bias)

    def kernel(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``K(u, v) = <Phi(u), Phi(v)>`` for all row pairs: ``(..., Nu, Nv)``."""
        return self(u) @ self(v).transpose(-1, -2)

    def linear_weight(self) -> torch.Tensor:
        if self.bias is not None:
            raise ValueError("this feature map is affine (bias=True): it has no kernel form K = u^T W^T W v; "
                             "build it with bias=False")
        return self.effective_weight()

    def to_linear_kernel(self) -> LinearKernel:
        """The same map as a plain :class:`uhop.LinearKernel` (a detached copy of the applied W)."""
        return LinearKernel.from_weight(self.linear_weight().detach().clone())
