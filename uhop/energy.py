r"""Hopfield energies: E_MHM (Eq (1.1)) and the kernelized E_K (Eq (2.2)).

``E_K(x) = K(x, x)/2 - Psi_star(K(Xi, x), beta, alpha)`` with the conjugate
``Psi_star`` of Eq (2.3) (see :func:`uhop.separation.Psi_star`).  Without a
kernel (K = dot product) and alpha = 1 this is Eq (1.1):
``E_MHM(x) = -lse(beta, Xi^T x) + <x, x>/2``.  The constants that Ramsauer et
al. add (``log M / beta + m^2/2``) are omitted, as in Eq (1.1).
"""

from __future__ import annotations

import torch

from ._checks import check_memories, check_positive, check_queries
from .kernel import LinearKernel, check_kernel
from .separation import Psi_star, Separation, Psi_star_at, separation as _separation

__all__ = ["energy", "energy_from_scores"]


def energy_from_scores(scores: torch.Tensor, self_sim: torch.Tensor, beta: float,
                       sep: Separation, weights: torch.Tensor | None = None) -> torch.Tensor:
    """E = K(x, x)/2 - Psi_star(K(Xi, x)); scores (Q, M), self_sim (Q,).

    ``weights`` = Sep(beta * scores) when already known: for alpha in (1, 2)
    it spares a second (bisection) solve.
    """
    if weights is not None and sep.alpha not in (1.0, 2.0):
        return 0.5 * self_sim - Psi_star_at(beta * scores, weights, beta, sep.alpha)
    return 0.5 * self_sim - Psi_star(scores, beta, sep.alpha, dim=-1)


def energy(x: torch.Tensor, memories: torch.Tensor, *, beta: float = 1.0,
           separation="softmax", kernel: LinearKernel | None = None) -> torch.Tensor:
    r"""Energy of states ``x`` for stored ``memories`` (rows, shape (M, d)).

    * ``kernel=None``: ``E(x) = <x, x>/2 - Psi_star(Xi^T x, beta, alpha)``,
      which for softmax is E_MHM of Eq (1.1).
    * with a :class:`~uhop.kernel.LinearKernel`: E_K of Eq (2.2),
      ``E_K(x) = K(x, x)/2 - Psi_star(K(Xi, x), beta, alpha)``.

    The T_K iteration of Eq (2.4) never increases this energy (Theorem 2.1),
    for every beta > 0 because ``Psi_star`` carries the 1/beta factor.

    Args:
        x: (d,) or (Q, d) states.
        memories: (M, d).
        beta: inverse temperature > 0.
        separation: "softmax", "sparsemax", "entmax15", alpha in [1, 2] or a
            :class:`~uhop.separation.Separation`.
        kernel: optional linear kernel.
    Returns:
        scalar for a single state, else (Q,).  Differentiable in ``x``.
    """
    check_memories(memories)
    check_queries(x, memories, name="x")
    beta = check_positive(beta, "beta")
    sep = _separation(separation)
    kernel = check_kernel(kernel, memories)
    X = x.unsqueeze(0) if x.ndim == 1 else x
    if kernel is None:
        scores = X @ memories.T
        self_sim = (X * X).sum(-1)
    else:
        fx = kernel.phi(X)
        scores = fx @ kernel.phi(memories).T
        self_sim = (fx * fx).sum(-1)
    e = energy_from_scores(scores, self_sim, beta, sep)
    return e[0] if x.ndim == 1 else e
