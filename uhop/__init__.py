"""U-Hop: uniform memory retrieval with kernelized modern Hopfield models.

Reference companion to Wu, Hu, Hsiao & Liu, "Uniform Memory Retrieval with
Larger Capacity for Modern Hopfield Models" (ICML 2024).

Shape convention: the paper stores memories as the columns of
Xi in R^{d x M}; this package takes ``memories`` as a tensor of shape (M, d),
one memory per **row**, and queries of shape (d,) or (Q, d), batched over Q.
Outputs have the shape of the queries.

Main entry points: :class:`UHop` (Algorithm 1), :func:`fit_kernel` (Stage I),
:func:`retrieve` (Stage II, Eq (2.4)), :func:`energy` (Eq (1.1) / (2.2)),
:func:`separation_loss` (Definition 2.2) and the baselines of Section 4.1.
The data loaders live in the separate subpackage ``uhop.data``.
"""

__version__ = "0.1.0"

from .baselines import BASELINES, PolynomialSeparation, baseline, dam, l2, manhattan, mhm, sparse_mhm
from .corruptions import gaussian_noise, half_mask, random_mask
from .energy import energy
from .kernel import LinearKernel
from .loss import min_pairwise_distance, pairwise_sq_distances, separation_loss
from .metrics import mse, sse, success_rate
from .model import UHop
from .retrieval import association, retrieval_step, retrieve, similarity_scores
from .separation import (
    Psi_star,
    Separation,
    entmax,
    separation,
    softmax,
    sparsemax,
    support_size,
    tsallis_entropy,
)
from .stage1 import PRESETS, FitHistory, Stage1Settings, fit_kernel

__all__ = [
    "__version__",
    "UHop",
    "fit_kernel",
    "FitHistory",
    "Stage1Settings",
    "PRESETS",
    "LinearKernel",
    "retrieve",
    "retrieval_step",
    "association",
    "similarity_scores",
    "energy",
    "separation_loss",
    "pairwise_sq_distances",
    "min_pairwise_distance",
    "softmax",
    "sparsemax",
    "entmax",
    "support_size",
    "tsallis_entropy",
    "Psi_star",
    "Separation",
    "separation",
    "mhm",
    "sparse_mhm",
    "dam",
    "l2",
    "manhattan",
    "PolynomialSeparation",
    "BASELINES",
    "baseline",
    "half_mask",
    "random_mask",
    "gaussian_noise",
    "sse",
    "mse",
    "success_rate",
]
