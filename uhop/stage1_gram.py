r"""Stage I in Gram form: plain gradient descent on W without ever forming a d x d product.

Why this works (derived in the book's Performance chapter).  Write the training memories as the
columns of Xi (d x M) and the features as F = W Xi (D_Phi x M).  The separation loss depends on W
only through the Gram matrix of the features, K = F^T F = Xi^T W^T W Xi (M x M): L = g(K).  Its
gradient is therefore

    grad_W L = W Xi C Xi^T,    C = Gamma + Gamma^T,   Gamma = dg/dK   (M x M),

so one plain SGD step is W <- W (I - eta Xi C Xi^T).  Starting from W_0, every iterate keeps the
form W_k = W_0 (I + Xi A_k Xi^T) with an M x M matrix A_k, and

    A_{k+1} = A_k - eta_k (I + A_k S) C_k,        S = Xi^T Xi,
    K_k     = P_k H P_k^T,   P_k = I + S A_k^T,   H = (W_0 Xi)^T (W_0 Xi).

A step costs O(M^3) whatever d and D_Phi are; W is materialised once at the end,
W = W_0 + (W_0 Xi) A Xi^T, and ||W_k||_F^2 = ||W_0||_F^2 + 2 tr(H A) + tr(A^T H A S) is tracked
without it.  Momentum-free SGD with any learning-rate schedule fits this form; Adam does not
(its update is elementwise in W), so it keeps the autograd engine.
"""

from __future__ import annotations


import torch

from .loss import _loss_from_sq_distances, _upper

__all__ = ["sq_distances_from_gram", "fit_gram"]


def sq_distances_from_gram(K: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(M, M) squared feature distances from the feature Gram matrix K = F^T F.

    With ``normalize`` the features are L2-normalised first (App D.2):
    ||f_u/|f_u| - f_v/|f_v|||^2 = 2 - 2 K_uv / sqrt(K_uu K_vv).
    """
    diag = torch.diagonal(K)
    if normalize:
        inv = diag.clamp_min(torch.finfo(K.dtype).tiny).rsqrt()
        D = 2.0 - 2.0 * K * inv[:, None] * inv[None, :]
    else:
        D = diag[:, None] + diag[None, :] - 2.0 * K
    D = D.clamp_min(0.0)
    return D * (1.0 - torch.eye(D.shape[0], dtype=D.dtype, device=D.device))


def _loss_and_coefficient(K: torch.Tensor, s: dict):
    """Loss g(K), the M x M coefficient C = Gamma + Gamma^T of the W-gradient, and the min distance."""
    K = K.detach().requires_grad_(True)
    D = sq_distances_from_gram(K, s["normalize_features"])
    loss = _loss_from_sq_distances(D, s["t"], s["loss"], s["pairs"])
    (gamma,) = torch.autograd.grad(loss, K)
    min_dist = float(_upper(D.detach()).min().sqrt())
    return float(loss.detach()), gamma + gamma.T, min_dist


def fit_gram(kernel, train: torch.Tensor, s: dict, history, progress: bool) -> None:
    """Plain-SGD Stage I on the M x M quantities; updates ``kernel.weight`` in place at the end.

    Same contract as :func:`uhop.stage1._fit_autograd` (history lists get ``epochs + 1`` entries
    of loss, min distance and ||W||_F, and ``epochs`` learning rates).  The recursion runs in the
    memories' dtype, like the autograd engine: in float64 the two engines agree to ~1e-12; in
    float32 the Gram engine stays as close to a float64 run as float32 autograd does (tested).
    """
    from .stage1 import _lr_at  # the schedule is shared with the autograd engine

    if s["optimizer"] != "sgd":
        raise ValueError(f"engine='gram' needs optimizer='sgd' (plain gradient descent), got {s['optimizer']!r}")
    W0 = kernel.weight.detach()
    dtype = train.dtype
    X = train.detach()                                    # (M, d): the columns of Xi as rows
    identity = W0.shape[0] == W0.shape[1] and torch.equal(W0, torch.eye(W0.shape[0], dtype=W0.dtype, device=W0.device))
    F0 = X if identity else X @ W0.T                      # (M, D): rows are W_0 xi_mu
    S = X @ X.T                                           # Xi^T Xi
    H = F0 @ F0.T                                         # (W_0 Xi)^T (W_0 Xi)
    M = X.shape[0]
    eye = torch.eye(M, dtype=dtype, device=X.device)
    A = torch.zeros(M, M, dtype=dtype, device=X.device)
    w0_sq = float(W0.double().pow(2).sum())

    lr = s["lr"]
    epochs = s["epochs"]
    def materialise(A):
        return W0 + F0.T @ (A @ X)                        # W_0 + (W_0 Xi) A Xi^T

    for i in range(epochs + 1):
        if i in s.get("checkpoints", ()):
            history.checkpoints[i] = materialise(A)
        # Four M x M products per step: AS, H(AS), K and the update.
        AS = A @ S
        HAS = H @ AS
        K = H + HAS + HAS.T + AS.T @ HAS                   # (I + S A^T) H (I + A S)
        loss, C, min_dist = _loss_and_coefficient(K, s)
        # ||W||_F^2 = ||W_0||^2 + 2 tr(H A) + tr(A^T H A S), with traces as elementwise sums.
        w_sq = w0_sq + 2.0 * float((H * A.T).sum()) + float((HAS * A).sum())
        history.record(i, loss, min_dist, max(w_sq, 0.0) ** 0.5, progress, "gram")
        if i == epochs:
            break
        lr = _lr_at(s["lr_schedule"], s["lr"], lr, i)
        history.lr.append(lr)
        A = A - lr * (C + AS @ C)                           # A - lr (I + A S) C

    with torch.no_grad():
        kernel.weight.copy_(materialise(A))
