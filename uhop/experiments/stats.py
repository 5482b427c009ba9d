"""Small statistics for the book's comparisons, without scipy: rank and linear correlation, and paired
differences over seeds (mean with a Student-t interval, an exact sign test).  Re-exported by
:mod:`uhop.experiments.report`, where the chapters find them."""

from __future__ import annotations

import math

__all__ = ["pearson", "spearman", "t_critical_95", "paired_interval", "sign_test"]


def _ranks(values):
    """Average ranks (ties get the mean of their positions), 1-based, as a torch float64 tensor."""
    import torch

    x = torch.as_tensor(list(values), dtype=torch.float64)
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    i, n = 0, len(x)
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x, y) -> float:
    """Pearson correlation coefficient (torch, no scipy)."""
    import torch

    a = torch.as_tensor(list(x), dtype=torch.float64)
    b = torch.as_tensor(list(y), dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks (no scipy)."""
    return pearson(_ranks(x), _ranks(y))


# -- paired comparisons over seeds ---------------------------------------------------------------------------------

#: Two-sided 95% critical values of Student's t for 1..30 degrees of freedom (3 decimals; standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value of Student's t with ``df`` degrees of freedom (a table up to 30, then the
    Cornish-Fisher expansion around the normal 1.95996, accurate to 1e-3 there)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def paired_interval(differences) -> dict:
    """Mean of paired differences (one per seed) with a two-sided 95% t interval and a sign count.

    Returns ``{"n", "mean", "sd", "low", "high", "positive", "negative", "zero"}``; with one difference the
    interval is undefined (NaN).  An interval that excludes 0 says the sign of the mean difference is
    resolved at this number of seeds; it is not a correction for many comparisons.
    """
    d = [float(v) for v in differences]
    n = len(d)
    if n == 0:
        raise ValueError("paired_interval needs at least one difference")
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1)) if n > 1 else float("nan")
    half = t_critical_95(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half,
            "positive": sum(v > 0 for v in d), "negative": sum(v < 0 for v in d), "zero": sum(v == 0 for v in d)}


def sign_test(negative: int, positive: int) -> float:
    """Two-sided exact sign test: the probability, if each non-zero paired difference were negative or positive
    with probability 1/2 independently, of a split at least as uneven as ``negative`` against ``positive``
    (ties are left out before calling).  1.0 for no differences."""
    n = negative + positive
    if n == 0:
        return 1.0
    k = min(negative, positive)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)
