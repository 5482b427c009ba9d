r"""Theorem 3.1 (kernelized representation theorem), constructively (proof in App E.4 of the paper).

Paper convention: ``X' = Phi_bar(X) in R^{D x M}`` holds the M mapped tokens as **columns**, and the
softmax of ``beta (W_K X')^T (W_Q X')`` is taken **column-wise** (Eq (E.5)-(E.6): the normaliser
``D_ii = sum_j exp(beta W_KQ[j, i])`` sums down column i), so the attention matrix is column-stochastic:
column i holds the weights that query i puts on the M keys.  (In the row convention of
``torch.softmax(Q @ K.T, dim=-1)`` this is the transpose.)

Construction: with a left inverse ``X'^+`` (``X'^+ X' = I_M``; it exists iff X' has full column rank,
which orthogonal nonzero columns -- the theorem's hypothesis -- guarantee, and which needs
``M <= D``), put ``W_K = W~_K X'^+`` and ``W_Q = W~_Q X'^+`` with ``W~_K, W~_Q in R^{h x M}`` such that
``W~_K^T W~_Q = beta^{-1} log(P D_0)`` for a positive diagonal ``D_0``; this needs ``h >= rank log(P D_0)``,
which is ``M`` for ``D_0 = I`` but can be brought down to ``M - 1`` by the choice of ``D_0``.  Then
``(W_K X')^T W_Q X' = W~_K^T W~_Q`` and the column softmax returns ``P`` (every column of
``log(P D_0)`` is ``log P`` plus a constant, which the column softmax removes).  We take
``W~_K = [I_M; 0]`` and ``W~_Q = [beta^{-1} log(P D_0); 0]`` with ``h >= M`` rows.
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_positive, check_tensor

__all__ = ["realize_attention", "attention_matrix"]


def attention_matrix(W_Q: torch.Tensor, W_K: torch.Tensor, X_features: torch.Tensor,
                     beta: float = 1.0) -> torch.Tensor:
    """``Softmax(beta (W_K X')^T (W_Q X'))`` with the softmax over each **column** (the paper's convention):
    ``(M, M)``, column-stochastic."""
    beta = check_positive(beta, "beta")
    scores = (W_K @ X_features).T @ (W_Q @ X_features)
    return torch.softmax(beta * scores, dim=0)


def realize_attention(P: torch.Tensor, X_features: torch.Tensor, beta: float = 1.0, *,
                      D0: torch.Tensor | None = None, head_dim: int | None = None,
                      method: str = "auto", rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Build ``W_Q, W_K`` with ``Softmax_col(beta (W_K X')^T W_Q X') = P`` (Theorem 3.1).

    Args:
        P: positive column-stochastic ``(M, M)`` matrix (every entry > 0, every column sums to 1).
        X_features: ``X' = Phi_bar(X)``, ``(D, M)``, tokens as columns; full column rank (``M <= D``).
        beta: inverse temperature > 0.
        D0: optional positive diagonal (as a vector ``(M,)``) of the proof's free matrix ``D_0``
            (default ones); it does not change the result.
        head_dim: rows h of ``W_Q, W_K`` (default D).  ``h >= M``: the proof's construction.  ``h = M - 1``
            also works (a sharpening of the paper): ``D_0`` is then chosen so that ``log(P D_0)`` has rank
            ``M - 1``.  ``h < M - 1`` is refused: ``W_K^T W_Q`` has rank <= h while a generic ``log P`` keeps
            rank >= M - 1 under every column shift (the low-rank bottleneck).
        method: ``"orthogonal"`` -- the proof's setting: the columns of X' must be pairwise orthogonal and
            ``X'^+ = diag(1/||x_i||^2) X'^T``; ``"pinv"`` -- any full-column-rank X', ``X'^+`` the
            Moore-Penrose pseudo-inverse; ``"auto"`` -- orthogonal when the columns are, else pinv.
        rtol: relative tolerance for the orthogonality / stochasticity / rank checks.

    Returns:
        ``(W_Q, W_K)``, each ``(h, D)``, in ``X_features``' dtype.
    """
    check_tensor(P, "P")
    check_tensor(X_features, "X_features")
    beta = check_positive(beta, "beta")
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"P must be a square (M, M) matrix, got shape {tuple(P.shape)}")
    if X_features.ndim != 2:
        raise ValueError(f"X_features must be a 2-D (D, M) matrix with tokens as columns, "
                         f"got shape {tuple(X_features.shape)}")
    D, M = X_features.shape
    if P.shape[0] != M:
        raise ValueError(f"P must be (M, M) with M = {M} (the number of columns of X_features), "
                         f"got shape {tuple(P.shape)}")
    if M > D:
        raise ValueError(f"X_features has M = {M} tokens in D = {D} dimensions; Theorem 3.1 needs M <= D "
                         f"(M orthogonal, or linearly independent, columns)")
    dtype = X_features.dtype
    P = P.to(dtype)
    if not bool((P > 0).all()):
        raise ValueError("P must be strictly positive (Theorem 3.1 takes log P)")
    col = P.sum(dim=0)
    if not torch.allclose(col, torch.ones_like(col), rtol=0, atol=max(rtol, 1e-12) * M):
        raise ValueError(f"P must be column-stochastic (every column sums to 1); column sums range "
                         f"{col.min().item():.6g} .. {col.max().item():.6g}")
    h = D if head_dim is None else check_int(head_dim, "head_dim", minimum=1)
    if h < M - 1:
        raise ValueError(f"head_dim must be >= M - 1 = {M - 1} (W_K^T W_Q has rank <= head_dim, and a generic "
                         f"log P keeps rank >= M - 1 under the column shifts the softmax ignores), got {h}")
    if h == M - 1 and D0 is not None:
        raise ValueError("D0 is chosen by the construction when head_dim = M - 1; leave D0=None")
    if method not in ("auto", "orthogonal", "pinv"):
        raise ValueError(f"unknown method {method!r}; valid method values: 'auto', 'orthogonal', 'pinv'")

    G = X_features.T @ X_features                        # Gram matrix of the tokens
    norms2 = torch.diagonal(G)
    if bool((norms2 <= 0).any()):
        raise ValueError("X_features has a zero column; its columns must be linearly independent")
    off = G - torch.diag(norms2)
    orthogonal = bool(off.abs().max() <= rtol * norms2.max())
    if method == "orthogonal" and not orthogonal:
        raise ValueError("X_features' columns are not pairwise orthogonal (the hypothesis K_bar(u, v) = 0 of "
                         "Theorem 3.1); use method='pinv' for general full-column-rank X_features")
    if method == "orthogonal" or (method == "auto" and orthogonal):
        left_inv = X_features.T / norms2[:, None]            # diag(1/||x_i||^2) X'^T
    else:
        s = torch.linalg.svdvals(X_features)
        if bool(s.min() <= rtol * s.max()):
            raise ValueError(f"X_features must have full column rank (linearly independent tokens); smallest "
                             f"singular value {s.min().item():.3g} vs largest {s.max().item():.3g}")
        left_inv = torch.linalg.pinv(X_features)            # (M, D), left_inv @ X' = I_M

    if h == M - 1:
        # One dimension short: pick D_0 = diag(exp(c)) so that log P + 1 c^T is singular.  By the matrix
        # determinant lemma det(A + 1 c^T) = det(A) (1 + c^T A^{-1} 1), which vanishes for
        # c = -u / ||u||^2 with u = A^{-1} 1 (A = log P invertible; if it is singular, c = 0 already works).
        A = torch.log(P)
        if torch.linalg.matrix_rank(A) == M:
            u = torch.linalg.solve(A, torch.ones(M, dtype=dtype, device=P.device))
            c = -u / (u @ u)
        else:
            c = torch.zeros(M, dtype=dtype, device=P.device)
        W_KQ = (A + c[None, :]) / beta                     # rank <= M - 1
        U, S, Vh = torch.linalg.svd(W_KQ)
        Wt_K = U[:, :h].T                                  # (h, M)
        Wt_Q = S[:h, None] * Vh[:h]                        # Wt_K^T Wt_Q = W_KQ
        return Wt_Q @ left_inv, Wt_K @ left_inv
    d0 = torch.ones(M, dtype=dtype, device=P.device) if D0 is None else D0.to(dtype)
    if d0.shape != (M,) or not bool((d0 > 0).all()):
        raise ValueError(f"D0 must be a positive vector of length M = {M} (the diagonal of D_0)")
    W_KQ = torch.log(P * d0[None, :]) / beta               # beta^{-1} log(P D_0), (M, M)
    Wt_K = torch.zeros(h, M, dtype=dtype, device=P.device)
    Wt_K[:M, :M] = torch.eye(M, dtype=dtype, device=P.device)
    Wt_Q = torch.zeros(h, M, dtype=dtype, device=P.device)
    Wt_Q[:M] = W_KQ                                        # Wt_K^T Wt_Q = W_KQ
    return Wt_Q @ left_inv, Wt_K @ left_inv
