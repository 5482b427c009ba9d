r"""U-Hop end to end (Algorithm 1): Stage I kernel fit, then Stage II retrieval."""

from __future__ import annotations

import torch

from ._checks import check_int, check_memories, check_positive
from .energy import energy as _energy
from .retrieval import association as _association
from .retrieval import retrieve as _retrieve
from .separation import separation as _separation
from .stage1 import fit_kernel

__all__ = ["UHop"]


class UHop:
    r"""Uniform memory retrieval (Algorithm 1).

    ``fit(memories)`` runs Stage I (:func:`~uhop.stage1.fit_kernel`: N steps
    on the separation loss, then row normalisation of W) and precomputes
    ``B = (W Xi)^T W``; ``retrieve(queries)`` runs Stage II, T steps of
    ``x <- Xi Sep_alpha(beta K(Xi, x))`` (Eq (2.4)).

    Args:
        separation: "softmax", "sparsemax", "entmax15" or alpha in [1, 2].
        beta: inverse temperature (inside Sep).
        steps: default number T of retrieval steps.
        seed, **fit_kwargs: passed to :func:`~uhop.stage1.fit_kernel`: ``epochs`` (N, default
            100), any :class:`~uhop.stage1.Stage1Settings` field (``t``, ``lr``, ``loss``,
            ``d_phi``, ``normalize_rows``, ``init``, ...), ``settings=`` or ``preset=``.

    With ``init="identity"`` and ``epochs=0``, W = I (row normalisation of I
    is a no-op) and U-Hop is exactly the modern Hopfield model of Eq (1.2).
    """

    def __init__(self, separation="softmax", beta: float = 1.0, *, steps: int = 1, seed=None, **fit_kwargs):
        self.separation = _separation(separation)
        self.beta = check_positive(beta, "beta")
        self.steps = check_int(steps, "steps", minimum=1)
        self.seed = seed
        self._fit_args = fit_kwargs
        self.memories_ = None
        self.kernel_ = None
        self.history_ = None
        self.keys_ = None

    @property
    def fitted(self) -> bool:
        return self.kernel_ is not None

    def fit(self, memories: torch.Tensor) -> "UHop":
        """Stage I on ``memories`` (M, d); stores memories_, kernel_, history_, keys_."""
        check_memories(memories)
        kernel, history = fit_kernel(memories, seed=self.seed, **self._fit_args)
        kernel.requires_grad_(False)  # W is fixed once Stage I is over
        self.memories_ = memories
        self.kernel_ = kernel
        self.history_ = history
        with torch.no_grad():
            self.keys_ = kernel.precompute(memories)
        return self

    def _require_fit(self):
        if not self.fitted:
            raise RuntimeError("UHop is not fitted yet: call .fit(memories) first")

    def retrieve(self, queries: torch.Tensor, steps: int | None = None, tol: float | None = None,
                 return_energies: bool = False):
        """Stage II: T_K iterated from ``queries`` ((d,) or (Q, d)); see :func:`uhop.retrieve`."""
        self._require_fit()
        return _retrieve(queries, self.memories_, beta=self.beta, separation=self.separation,
                         kernel=self.kernel_, keys=self.keys_,
                         steps=self.steps if steps is None else steps, tol=tol,
                         return_energies=return_energies)

    def association(self, queries: torch.Tensor) -> torch.Tensor:
        """Separation weights Sep(beta K(Xi, x)): (Q, M) or (M,)."""
        self._require_fit()
        return _association(queries, self.memories_, beta=self.beta, separation=self.separation,
                            kernel=self.kernel_, keys=self.keys_)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E_K(x) of Eq (2.2) with the fitted kernel."""
        self._require_fit()
        return _energy(x, self.memories_, beta=self.beta, separation=self.separation,
                       kernel=self.kernel_)

    def __repr__(self) -> str:
        # Only the Stage I arguments the user set (defaults / preset values are implied).
        fit = "".join(f", {k}={v!r}" for k, v in self._fit_args.items())
        state = "fitted" if self.fitted else "not fitted"
        if self.fitted:
            M, d = self.memories_.shape
            state += f" on M={M}, d={d}"
        return (f"UHop(separation={self.separation.name!r}, beta={self.beta!r}, steps={self.steps}, "
                f"seed={self.seed!r}{fit}) [{state}]")
