"""Registries of the retrieval experiments: protocols, methods, data sets, CSV columns, derived seeds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ...baselines import DAM_DEGREE

__all__ = ["Protocol", "PROTOCOLS", "MethodSpec", "METHODS", "DATASETS", "CORRUPTIONS", "NOISE_MODES", "LOSSES",
           "STAGE1_SAMPLING", "DAM_DEGREE", "DEFAULT_BETA_GRID", "SYNTHETIC_POOL", "SYNTHETIC_SHAPE", "COLUMNS",
           "ConfigMismatchError", "derive_seed"]


@dataclass(frozen=True)
class Protocol:
    """How a protocol corrupts queries, runs Stage I and applies beta (see the module docstring)."""

    name: str
    description: str
    mask_per: str          # "pixel" or "entry" (random_mask's per=)
    mask_rescale: bool     # inverted-dropout x 1/(1-p)
    beta_inside: bool      # Sep(beta s) (True) or beta Sep(s) (False)
    official_stage1: bool  # official presets instead of the paper's settings
    tune_beta: bool        # choose beta on held-out memories


PROTOCOLS = {
    "paper": Protocol(
        "paper", "paper as written: per-pixel 50% mask (no rescale), avg loss on all memories, identity init, "
        "row-normalised W, SGD lr 1, beta inside Sep, corrected baselines",
        mask_per="pixel", mask_rescale=False, beta_inside=True, official_stage1=False, tune_beta=False),
    "official": Protocol(
        "official", "official scripts: per-entry inverted dropout (x2), preset='official' Stage I (square N(0,1) W, "
        "max loss, lr 10, first half of the memories for masked queries), beta after Sep",
        mask_per="entry", mask_rescale=True, beta_inside=False, official_stage1=True, tune_beta=False),
    "tuned": Protocol(
        "tuned", "temperature-matched control: 'paper' queries and Stage I, beta of every temperature method chosen "
        "on a disjoint held-out memory set",
        mask_per="pixel", mask_rescale=False, beta_inside=True, official_stage1=False, tune_beta=True),
}


@dataclass(frozen=True)
class MethodSpec:
    """One retrieval rule.

    ``similarity``: "dot", "kernel" (U-Hop's learned K), "l2" or "manhattan" (distances);
    ``separation``: "softmax", "sparsemax" or "poly" (degree-10 polynomial);
    ``official``: bug-compatible with the official code (beta after Sep, +distance, unnormalised
    polynomial) whatever the protocol; ``temperature``: beta is an inverse temperature (tunable).
    """

    name: str
    label: str
    similarity: str
    separation: str
    official: bool = False
    temperature: bool = True

    @property
    def uhop(self) -> bool:
        return self.similarity == "kernel"


METHODS = {m.name: m for m in (
    MethodSpec("mhm", "MHM", "dot", "softmax"),
    MethodSpec("sparse_mhm", "Sparse MHM", "dot", "sparsemax"),
    MethodSpec("uhop_mhm", "U-Hop + MHM", "kernel", "softmax"),
    MethodSpec("uhop_sparse_mhm", "U-Hop + Sparse MHM", "kernel", "sparsemax"),
    MethodSpec("dam", "DAM (poly-10)", "dot", "poly", temperature=False),
    MethodSpec("dam_official", "DAM (poly-10, official)", "dot", "poly", official=True, temperature=False),
    MethodSpec("l2", "L2 MHM", "l2", "softmax"),
    MethodSpec("l2_official", "L2 MHM (official)", "l2", "softmax", official=True, temperature=False),
    MethodSpec("manhattan", "Manhattan MHM", "manhattan", "softmax"),
    MethodSpec("manhattan_official", "Manhattan MHM (official)", "manhattan", "softmax", official=True,
               temperature=False),
)}

SYNTHETIC_POOL = 1000          # patterns in the synthetic dataset
SYNTHETIC_SHAPE = (1, 8, 8)    # (C, H, W) of a synthetic pattern
DATASETS = ("synthetic", "mnist", "cifar10", "cifar100", "tiny_imagenet")
CORRUPTIONS = ("mask", "noise")
NOISE_MODES = ("total_norm", "per_entry")
LOSSES = ("avg", "max")
STAGE1_SAMPLING = ("grid", "random")
DEFAULT_BETA_GRID = tuple(round(10.0 ** (k / 4), 6) for k in range(-8, 17))  # 1e-2 .. 1e4, 4 per decade

#: Columns of a results CSV, in order.
COLUMNS = (
    "experiment", "dataset", "variant", "exact", "d", "protocol", "corruption", "noise_mode", "method",
    "M", "N", "noise", "seed", "loss", "lr", "n_train", "beta", "beta_placement",
    "sse_mean", "sse_std", "mse_mean", "mse_std", "success", "hit",
    "eff_support", "support", "top_weight",
    "sep_loss", "sep_loss_max", "min_dist", "train_loss",
    "beta_heldout_sse", "beta_at_edge", "stage1_s", "wall_s",
)


class ConfigMismatchError(ValueError):
    """An existing results file was produced by a different configuration."""


def derive_seed(seed: int, tag: str) -> int:
    """A 31-bit seed derived from (seed, tag): independent streams for memories, queries, kernels."""
    digest = hashlib.sha256(f"{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
