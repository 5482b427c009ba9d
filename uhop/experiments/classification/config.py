"""The configuration of a classification run: the datasets, the hyperparameter presets (Tables 5-6 of the
paper and the companion's own), :class:`ClassificationConfig` with its checks, and the one translation of the
notebook's parameters (:func:`config_from_parameters`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..._checks import check_bool, check_choice, check_int
from ...models.vision import VARIANTS


DATASETS = ("cifar10", "cifar100", "tiny_imagenet")
#: Model families: "auto" (App F.4: the one-layer CLS classifier for CIFAR, the 3-block ViT for Tiny ImageNet),
#: or either explicitly.
ARCHITECTURES = ("auto", "classifier", "vit")

#: Hyperparameter presets.  "paper" = Tables 5 (CIFAR) and 6 (Tiny ImageNet) where they say something; the
#: rest (heads, dropout, schedule, N_i, B_1, t) is not in the paper and follows the official code or is ours.
_PAPER = {
    "cifar": dict(lr=1e-3, dim=512, epochs=25, batch_size=128, kernel_lr=0.1, patch_size=32, num_heads=1),
    "tiny_imagenet": dict(lr=1e-4, dim=512, epochs=25, batch_size=128, kernel_lr=0.1, patch_size=64, num_heads=4),
}
#: the CPU sizes change the paper's settings in these keys only (the rest, e.g. kernel_lr 0.1, is the paper's)
_CPU = {"cifar": dict(dim=64, epochs=8, patch_size=8), "tiny_imagenet": dict(lr=1e-3, dim=64, epochs=10, patch_size=16)}
_SMOKE = {"cifar": dict(dim=32, epochs=2, batch_size=64, patch_size=8),
          "tiny_imagenet": dict(lr=1e-3, dim=32, epochs=2, batch_size=64, patch_size=16)}
PRESETS: dict[str, dict[str, dict]] = {
    "paper": _PAPER,
    # The companion's default: the paper's settings with a patch size that gives several memories.
    "companion": {group: {**values, "patch_size": {"cifar": 4, "tiny_imagenet": 8}[group]}
                  for group, values in _PAPER.items()},
    # What fits on 2 CPU cores (the committed results).
    "cpu": {group: {**values, **_CPU[group]} for group, values in _PAPER.items()},
    # CI smoke size.
    "smoke": {group: {**values, **_SMOKE[group]} for group, values in _PAPER.items()},
}


def _group(dataset: str) -> str:
    return "tiny_imagenet" if dataset == "tiny_imagenet" else "cifar"


@dataclass
class ClassificationConfig:
    """Everything a classification run depends on (see :func:`make_config` for presets)."""

    dataset: str = "cifar10"
    variants: tuple[str, ...] = ("mhm", "mhm_uhop", "sparse", "sparse_uhop")
    preset: str = "smoke"
    patch_size: int = 8
    dim: int = 32
    num_heads: int = 1
    depth: int = 3
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    kernel_lr: float = 0.1
    inner_steps: int = 1
    inner_batch_size: int | None = None
    t: float = 2.0
    sep_loss: str = "dl"
    scheduler: str | None = "cosine"
    attn_dropout: float = 0.1
    dropout: float = 0.1
    d_phi: int | None = None
    train_sizes: tuple[int | None, ...] = (None,)
    test_size: int | None = None
    run_seeds: tuple[int, ...] = (0,)
    seed: int = 0
    device: str = "cpu"
    data_variant: str = "auto"
    eval_batch_size: int = 1000
    progress: bool = False
    checkpoint: bool = False
    architecture: str = "auto"
    augment: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        check_choice(self.dataset, "dataset", DATASETS)
        for v in self.variants:
            check_choice(v, "variant", VARIANTS)
        if not self.variants:
            raise ValueError("variants must name at least one of " + ", ".join(map(repr, VARIANTS)))
        check_choice(self.preset, "preset", PRESETS)
        check_choice(self.sep_loss, "sep_loss", ("dl", "def2.2"))
        check_choice(self.architecture, "architecture", ARCHITECTURES)
        check_bool(self.augment, "augment")
        if not float(self.weight_decay) >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        image = 64 if self.dataset == "tiny_imagenet" else 32
        if check_int(self.patch_size, "patch_size", minimum=1) > image or image % self.patch_size:
            raise ValueError(f"patch_size ({self.patch_size}) must divide the {self.dataset} image size ({image}); "
                             f"valid patch sizes: {[p for p in range(1, image + 1) if image % p == 0]}")
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.inner_steps, "inner_steps", minimum=0)
        for n in self.train_sizes:
            if n is not None:
                check_int(n, "train_size", minimum=1)

    def as_dict(self) -> dict:
        return asdict(self)


def make_config(dataset: str = "cifar10", preset: str = "smoke", **overrides) -> ClassificationConfig:
    """A :class:`ClassificationConfig` from ``PRESETS[preset]`` for the dataset, then ``overrides``
    (``None`` values in ``overrides`` keep the preset's value)."""
    check_choice(dataset, "dataset", DATASETS)
    base = dict(PRESETS[check_choice(preset, "preset", PRESETS)][_group(dataset)])
    base.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("variants", "train_sizes", "run_seeds"):
        if key in base and not isinstance(base[key], tuple):
            base[key] = tuple(base[key])
    return ClassificationConfig(dataset=dataset, preset=preset, **base)


#: Notebook parameters whose 0 means "the preset's value".
_ZERO_MEANS_PRESET = ("patch_size", "dim", "epochs", "batch_size", "lr", "kernel_lr", "num_heads")


def config_from_parameters(parameters: dict) -> ClassificationConfig:
    """The :class:`ClassificationConfig` of ``notebooks/classification.py``'s parameters (as written in
    ``notebooks/full_size.yml``): the one translation used by the notebook and by ``python -m
    uhop.experiments.classification train``.  ``variants`` and ``train_sizes`` are comma-separated strings
    (``full`` or 0: the whole split), ``runs`` gives run seeds ``0 .. runs-1``, 0 keeps the preset's value of
    :data:`_ZERO_MEANS_PRESET` and means "none" for ``inner_batch_size`` / ``test_size``."""
    known = set(_ZERO_MEANS_PRESET) | {"dataset", "variants", "preset", "inner_steps", "inner_batch_size",
                                        "train_sizes", "test_size", "runs", "seed", "device", "architecture",
                                        "depth", "augment", "weight_decay", "output_dir", "threads", "command",
                                        "checkpoint"}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"unknown classification parameter(s) {unknown}; valid: {sorted(known)}")
    p = dict(parameters)
    overrides = {k: (p[k] or None) for k in _ZERO_MEANS_PRESET if k in p}
    if "train_sizes" in p:
        overrides["train_sizes"] = tuple(None if str(s).strip() in ("full", "0") else int(s)
                                         for s in str(p["train_sizes"]).split(","))
    if "variants" in p:
        overrides["variants"] = tuple(v.strip() for v in str(p["variants"]).split(",") if v.strip())
    if "runs" in p:
        overrides["run_seeds"] = tuple(range(check_int(p["runs"], "runs", minimum=1)))
    for k in ("inner_batch_size", "test_size"):
        if k in p:
            overrides[k] = p[k] or None
    for k in ("inner_steps", "seed", "device", "architecture", "depth", "augment", "weight_decay", "checkpoint"):
        if k in p:
            overrides[k] = p[k]
    return make_config(p.get("dataset", "cifar10"), p.get("preset", "smoke"), **overrides)
