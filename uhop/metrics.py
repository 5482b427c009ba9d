r"""Retrieval error metrics (Section 4.1, App F.2).

Patterns are compared per sample: a (N, D) batch (or (N, C, H, W) images,
flattened) gives N values; a single (D,) pattern gives a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_floating, check_nonnegative, check_tensor

__all__ = ["sse", "mse", "success_rate", "METRICS"]

METRICS = ("sse", "cosine")


def _pair(retrieved, targets):
    for name, x in (("retrieved", retrieved), ("targets", targets)):
        check_tensor(x, name)
        check_floating(x, name)
    if retrieved.shape != targets.shape:
        raise ValueError(f"retrieved has shape {tuple(retrieved.shape)} but targets has "
                         f"{tuple(targets.shape)}; they must match")
    if retrieved.ndim == 0:
        raise ValueError("retrieved must have at least 1 dimension")
    if retrieved.ndim == 1:
        return retrieved.unsqueeze(0), targets.unsqueeze(0), True
    return retrieved.flatten(1), targets.flatten(1), False


def sse(retrieved: torch.Tensor, targets: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Per-sample sum of squared differences, the paper's "SSE".

    With ``clamp=True`` (the official ``sqdiff``) both are clamped to [0, 1]
    first: ``sum_pixels (clamp(x, 0, 1) - clamp(x_hat, 0, 1))^2``.
    """
    r, t, single = _pair(retrieved, targets)
    if clamp:
        r, t = r.clamp(0.0, 1.0), t.clamp(0.0, 1.0)
    out = (r - t).pow(2).sum(-1)
    return out[0] if single else out


def mse(retrieved: torch.Tensor, targets: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Per-pixel mean squared error, SSE / D (comparable across image sizes)."""
    r, _, _ = _pair(retrieved, targets)
    return sse(retrieved, targets, clamp=clamp) / r.shape[-1]


def success_rate(retrieved: torch.Tensor, targets: torch.Tensor, threshold: float,
                 metric: str = "sse", clamp: bool = True) -> float:
    """Fraction of samples retrieved within ``threshold``.

    ``metric="sse"``: success if SSE <= threshold (Millidge et al. use 60 for
    784-pixel images); ``metric="cosine"``: success if 1 - cos(x, x_hat) <=
    threshold (SparseModernHopfield uses 0.2).
    """
    threshold = check_nonnegative(threshold, "threshold")
    metric = check_choice(metric, "metric", METRICS)
    if metric == "sse":
        err = sse(retrieved, targets, clamp=clamp)
    else:
        r, t, _ = _pair(retrieved, targets)
        err = 1.0 - F.cosine_similarity(r, t, dim=-1)
    return float((err <= threshold).to(torch.float64).mean())
