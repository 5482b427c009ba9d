r"""Stage I in Gram form: plain gradient descent on W without ever forming a d x d product.

Why this works (derived in the book's Performance chapter).  Write the training memories as the
columns of Xi (d x M) and the features as F = W Xi (D_Phi x M).  The separation loss
(Definition 2.2) depends on W only through the Gram matrix of the features,
K = F^T F = Xi^T W^T W Xi (M x M): L = g(K).  Its gradient is therefore

    grad_W L = W Xi C Xi^T,    C = Gamma + Gamma^T,   Gamma = dg/dK   (M x M),

so one plain SGD step is W <- W (I - eta Xi C Xi^T).  Starting from W_0, every iterate keeps the
form W_k = W_0 (I + Xi A_k Xi^T) with an M x M matrix A_k, and

    A_{k+1} = A_k - eta_k (I + A_k S) C_k,        S = Xi^T Xi,
    K_k     = P_k H P_k^T,   P_k = I + S A_k^T,   H = (W_0 Xi)^T (W_0 Xi).

C_k is written in closed form (:func:`gram_coefficient`), so a step is four M x M products and
a few M x M elementwise operations, O(M^3) whatever d and D_Phi are.  W is materialised once at
the end, W = W_0 + (W_0 Xi) A Xi^T, and ||W_k||_F^2 = ||W_0||_F^2 + 2 tr(H A) + tr(A^T H A S)
is tracked without it.  Momentum-free SGD with any learning-rate schedule fits this form; Adam
does not (its update is elementwise in W), so it keeps the autograd engine of :mod:`uhop.stage1`.
"""

from __future__ import annotations

from typing import Callable, Collection, Sequence

import torch

from .loss import loss_grad_from_sq_distances, sq_distances_from_gram

__all__ = ["gram_coefficient", "fit_gram"]


def gram_coefficient(K: torch.Tensor, t: float, reduction: str, pairs: str, normalize: bool):
    r"""Loss g(K), the M x M coefficient C = Gamma + Gamma^T of its W-gradient, and min D, in closed form.

    With D = D(K) the squared feature distances (:func:`uhop.loss.sq_distances_from_gram`) and
    G = dL/dD (:func:`uhop.loss.loss_grad_from_sq_distances`), let G_s = G + G^T with its
    diagonal dropped (D's diagonal is held at 0).  The chain rule through D(K) gives

    * raw features, D_uv = K_uu + K_vv - 2 K_uv:
      ``C = -2 G_s + 2 diag(G_s 1)``;
    * normalised features (App D.2), D_uv = 2 - 2 c_uv with c_uv = K_uv r_u r_v, r = diag(K)^(-1/2):
      ``C = -2 G_s o (r r^T) + 2 diag(r^2 o (G_s o c) 1)``, with c = 1 - D / 2,

    since dD_uv/dK_uv = -2 r_u r_v and dD_uv/dK_uu = c_uv r_u^2.  Where D was clamped at 0
    (coincident features) the closed form keeps the gradient that the clamp's subgradient drops;
    the pair's contribution to grad_W L, 2 (f_u - f_v)(xi_u - xi_v)^T, is zero there anyway.

    Returns ``(loss, C, min_sq)``, tensors (``min_sq`` is the smallest squared distance).
    """
    D = sq_distances_from_gram(K, normalize)
    loss, G, min_sq = loss_grad_from_sq_distances(D, t, reduction, pairs)
    Gs = G + G.T
    Gs.diagonal().zero_()
    if normalize:
        r = torch.diagonal(K).clamp_min(torch.finfo(K.dtype).tiny).rsqrt()
        diag = (Gs.sum(1) - 0.5 * (Gs * D).sum(1)) * r.square()     # r_u^2 sum_v G_s,uv c_uv
        C = Gs.mul_(r[:, None] * r[None, :])
    else:
        diag = Gs.sum(1)
        C = Gs
    C.diagonal().sub_(diag)
    return loss, C.mul_(-2.0), min_sq


def fit_gram(weight: torch.Tensor, train: torch.Tensor, rates: Sequence[float], *, t: float, reduction: str,
             pairs: str, normalize_features: bool, record_steps: Collection[int], checkpoints: Collection[int] = (),
             identity: bool = False, final_features: bool = False,
             report: Callable | None = None):
    """Plain-SGD Stage I on M x M quantities: ``len(rates)`` steps, ``weight`` updated in place at the end.

    Args:
        weight: (D_Phi, d) initial W_0; overwritten with W_N (no autograd).
        train: (M, d) training memories (rows).
        rates: the learning rate of every step (the schedule, computed by the caller).
        t, reduction, pairs, normalize_features: the loss (already validated).
        record_steps: steps (0..N) whose diagnostics are returned; step 0 is the initial W.
        checkpoints: steps at which to return a copy of W.
        identity: W_0 is known to be the identity (skips the M x d x D_Phi product W_0 Xi).
        final_features: also return the features W_N xi_mu (M, D_Phi), from M x M work.
        report: called as ``report(step, loss, min_distance, w_norm)`` (0-dim tensors) at the
            recorded steps (progress printing).

    Returns ``(diagnostics, snapshots, features)``: an (R, 3) tensor of the loss, min distance
    and ||W||_F at the R recorded steps (in order), ``{step: W}`` for the checkpoints, and the
    final features (or None).  The recursion runs in the memories' dtype, like the autograd
    engine: in float64 the two agree to ~1e-12; in float32 the Gram engine stays as close to a
    float64 run as float32 autograd does (tested).
    """
    X = train.detach()                                    # (M, d): the columns of Xi as rows
    W0 = weight.detach()
    F0 = X if identity else X @ W0.T                      # (M, D): rows are W_0 xi_mu
    S = X @ X.T                                           # Xi^T Xi
    H = S if identity else F0 @ F0.T                      # (W_0 Xi)^T (W_0 Xi)
    w0_sq = (torch.tensor(float(W0.shape[1]), dtype=X.dtype, device=X.device) if identity
             else torch.linalg.vector_norm(W0, dtype=torch.float64).square().to(X.dtype))
    M = X.shape[0]
    A = torch.zeros(M, M, dtype=X.dtype, device=X.device)
    records, snapshots = [], {}
    epochs = len(rates)
    for i in range(epochs + 1):
        if i in checkpoints:
            snapshots[i] = torch.addmm(W0, F0.T, A @ X)    # W_0 + (W_0 Xi) A Xi^T
        # Four M x M products per step: AS, H(AS), K and the update.
        AS = A @ S
        HAS = H @ AS
        K = H + HAS
        K += HAS.T
        K.addmm_(AS.T, HAS)                               # (I + S A^T) H (I + A S)
        loss, C, min_sq = gram_coefficient(K, t, reduction, pairs, normalize_features)
        if i in record_steps:
            # ||W||_F^2 = ||W_0||^2 + 2 tr(H A) + tr(A^T H A S); H is symmetric, so both traces
            # are dot products of the flattened matrices.
            w_sq = w0_sq + 2.0 * torch.dot(H.view(-1), A.view(-1)) + torch.dot(HAS.view(-1), A.view(-1))
            records.append(torch.stack((loss, min_sq, w_sq)))
            if report is not None:
                report(i, loss, min_sq.sqrt(), w_sq.clamp_min(0.0).sqrt())
        if i == epochs:
            break
        update = torch.addmm(C, AS, C)                    # (I + A S) C
        A -= update.mul_(rates[i])

    diagnostics = torch.stack(records)
    diagnostics[:, 1:] = diagnostics[:, 1:].clamp_min(0.0).sqrt()
    features = torch.addmm(F0, S @ A.T, F0) if final_features else None   # X W_N^T = F_0 + S A^T F_0
    W0.addmm_(F0.T, A @ X)
    return diagnostics, snapshots, features
