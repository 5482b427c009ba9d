r"""The learnable linear feature map Phi(u) = W u of Eq (2.1) and its kernel.

``K(u, v) = <Phi(u), Phi(v)> = u^T W^T W v``.  With rows as patterns
(``memories`` is (M, d), ``queries`` is (Q, d)) the feature map is
``Phi(X) = X W^T`` and the kernel scores are ``K(Xi, x) = Phi(queries) Phi(memories)^T``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import (
    check_choice,
    check_int,
    check_memories,
    check_queries,
    check_tensor,
)

__all__ = ["LinearKernel", "KERNEL_INITS", "make_generator", "check_kernel"]

KERNEL_INITS = ("identity", "normal", "official")


def make_generator(seed=None, generator=None) -> torch.Generator:
    """A CPU ``torch.Generator``: the given one, one seeded with ``seed``, or a
    freshly (non-deterministically) seeded one.  The global RNG is never used."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    gen = torch.Generator()
    if seed is None:
        gen.seed()  # seeds this generator only, not torch's default one
    else:
        gen.manual_seed(check_int(seed, "seed"))
    return gen


class LinearKernel(nn.Module):
    r"""Linear feature map Phi(u) = W u, W in R^{D_Phi x d} (Eq (2.1)).

    Args:
        d: pattern dimension.
        d_phi: feature dimension D_Phi (default ``d``).  Assumption 2.1 asks for
            W of full column rank, which needs ``d_phi >= d``.
        init: ``"identity"`` -- W = I (for D_Phi > d, W = [I; 0], the identity
            stacked over zero rows: full column rank and K(u, v) = <u, v>, so
            U-Hop starts exactly at MHM); ``"normal"`` -- i.i.d. N(0, 1/d)
            entries (rows of expected unit norm, so K is on the scale of the dot
            product); ``"official"`` -- square W with i.i.d. N(0, 1) entries as in
            the official code (``torch.randn(d, d)``), which makes K about d
            times the dot product (an implicit beta of order d).
        seed / generator: randomness for the random inits (global RNG untouched).
        dtype, device: of W (default float32, CPU).
    """

    def __init__(self, d: int, d_phi: int | None = None, init: str = "identity", *,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device=None):
        super().__init__()
        d = check_int(d, "d", minimum=1)
        d_phi = d if d_phi is None else check_int(d_phi, "d_phi", minimum=1)
        init = check_choice(init, "init", KERNEL_INITS)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if init == "identity":
            if d_phi < d:
                raise ValueError(
                    f"d_phi must be >= d = {d} for init='identity' ([I; 0] needs D_Phi >= d), got {d_phi}"
                )
            weight = torch.eye(d_phi, d, dtype=dtype)     # [I; 0], written once
        elif init == "normal":
            gen = make_generator(seed, generator)
            weight = torch.randn(d_phi, d, generator=gen, dtype=dtype) / math.sqrt(d)
        else:  # official
            if d_phi != d:
                raise ValueError(f"d_phi must be None or d = {d} for init='official' (square W), got {d_phi}")
            gen = make_generator(seed, generator)
            weight = torch.randn(d, d, generator=gen, dtype=dtype)
        self.d = d
        self.d_phi = d_phi
        self.init = init
        self.weight = nn.Parameter(weight.to(device))

    @classmethod
    def from_weight(cls, weight: torch.Tensor) -> "LinearKernel":
        """Wrap an existing (D_Phi, d) matrix (copied) in a plain :class:`LinearKernel`."""
        check_tensor(weight, "weight")
        if weight.ndim != 2:
            raise ValueError(f"weight must be a 2-D tensor (D_Phi, d), got shape {tuple(weight.shape)}")
        kernel = LinearKernel(weight.shape[1], weight.shape[0], init="identity", dtype=weight.dtype,
                              device=weight.device)
        with torch.no_grad():
            kernel.weight.copy_(weight)
        kernel.init = "custom"
        return kernel

    def extra_repr(self) -> str:
        return f"d={self.d}, d_phi={self.d_phi}, init={self.init!r}"

    # -- feature map and kernel -------------------------------------------------------

    def _check_input(self, x, name):
        check_tensor(x, name)
        if x.shape[-1:] != (self.d,):
            raise ValueError(f"{name} must have last dimension d = {self.d}, got shape {tuple(x.shape)}")
        if x.dtype != self.weight.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but the kernel weight has {self.weight.dtype}")

    def linear_weight(self) -> torch.Tensor:
        """The W of ``K(u, v) = u^T W^T W v`` (a subclass may apply a constraint, or refuse an affine map)."""
        return self.weight

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Phi(x) = W x for each row of ``x`` (..., d) -> (..., D_Phi), Eq (2.1)."""
        self._check_input(x, "x")
        return x @ self.weight.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x)

    def similarity(self, memories: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """K(Xi, x) = (W Xi)^T (W x): (Q, M) for queries (Q, d), (M,) for one query (d,)."""
        check_memories(memories)
        check_queries(queries, memories)
        self._check_input(memories, "memories")
        return self.phi(queries) @ self.phi(memories).T

    def gram(self) -> torch.Tensor:
        """A = W^T W (d, d), non-singular under Assumption 2.1 (Remark 2.1)."""
        W = self.linear_weight()
        return W.T @ W

    @torch.no_grad()
    def normalize_rows_(self) -> "LinearKernel":
        """Algorithm 1, line 4: rescale every row of W to unit l2 norm, in place.

        Rows of norm 0 (e.g. the zero rows of an identity init with D_Phi > d)
        are left unchanged, since they have no direction to keep.
        """
        norms = self.weight.norm(dim=1, keepdim=True)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        self.weight.div_(safe)
        return self

    def precompute(self, memories: torch.Tensor) -> torch.Tensor:
        r"""B = (W Xi)^T W as an (M, d) matrix (rows: ``Phi(xi_mu)^T W``).

        Then ``K(Xi, x) = B x``, i.e. the scores of all queries are
        ``queries @ B.T``: one (Q x d)(d x M) product, the cost of a plain MHM step.
        """
        check_memories(memories)
        self._check_input(memories, "memories")
        return self.phi(memories) @ self.linear_weight()


def check_kernel(kernel, memories: torch.Tensor, name: str = "kernel") -> LinearKernel | None:
    """``None``, or a :class:`LinearKernel` whose input dimension d and dtype match ``memories`` (M, d).

    Shared by every function that takes an optional kernel (retrieval, energies), so that a kernel fitted on
    other data is refused with the same message everywhere.
    """
    if kernel is None:
        return None
    if not isinstance(kernel, LinearKernel):
        raise TypeError(f"{name} must be a uhop.LinearKernel or None, got {type(kernel).__name__}")
    if kernel.d != memories.shape[-1]:
        raise ValueError(
            f"{name} has input dimension d = {kernel.d} but memories have d = {memories.shape[-1]}"
        )
    if kernel.weight.dtype != memories.dtype:
        raise TypeError(f"{name} weight has dtype {kernel.weight.dtype} but memories have {memories.dtype}")
    return kernel
