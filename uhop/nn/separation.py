r"""The separation map of a Hopfield layer as a module: fixed softmax / sparsemax / alpha-entmax, or a
learnable alpha.

A layer's association weights are ``Sep(beta * scores)`` over the stored patterns (the last dim).
:class:`SeparationModule` wraps

* a fixed map built by :func:`uhop.separation`: ``"softmax"`` (alpha = 1), ``"entmax15"`` (1.5),
  ``"sparsemax"`` (2) or a float alpha in [1, 2] (exact sort-based solvers at 1.5 and 2, 100-step
  bisection otherwise, ``torch.softmax`` at alpha = 1);
* ``"learnable"``: one alpha per head, parameterised as ``alpha = 1 + sigmoid(a)`` so that it stays in
  the open interval (1, 2) whatever the optimiser does (the parameterisation of Correia et al., 2019,
  used by STanHop and the sparse Hopfield layers).  The weights come from
  :func:`uhop.entmax_solver.entmax_newton` (``solver="newton"``, the default): a monotone Newton
  iteration on the threshold that stops at the dtype's precision after 1-4 steps where bisection needs
  30 (float32) to 100 (float64) halvings, with a closed-form backward in the scores and in alpha.  It is
  fed ``alpha - 1 = sigmoid(a)`` directly, so alpha close to 1 never rounds to 1.  The learnable map
  dominated STanHop's training step with bisection (about 45% of it, ``benchmarks/profile_forecasting.py``).
  ``solver="bisect"`` keeps ``entmax_bisect`` (``bisect_iters`` steps; ``None``: 30 in float32, 16 in
  half precision, 100 in float64) as the reference it is tested against.
"""

from __future__ import annotations

import math
import numbers

import torch
from entmax import entmax_bisect
from torch import nn

from ..entmax_solver import EntmaxNewtonFunction, MAX_NEWTON_STEPS

from .._checks import check_real, check_choice, check_int
from ..separation import SEPARATION_NAMES, Separation
from ..separation import entmax_unchecked as entmax  # unchecked: a layer's scores come from its own finite products
from ..separation import separation as _make_fixed

__all__ = ["SeparationModule", "LEARNABLE", "make_separation"]

#: The string that asks for a learnable alpha.
LEARNABLE = "learnable"

# Bisection steps for the learnable alpha by dtype: enough halvings of a bracket of width < 1 to reach
# the dtype's resolution (float64: as in uhop.separation, far below it).
_BISECT_ITERS = {torch.float64: 100, torch.float32: 30, torch.float16: 16, torch.bfloat16: 16}
# 1 + sigmoid(a) never reaches 2; an initial alpha of exactly 2 is represented by 2 - 1e-6.
_ALPHA_TOP = 2.0 - 1e-6
#: Solvers of the learnable map: Newton on the threshold (default) or entmax's bisection (reference).
SOLVERS = ("newton", "bisect")


def _valid_names() -> str:
    return ", ".join(map(repr, [*SEPARATION_NAMES, LEARNABLE]))


class SeparationModule(nn.Module):
    r"""``Sep_alpha`` over the last dimension, with a fixed or learnable alpha.

    Args:
        separation: ``"softmax"``, ``"sparsemax"``, ``"entmax15"``, a float alpha in [1, 2], a
            :class:`uhop.Separation`, or ``"learnable"``.
        num_heads: number of heads (one learnable alpha per head).
        alpha_init: initial alpha for ``"learnable"``, in (1, 2]; 2 is represented as 2 - 1e-6
            because ``1 + sigmoid(a)`` only reaches 2 in the limit.
        solver: ``"newton"`` (default, :func:`uhop.entmax_solver.entmax_newton`) or ``"bisect"``
            (``entmax_bisect``) for the learnable map.  The attribute can be changed later.
        bisect_iters: bisection steps of ``solver="bisect"``; ``None`` picks them from the scores'
            dtype (float32: 30, float64: 100, half: 16).  The attribute can be changed later.

    ``forward(z)`` takes scores ``(..., H, Q, M)`` (heads at dim -3 when alpha is learnable; any
    shape for a fixed map) and returns weights of the same shape, each ``(..., M)`` slice on the
    probability simplex.
    """

    def __init__(self, separation: str | float | Separation = "softmax", num_heads: int = 1,
                 alpha_init: float = 1.5, bisect_iters: int | None = None, solver: str = "newton"):
        super().__init__()
        self.num_heads = check_int(num_heads, "num_heads", minimum=1)
        self.solver = check_choice(solver, "solver", SOLVERS)
        self.bisect_iters = None if bisect_iters is None else check_int(bisect_iters, "bisect_iters", minimum=1)
        self.learnable = isinstance(separation, str) and separation == LEARNABLE
        if self.learnable:
            alpha0 = check_real(alpha_init, "alpha_init")
            if not 1.0 < alpha0 <= 2.0:
                raise ValueError(
                    f"alpha_init must lie in (1, 2] for separation='learnable' (alpha = 1 + sigmoid(a) "
                    f"cannot be 1; use separation='softmax' for alpha = 1), got {alpha0}"
                )
            s = min(alpha0, _ALPHA_TOP) - 1.0
            logit = math.log(s / (1.0 - s))
            self.alpha_logit = nn.Parameter(torch.full((self.num_heads,), logit))
            self.fixed = None
        else:
            if isinstance(separation, str) and separation not in SEPARATION_NAMES:
                raise ValueError(f"unknown separation {separation!r}; valid separation values: {_valid_names()} "
                                 "or a float alpha in [1, 2]")
            if not isinstance(separation, (str, Separation, numbers.Real)) or isinstance(separation, bool):
                raise TypeError(f"separation must be one of {_valid_names()}, a float alpha in [1, 2] or a "
                                f"uhop.Separation, got {type(separation).__name__}")
            self.fixed = _make_fixed(separation, "separation")

    @property
    def alpha(self) -> torch.Tensor:
        """Current alpha: a (H,) tensor for a learnable map, a 0-d tensor for a fixed one."""
        if self.learnable:
            return 1.0 + torch.sigmoid(self.alpha_logit)
        return torch.tensor(self.fixed.alpha)

    @property
    def name(self) -> str:
        return LEARNABLE if self.learnable else self.fixed.name

    @property
    def sparse(self) -> bool:
        """True when the map can return exact zeros (alpha > 1)."""
        return self.learnable or self.fixed.alpha > 1.0

    def extra_repr(self) -> str:
        if self.learnable:
            return f"learnable, num_heads={self.num_heads}, alpha={[round(a, 4) for a in self.alpha.tolist()]}"
        return f"{self.fixed.name} (alpha={self.fixed.alpha:g})"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.learnable:
            return entmax(z, self.fixed.alpha, dim=-1)
        if z.ndim < 3 or z.shape[-3] != self.num_heads:
            raise ValueError(f"scores must have shape (..., H={self.num_heads}, Q, M) for a learnable alpha, "
                             f"got {tuple(z.shape)}")
        if self.solver == "newton":
            work = torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype
            eps = torch.sigmoid(self.alpha_logit.to(work)).view(self.num_heads, 1, 1)
            return EntmaxNewtonFunction.apply(z.to(work), eps, MAX_NEWTON_STEPS,
                                              torch.is_grad_enabled()).to(z.dtype)
        alpha = (1.0 + torch.sigmoid(self.alpha_logit)).to(z.dtype)
        # Expand here (not inside entmax_bisect) so that autograd sums the alpha gradient back to (H,).
        alpha = alpha.view(self.num_heads, 1, 1).expand(*z.shape[:-1], 1)
        n_iter = self.bisect_iters if self.bisect_iters is not None else _BISECT_ITERS.get(z.dtype, 100)
        return entmax_bisect(z, alpha, dim=-1, n_iter=n_iter)


def make_separation(sep, num_heads: int = 1, alpha_init: float = 1.5) -> SeparationModule:
    """A :class:`SeparationModule` from anything the layers accept (an existing module is returned as is)."""
    if isinstance(sep, SeparationModule):
        return sep
    return SeparationModule(sep, num_heads=num_heads, alpha_init=alpha_init)
