r"""Separation functions Sep_alpha and their convex conjugates Psi*_alpha.

The retrieval dynamics (Eq (2.4)) map similarity scores to weights on the
probability simplex with a *separation function*

* alpha = 1: Softmax (dense),
* alpha = 2: Sparsemax, Eq (D.3) (Martins & Astudillo, 2016),
* alpha in (1, 2): alpha-EntMax, Definition D.1 / Eq (D.1).

All three are ``argmax_{p in simplex} <p, z> + H_alpha(p)`` with the Tsallis
entropy ``H_alpha`` of Eq (D.2) (Shannon entropy at alpha = 1).  The value of
that maximisation is the convex conjugate ``Psi*_alpha`` used by the energy
(Eq (2.2), (2.3)); see :func:`Psi_star`.

The sort-based solvers (alpha = 1.5, 2) come from the ``entmax`` package (1.3);
other alpha are solved by Newton's method on the threshold (:mod:`uhop.entmax_solver`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Union

import torch
from entmax import entmax15 as _entmax15
from entmax import sparsemax as _sparsemax

from ._checks import check_alpha, check_choice, check_positive, check_tensor
from .entmax_solver import entmax_newton

__all__ = [
    "softmax",
    "sparsemax",
    "entmax",
    "support_size",
    "tsallis_entropy",
    "Psi_star",
    "Separation",
    "separation",
    "SEPARATION_NAMES",
]

#: Named separation functions and their alpha.
SEPARATION_NAMES = {"softmax": 1.0, "entmax15": 1.5, "sparsemax": 2.0}


def check_scores(z, name: str = "z", dim: int = -1) -> torch.Tensor:
    """Scores a separation map can take: a floating-point tensor whose every slice along ``dim`` has a finite
    maximum.  ``-inf`` entries (masked out) are allowed; NaN, ``+inf`` or a slice with no finite entry raise
    ``ValueError`` (they would come back as NaN weights, or as an index error from the sort-based solvers)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if not torch.is_floating_point(z):
        raise TypeError(f"{name} must have a floating-point dtype (e.g. torch.float32), got {z.dtype}")
    if z.numel() and not bool(torch.isfinite(z.amax(dim=dim)).all()):
        raise ValueError(f"{name} has a slice along dim={dim} with NaN or +inf scores, or no finite score at all "
                         "(-inf entries, masked out, are allowed): scale the inputs or check the mask")
    return z


def softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax, the alpha = 1 separation (Eq (1.2)); ``z`` is checked (:func:`check_scores`)."""
    return torch.softmax(check_scores(z, dim=dim), dim=dim)


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax, the alpha = 2 separation (Eq (D.3)); has exact zeros; ``z`` is checked."""
    return _sparsemax(check_scores(z, dim=dim), dim=dim)


def entmax(z: torch.Tensor, alpha: float, dim: int = -1) -> torch.Tensor:
    """:func:`entmax_unchecked` after :func:`check_scores` (the public entry point)."""
    return entmax_unchecked(check_scores(z, dim=dim), alpha, dim)


def entmax_unchecked(z: torch.Tensor, alpha: float, dim: int = -1) -> torch.Tensor:
    r"""alpha-EntMax (Definition D.1) for alpha in [1, 2].

    Dispatch: alpha = 1 -> ``torch.softmax`` (``entmax_bisect`` returns a
    *uniform* vector at alpha = 1, entmax issues #23/#24); alpha = 2 ->
    exact sparsemax; alpha = 1.5 -> exact sort-based ``entmax15``; otherwise
    :func:`uhop.entmax_solver.entmax_newton` (Newton on the threshold after
    subtracting the row maximum: stable at any score offset, softmax in the
    limit alpha -> 1, to the precision of ``z``'s dtype).
    """
    alpha = check_alpha(alpha)
    if alpha == 1.0:
        return torch.softmax(z, dim=dim)
    if alpha == 2.0:
        return _sparsemax(z, dim=dim)
    if alpha == 1.5:
        return _entmax15(z, dim=dim)
    return entmax_newton(z, alpha_minus_one=alpha - 1.0, dim=dim)


def support_size(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Number of strictly positive entries of ``p`` along ``dim`` (|S(z)| in App D.1)."""
    return (p > 0).sum(dim=dim)


def tsallis_entropy(p: torch.Tensor, alpha: float, dim: int = -1) -> torch.Tensor:
    r"""Tsallis entropy H_alpha(p) of Eq (D.2).

    ``sum(p - p**alpha) / (alpha (alpha - 1))`` for alpha > 1 and the Shannon
    entropy ``-sum p log p`` (with 0 log 0 = 0) for alpha = 1.
    """
    alpha = check_alpha(alpha)
    if alpha == 1.0:
        # xlogy gives 0 * log 0 = 0 without NaNs for sparse p.
        return -torch.special.xlogy(p, p).sum(dim=dim)
    return (p - p.pow(alpha)).sum(dim=dim) / (alpha * (alpha - 1.0))


def Psi_star(z: torch.Tensor, beta: float = 1.0, alpha: float = 1.0, dim: int = -1) -> torch.Tensor:
    r"""Convex conjugate of the Tsallis regulariser, Eq (2.3), scaled so that
    ``grad_z Psi_star(z, beta, alpha) = Sep_alpha(beta z)`` for every alpha.

    Definition used here (the consistent family)::

        Psi_star(z, beta, alpha) = (1/beta) * Psi*_alpha(beta z),
        Psi*_alpha(theta)        = max_{p in simplex} <p, theta> + H_alpha(p),

    with H_alpha the Tsallis entropy of Eq (D.2).  By Danskin's theorem the
    gradient of Psi*_alpha at theta is the maximiser p* = alpha-EntMax(theta)
    (Definition D.1), so the chain rule gives ``grad_z = Sep_alpha(beta z)``.

    * alpha = 1: ``lse(beta, z) = log sum exp(beta z) / beta`` exactly as in
      Eq (1.1)/(2.3), evaluated with ``torch.logsumexp``.
    * alpha = 2: ``(1/beta) [ 1/2 ||beta z||^2 - 1/2 ||z* - beta z||^2 + 1/2 ]``
      with ``z* = sparsemax(beta z)``.
    * other alpha: ``(1/beta) [<p*, beta z> + H_alpha(p*)]`` at
      ``p* = entmax_alpha(beta z)``; ``p*`` is detached so that autograd
      returns exactly ``p*`` (Danskin) instead of differentiating the solver.

    Note on the paper: the second line of Eq (2.3) omits the ``1/beta``
    factor, so its gradient would be ``beta * sparsemax(beta z)``, while the
    first line (lse) already carries ``1/beta``.  The two conventions agree at
    beta = 1.  The 1/beta-scaled version is used because only then is the
    CCCP step of Theorem 2.1 (App E.2) the update ``Xi Sep(beta K(Xi, x))``
    of Eq (2.4), so that the energy descent holds for every beta > 0.

    Args:
        z: scores, reduced along ``dim``.
        beta: inverse temperature, > 0.
        alpha: entmax parameter in [1, 2].
    Returns:
        ``z`` with ``dim`` reduced.
    """
    check_tensor(z, "z")
    beta = check_positive(beta, "beta")
    alpha = check_alpha(alpha)
    theta = beta * z
    if alpha == 1.0:
        return torch.logsumexp(theta, dim=dim) / beta
    if alpha == 2.0:
        p = _sparsemax(theta, dim=dim)
        value = 0.5 * theta.pow(2).sum(dim=dim) - 0.5 * (p - theta).pow(2).sum(dim=dim) + 0.5
        return value / beta
    return Psi_star_at(theta, entmax(theta, alpha, dim=dim), beta, alpha, dim)


def Psi_star_at(theta: torch.Tensor, p: torch.Tensor, beta: float, alpha: float,
                 dim: int = -1) -> torch.Tensor:
    """(1/beta)[<p, theta> + H_alpha(p)] at the maximiser ``p = entmax_alpha(theta)``.

    Lets the retrieval loop reuse the weights it already computed; ``p`` is
    detached so that the gradient in ``theta`` is ``p`` (Danskin).
    """
    p = p.detach()
    value = (p * theta).sum(dim=dim) + tsallis_entropy(p, alpha, dim=dim)
    return value / beta


@dataclass(frozen=True)
class Separation:
    """A separation function Sep_alpha (Theorem 2.1): a name and its alpha.

    Call it as ``sep(z, dim=-1)``; ``sep.support_size(p)`` counts the
    non-zero weights; ``sep.Psi_star(z, beta)`` is its conjugate (Eq (2.3)).
    """

    name: str
    alpha: float

    def __call__(self, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return entmax(z, self.alpha, dim=dim)

    def support_size(self, p: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return support_size(p, dim=dim)

    def Psi_star(self, z: torch.Tensor, beta: float = 1.0, dim: int = -1) -> torch.Tensor:
        return Psi_star(z, beta, self.alpha, dim=dim)

    @property
    def sparse(self) -> bool:
        """True when the map can return exact zeros (alpha > 1)."""
        return self.alpha > 1.0


SeparationLike = Union[str, float, int, Separation]


def separation(name_or_alpha: SeparationLike, name: str = "separation") -> Separation:
    """Build a :class:`Separation` from "softmax", "sparsemax", "entmax15",
    a float alpha in [1, 2], or an existing :class:`Separation`.

    alpha = 1, 1.5 and 2 are given their canonical names.
    """
    if isinstance(name_or_alpha, Separation):
        return name_or_alpha
    if isinstance(name_or_alpha, str):
        key = check_choice(name_or_alpha, name, SEPARATION_NAMES)
        return Separation(key, SEPARATION_NAMES[key])
    if isinstance(name_or_alpha, numbers.Real) and not isinstance(name_or_alpha, bool):
        alpha = check_alpha(name_or_alpha, name)
        for key, value in SEPARATION_NAMES.items():
            if alpha == value:
                return Separation(key, value)
        return Separation(f"entmax{alpha:g}", alpha)
    raise TypeError(
        f"{name} must be one of {', '.join(map(repr, SEPARATION_NAMES))}, a float alpha in [1, 2] "
        f"or a Separation, got {type(name_or_alpha).__name__}"
    )


def resolve_separation(sep, name: str = "separation") -> Callable:
    """Like :func:`separation` but also lets a plain callable ``f(z, dim)`` through
    (used by baselines such as the DAM polynomial separation)."""
    if callable(sep) and not isinstance(sep, (str, Separation)):
        return sep
    return separation(sep, name)
