"""What defines a forecasting run: the variants, data sets and horizons, Table 8 of the paper,
:class:`ForecastConfig`, its run key, and the translation of the notebook's parameters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from ..._checks import check_choice, check_int, check_positive
from ...models.stanhop import DEFAULTS, blocks_for_horizon

__all__ = ["VARIANTS", "VARIANT_LABELS", "DATASETS", "HORIZONS", "LOSSES", "PAPER_TABLE8", "ForecastConfig",
           "comparable_settings", "run_key", "ZERO_MEANS_ALL", "RUN_PARAMETERS", "config_from_parameters"]

VARIANTS = ("stanhop", "stanhop_uhop", "persistence", "linear")
VARIANT_LABELS = {"stanhop": "STanHop-Net", "stanhop_uhop": "STanHop-Net + U-Hop", "persistence": "persistence",
                  "linear": "linear (shared)"}
DATASETS = ("ETTh1", "ETTm1", "WTH")
HORIZONS = (96, 192, 336, 720)
LOSSES = ("mae", "mse")

#: Table 8 of the paper: (MSE, MAE) on the standardised test split ("ETTh" in the paper = ETTh1).
PAPER_TABLE8 = {
    ("ETTh1", 96): {"stanhop": (0.395, 0.402), "stanhop_uhop": (0.392, 0.400)},
    ("ETTh1", 192): {"stanhop": (0.425, 0.432), "stanhop_uhop": (0.420, 0.428)},
    ("ETTh1", 336): {"stanhop": (0.495, 0.487), "stanhop_uhop": (0.470, 0.473)},
    ("ETTh1", 720): {"stanhop": (0.631, 0.600), "stanhop_uhop": (0.572, 0.559)},
    ("ETTm1", 96): {"stanhop": (0.334, 0.366), "stanhop_uhop": (0.333, 0.365)},
    ("ETTm1", 192): {"stanhop": (0.351, 0.380), "stanhop_uhop": (0.355, 0.385)},
    ("ETTm1", 336): {"stanhop": (0.391, 0.393), "stanhop_uhop": (0.392, 0.399)},
    ("ETTm1", 720): {"stanhop": (0.436, 0.431), "stanhop_uhop": (0.435, 0.423)},
    ("WTH", 96): {"stanhop": (0.494, 0.505), "stanhop_uhop": (0.483, 0.498)},
    ("WTH", 192): {"stanhop": (0.513, 0.526), "stanhop_uhop": (0.528, 0.536)},
    ("WTH", 336): {"stanhop": (0.523, 0.539), "stanhop_uhop": (0.523, 0.539)},
    ("WTH", 720): {"stanhop": (0.601, 0.609), "stanhop_uhop": (0.603, 0.589)},
}


@dataclass(frozen=True)
class ForecastConfig:
    """Everything that defines one forecasting run (``device`` excepted, it does not change the numbers' meaning).

    Defaults are the paper's Table 7 where it gives a value; ``input_len`` (not stated in the paper) is 96.
    ``patience`` 0 disables early stopping; ``lr_decay`` multiplies the learning rate after every epoch (1: constant,
    the paper states no schedule; 0.5 halves it every epoch like the official code's ``lradj``).
    ``max_train_windows`` / ``max_val_windows`` cap the windows per epoch for a CPU budget (a fixed seeded
    random subset of the training windows; evenly spaced validation windows).  ``epoch_windows`` instead makes
    every epoch a *fresh* seeded random sample of that many training windows (drawn without replacement from
    all of them, from the same generator as the batch order, so that paired variants see the same windows):
    an epoch of fixed cost on every dataset that still visits all the training data over the run.  ``max_test_windows`` tests on
    evenly spaced windows of the test split (smoke runs and the CPU tier, whose results are labelled as
    subsampled; the paper and the GPU commands use the full split).
    ``inner_batch_size`` is Algorithm 2's Stage-I batch ``B_1`` (the windows of each separation-loss step, U-Hop
    only); ``None`` uses ``batch_size`` (``B_1 = B_2``), the paper's single batch size for this task (Table 7).
    """

    dataset: str = "ETTh1"
    horizon: int = 96
    variant: str = "stanhop"
    input_len: int = 96
    features: str = "M"
    target: str | None = None
    protocol: str = "stanhop"
    epochs: int = 50
    patience: int = 25
    batch_size: int = 16
    lr: float = 1e-4
    lr_decay: float = 1.0
    loss: str = "mae"
    kernel_lr: float = 0.1
    inner_steps: int = 1
    sep_t: float = 2.0
    d_model: int = DEFAULTS["d_model"]
    n_heads: int = DEFAULTS["n_heads"]
    d_ff: int = DEFAULTS["d_ff"]
    factor: int = DEFAULTS["factor"]
    dropout: float = DEFAULTS["dropout"]
    seg_len: int = DEFAULTS["seg_len"]
    win_size: int = DEFAULTS["win_size"]
    n_blocks: int | None = None
    alpha_init: float = DEFAULTS["alpha_init"]
    max_train_windows: int | None = None
    max_val_windows: int | None = None
    max_test_windows: int | None = None
    eval_batch_size: int = 256
    seed: int = 0
    epoch_windows: int | None = None
    inner_batch_size: int | None = None

    def __post_init__(self):
        check_choice(self.variant, "variant", VARIANTS)
        check_choice(self.loss, "loss", LOSSES)
        for name in ("horizon", "input_len", "batch_size", "eval_batch_size", "d_model", "n_heads", "d_ff",
                     "factor", "seg_len", "win_size"):
            check_int(getattr(self, name), name, minimum=1)
        for name in ("epochs", "patience", "inner_steps"):
            check_int(getattr(self, name), name, minimum=0)
        check_int(self.seed, "seed")
        for name in ("n_blocks", "max_train_windows", "max_val_windows", "max_test_windows", "epoch_windows",
                     "inner_batch_size"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        check_positive(self.lr, "lr")
        check_positive(self.kernel_lr, "kernel_lr")
        check_positive(self.sep_t, "sep_t")
        if not 0.0 < float(self.lr_decay) <= 1.0:
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")

    @property
    def blocks(self) -> int:
        return blocks_for_horizon(self.horizon) if self.n_blocks is None else self.n_blocks

    @property
    def trains(self) -> bool:
        return self.variant != "persistence"


#: Fields added after runs were committed, with the value that reproduces the earlier behaviour: left out of
#: the run key at that value, so that the keys (and checkpoints) of earlier runs stay valid.
_LATER_FIELDS = {"epoch_windows": None, "inner_batch_size": None}


def comparable_settings(config: ForecastConfig | dict) -> dict:
    """The configuration as a dict without later fields at their neutral value (compared on resume, hashed)."""
    d = asdict(config) if isinstance(config, ForecastConfig) else dict(config)
    return {k: v for k, v in d.items() if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}


def run_key(config: ForecastConfig) -> str:
    """File-name key of a run: dataset, horizon, variant, seed and a hash of the whole configuration."""
    digest = hashlib.sha256(json.dumps(comparable_settings(config), sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.dataset}_h{config.horizon}_{config.variant}_s{config.seed}_{digest}"


#: The notebook's (and ``notebooks/full_size.yml``'s) parameters whose 0 means None in the config: "no cap" for
#: the window counts, "the training batch size" for ``inner_batch_size``.
ZERO_MEANS_ALL = ("max_train_windows", "max_val_windows", "max_test_windows", "epoch_windows", "inner_batch_size")
#: Notebook parameters that are not fields of :class:`ForecastConfig`.
RUN_PARAMETERS = ("variants", "n_seeds", "threads", "out_dir", "checkpoint_dir", "device", "command")


def config_from_parameters(parameters: dict) -> tuple[ForecastConfig, list[str], list[int]]:
    """``(base config, variants, seeds)`` from the parameters of ``notebooks/forecasting.py`` (as written in
    ``notebooks/full_size.yml``): the one translation used by the notebook and by ``python -m
    uhop.experiments.forecasting train``, so that both give the same configurations (and run keys).

    ``variants`` is a comma-separated string, seeds are ``seed .. seed + n_seeds - 1``, a 0 in
    :data:`ZERO_MEANS_ALL` means no cap.  Unknown names raise ``ValueError`` listing the valid ones.
    """
    fields = {f for f in ForecastConfig.__dataclass_fields__}
    unknown = sorted(set(parameters) - fields - set(RUN_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown forecasting parameter(s) {unknown}; valid: {sorted(fields | set(RUN_PARAMETERS))}")
    kwargs = {k: v for k, v in parameters.items() if k in fields and k != "variant"}
    for name in ZERO_MEANS_ALL:
        if kwargs.get(name) == 0:
            kwargs[name] = None
    variants = [v.strip() for v in str(parameters.get("variants", "stanhop")).split(",") if v.strip()]
    for v in variants:
        check_choice(v, "variants", VARIANTS)
    seed = check_int(parameters.get("seed", 0), "seed")
    n_seeds = check_int(parameters.get("n_seeds", 1), "n_seeds", minimum=1)
    return ForecastConfig(**kwargs), variants, list(range(seed, seed + n_seeds))
