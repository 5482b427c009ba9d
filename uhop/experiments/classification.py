r"""Image classification with and without U-Hop (Section 4.2, App F.4, G.4-G.5, Table 1 of the paper).

``run(config)`` trains every requested variant (``mhm``, ``mhm_uhop``, ``sparse``, ``sparse_uhop``) for every
run seed and training-set size, on one seeded data subset shared by all variants, seeds and both stages of
Algorithm 2, and appends one row per epoch to ``<out_dir>/curves.csv``.  ``summarize`` turns the curves into a
Table-1-style summary, ``expressiveness_table`` into Fig 6 / G.4 (max training accuracy against the training-set
size) and ``epochs_to_accuracy`` into the G.5 convergence measure.

Data: CIFAR-10 from torchvision's files when present, else the shipped 60k JPEG re-encoding (lossy, about
6/255 per pixel: results say so); CIFAR-100 through torchvision only (``DatasetNotFoundError`` otherwise);
Tiny ImageNet from the full set when extracted, else the shipped 50-images-per-class subset.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_choice, check_int
from ..data import load_cifar10, load_cifar100, load_tiny_imagenet
from ..models.vision import VARIANT_LABELS, VARIANTS, build_model
from ..nn.bilevel import BilevelTrainer
from ..provenance import atomic_write_text, write_manifest, writer_lock

__all__ = ["DATASETS", "PRESETS", "PAPER_TABLE1", "ClassificationConfig", "ClassificationData", "load_data",
           "make_config", "train_variant", "run", "summarize", "expressiveness_table", "epochs_to_accuracy",
           "evaluate", "CURVE_COLUMNS"]

DATASETS = ("cifar10", "cifar100", "tiny_imagenet")
#: Model families: "auto" (App F.4: the one-layer CLS classifier for CIFAR, the 3-block ViT for Tiny ImageNet),
#: or either explicitly.
ARCHITECTURES = ("auto", "classifier", "vit")
#: Random-crop padding of ``augment=True`` (pixels on each side), the usual CIFAR value.
CROP_PADDING = 4

#: Table 1 of the paper (percent): (max train acc, test acc) per dataset and variant.
PAPER_TABLE1 = {
    "cifar10": {"mhm": (56.0, 52.2), "mhm_uhop": (64.6, 55.2), "sparse": (55.9, 52.0), "sparse_uhop": (66.4, 55.4)},
    "cifar100": {"mhm": (32.3, 26.3), "mhm_uhop": (44.1, 28.7), "sparse": (49.6, 26.0),
                 "sparse_uhop": (45.4, 29.0)},
    "tiny_imagenet": {"mhm": (48.9, 12.2), "mhm_uhop": (61.4, 12.7), "sparse": (17.2, 12.3),
                      "sparse_uhop": (60.6, 12.5)},
}

#: Hyperparameter presets.  "paper" = Tables 5 (CIFAR) and 6 (Tiny ImageNet) where they say something; the
#: rest (heads, dropout, schedule, N_i, B_1, t) is not in the paper and follows the official code or is ours.
PRESETS: dict[str, dict[str, dict]] = {
    "paper": {
        "cifar": dict(lr=1e-3, dim=512, epochs=25, batch_size=128, kernel_lr=0.1, patch_size=32, num_heads=1),
        "tiny_imagenet": dict(lr=1e-4, dim=512, epochs=25, batch_size=128, kernel_lr=0.1, patch_size=64,
                              num_heads=4),
    },
    # The companion's default: the paper's optimiser settings with a patch size that gives several memories.
    "companion": {
        "cifar": dict(lr=1e-3, dim=512, epochs=25, batch_size=128, kernel_lr=0.1, patch_size=4, num_heads=1),
        "tiny_imagenet": dict(lr=1e-4, dim=512, epochs=25, batch_size=128, kernel_lr=0.1, patch_size=8,
                              num_heads=4),
    },
    # What fits on 2 CPU cores (the committed results).
    "cpu": {
        "cifar": dict(lr=1e-3, dim=64, epochs=8, batch_size=128, kernel_lr=0.1, patch_size=8, num_heads=1),
        "tiny_imagenet": dict(lr=1e-3, dim=64, epochs=10, batch_size=128, kernel_lr=0.1, patch_size=16,
                              num_heads=4),
    },
    # CI smoke size.
    "smoke": {
        "cifar": dict(lr=1e-3, dim=32, epochs=2, batch_size=64, kernel_lr=0.1, patch_size=8, num_heads=1),
        "tiny_imagenet": dict(lr=1e-3, dim=32, epochs=2, batch_size=64, kernel_lr=0.1, patch_size=16,
                              num_heads=4),
    },
}

CURVE_COLUMNS = ["dataset", "data_variant", "variant", "label", "run_seed", "train_size", "epoch", "train_loss",
                 "train_acc", "test_loss", "test_acc", "sep_loss_first", "sep_loss_last", "seconds",
                 "inner_seconds", "outer_seconds", "images_per_s"]


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
        if not isinstance(self.augment, bool):
            raise TypeError(f"augment must be a bool, got {type(self.augment).__name__}")
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


# -- data -------------------------------------------------------------------------------------------------------


@dataclass
class ClassificationData:
    """uint8 train/test images and labels plus the facts a result must report."""

    train_X: torch.Tensor
    train_y: torch.Tensor
    test_X: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor
    variant: str
    exact: bool
    description: str
    train_index: torch.Tensor = field(repr=False, default=None)

    def subset(self, n: int | None, seed: int) -> "ClassificationData":
        """The first ``n`` rows of a seeded permutation of the training set (nested: a smaller size is a
        prefix of a larger one, so every stage and variant sees the same images)."""
        if n is None or n >= len(self.train_y):
            return self
        perm = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(seed))[:n]
        return replace(self, train_X=self.train_X[perm], train_y=self.train_y[perm],
                       train_index=self.train_index[perm])


def load_data(dataset: str, *, test_size: int | None = None, seed: int = 0, variant: str = "auto",
              root=None) -> ClassificationData:
    """Train and test splits of ``dataset`` as uint8 tensors, channel mean/std of the training split.

    ``test_size`` keeps a seeded random subset of the test (Tiny ImageNet: val) split.
    """
    check_choice(dataset, "dataset", DATASETS)
    if dataset == "cifar10":
        train, test = load_cifar10("train", root, variant), load_cifar10("test", root, variant)
    elif dataset == "cifar100":
        train, test = load_cifar100("train", root, variant), load_cifar100("test", root, variant)
    else:
        train, test = load_tiny_imagenet("train", root, variant), load_tiny_imagenet("val", root, variant)
    if len(train) < 1000 and variant == "auto":
        raise ValueError(f"{dataset}: only {len(train)} training images were found ({train.describe()}); "
                         "classification needs the full training split")
    tx, ty, vx, vy = train.images, train.labels, test.images, test.labels
    if test_size is not None and test_size < len(vy):
        keep = torch.randperm(len(vy), generator=torch.Generator().manual_seed(seed + 10_000))[:test_size]
        vx, vy = vx[keep], vy[keep]
    mean, std = _channel_stats(tx)
    desc = f"train: {train.describe()} | test: {test.describe()}"
    return ClassificationData(tx, ty, vx, vy, train.num_classes, int(tx.shape[-1]), mean, std, train.variant,
                              bool(train.exact and test.exact), desc, torch.arange(len(ty)))


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks (no full float copy)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.pow(2).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean.pow(2)).clamp_min(0).mul(n / max(n - 1, 1)).sqrt()
    return mean.to(torch.float32), std.to(torch.float32)


class _Transform:
    """uint8 batch -> normalised float batch on ``device``; with ``augment``, then a random crop of the image
    padded by :data:`CROP_PADDING` pixels and a random horizontal flip, per image, from a generator reseeded
    from ``(seed, epoch)`` at every epoch (:meth:`set_epoch`, called by the trainer): paired variants see the
    same augmentations and a resumed run continues exactly."""

    def __init__(self, data: ClassificationData, device, augment: bool = False, seed: int = 0):
        self.mean = data.mean.view(1, -1, 1, 1).to(device)
        self.std = data.std.view(1, -1, 1, 1).to(device)
        self.device, self.augment, self.seed = device, augment, seed
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 100_003 + epoch)

    def __call__(self, x):
        x = (x.to(self.device).to(torch.float32).div_(255.0) - self.mean) / self.std
        return random_crop_flip(x, CROP_PADDING, self.generator) if self.augment else x


def _transform(data: ClassificationData, device, augment: bool = False, seed: int = 0) -> _Transform:
    return _Transform(data, device, augment, seed)


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random crop of ``x`` (``(B, C, H, W)``) zero-padded by ``padding`` on each side, then a random
    horizontal flip: one gather for the whole batch (no per-image Python loop).  Padding with zeros after
    normalisation pads with the channel mean."""
    B, C, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (B,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (B,), generator=generator).to(x.device)
    flip = (torch.rand(B, generator=generator) < 0.5).to(x.device)
    cols = torch.arange(W, device=x.device)
    cols = torch.where(flip[:, None], W - 1 - cols, cols) + dx[:, None]          # (B, W)
    rows = torch.arange(H, device=x.device) + dy[:, None]                         # (B, H)
    b = torch.arange(B, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate(model, X, y, transform, batch_size: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in eval mode on uint8 images ``X``."""
    was = model.training
    model.eval()
    correct, total = 0, 0.0
    for i in range(0, len(y), batch_size):
        xb = transform(X[i:i + batch_size])
        yb = y[i:i + batch_size].to(xb.device)
        out = model(xb)
        total += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(-1) == yb).sum())
    model.train(was)
    return correct / len(y), total / len(y)


# -- training ---------------------------------------------------------------------------------------------------


def train_variant(cfg: ClassificationConfig, data: ClassificationData, variant: str, run_seed: int,
                  train_size: int | None = None, checkpoint_path=None) -> list[dict]:
    """Train one variant with one run seed on the seeded subset of ``train_size`` images; one dict per epoch.

    The model is built under ``torch.manual_seed(run_seed)``, so every variant of a seed starts from the same
    non-kernel weights.  U-Hop variants are trained with Algorithm 2; the others with the same trainer and no
    inner steps.
    """
    sub = data.subset(train_size, cfg.seed)
    torch.manual_seed(run_seed)
    model = build_model(cfg.dataset, variant, image_size=data.image_size, num_classes=data.num_classes,
                        patch_size=cfg.patch_size, dim=cfg.dim, num_heads=cfg.num_heads, depth=cfg.depth,
                        attn_dropout=cfg.attn_dropout, dropout=cfg.dropout, d_phi=cfg.d_phi,
                        architecture=cfg.architecture)
    trainer = BilevelTrainer(model, lr=cfg.lr, kernel_lr=cfg.kernel_lr, inner_steps=cfg.inner_steps, t=cfg.t,
                             sep_loss=cfg.sep_loss, scheduler=cfg.scheduler, device=cfg.device,
                             checkpoint_path=checkpoint_path, progress=cfg.progress, seed=run_seed,
                             weight_decay=cfg.weight_decay)
    transform = _transform(data, cfg.device)
    train_transform = _transform(data, cfg.device, augment=cfg.augment, seed=run_seed + 7) if cfg.augment else transform

    def evaluate_test(m):
        acc, loss = evaluate(m, data.test_X, data.test_y, transform, cfg.eval_batch_size)
        return {"test_acc": acc, "test_loss": loss}

    history = trainer.fit((sub.train_X, sub.train_y), cfg.epochs, batch_size=cfg.batch_size,
                          inner_batch_size=cfg.inner_batch_size, transform=train_transform, evaluate=evaluate_test,
                          inner_transform=transform)
    rows = []
    for rec in history:
        d = rec.as_dict()
        rows.append({
            "dataset": cfg.dataset, "data_variant": data.variant, "variant": variant, "label": VARIANT_LABELS[variant],
            "run_seed": run_seed, "train_size": len(sub.train_y), "epoch": d["epoch"],
            "train_loss": d["train_loss"], "train_acc": d["train_acc"], "test_loss": d["test_loss"],
            "test_acc": d["test_acc"], "sep_loss_first": d["sep_loss_first"], "sep_loss_last": d["sep_loss_last"],
            "seconds": d["seconds"], "inner_seconds": d["inner_seconds"], "outer_seconds": d["outer_seconds"],
            "images_per_s": d["images"] / d["seconds"] if d["seconds"] > 0 else float("nan"),
        })
    return rows


def _read_curves(path: Path):
    import pandas as pd

    if path.exists() and path.stat().st_size > 0:
        return pd.read_csv(path)
    return pd.DataFrame(columns=CURVE_COLUMNS)


def run(cfg: ClassificationConfig, out_dir: str | Path, *, command: str = "uhop.experiments.classification.run",
        resume: bool = True, log=print):
    """Train every (train size, run seed, variant) of ``cfg``; write ``curves.csv``, ``summary.csv``,
    ``summary.json``, ``expressiveness.csv`` and ``manifest.json`` under ``out_dir``.

    Rows are appended to ``curves.csv`` after each finished training run, so an interrupted call loses at most
    one run; with ``resume=True`` runs already present are skipped.  Returns the curves DataFrame.
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves_path = out / "curves.csv"
    start = time.perf_counter()
    data = load_data(cfg.dataset, test_size=cfg.test_size, seed=cfg.seed, variant=cfg.data_variant)
    log(data.description)
    curves = _read_curves(curves_path) if resume else pd.DataFrame(columns=CURVE_COLUMNS)
    if len(curves):
        _check_same_config(out / "manifest.json", cfg)
    done = set()
    if len(curves):
        full = curves.groupby(["variant", "run_seed", "train_size"])["epoch"].max()
        done = {k for k, v in full.items() if v >= cfg.epochs}
    n_train = len(data.train_y)
    for size in cfg.train_sizes:
        actual = n_train if size is None else min(size, n_train)
        for run_seed in cfg.run_seeds:
            for variant in cfg.variants:
                if (variant, run_seed, actual) in done:
                    log(f"skip {variant} seed={run_seed} n={actual} (already in {curves_path.name})")
                    continue
                t0 = time.perf_counter()
                ckpt = out / "checkpoints" / f"{variant}_s{run_seed}_n{actual}.pt" if cfg.checkpoint else None
                rows = train_variant(cfg, data, variant, run_seed, size, ckpt)
                last = rows[-1]
                log(f"{VARIANT_LABELS[variant]:>20} seed={run_seed} n={actual}: max train acc "
                    f"{max(r['train_acc'] for r in rows):.3f}, final test acc {last['test_acc']:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")
                curves = _add_run(curves_path, rows, variant, run_seed, actual)
    # other processes may be training other runs into the same folder: summarise what is on disk, under its lock
    with writer_lock(curves_path, "classification curves", wait=_LOCK_WAIT_S):
        if curves_path.exists():
            curves = _read_curves(curves_path)
        _write_summaries(out, curves, cfg, data, command, time.perf_counter() - start, n_train)
    return curves


#: How long a writer waits for another process's write of the same folder (a write takes well under a second).
_LOCK_WAIT_S = 600.0


def _add_run(curves_path: Path, rows: list[dict], variant: str, run_seed: int, train_size: int):
    """Add one finished run's rows to ``curves.csv``: under an exclusive lock, the file is read again just before
    the write, so processes training different runs into one folder never drop each other's rows (a process
    holding an old copy would)."""
    import pandas as pd

    with writer_lock(curves_path, "classification curves", wait=_LOCK_WAIT_S):
        curves = _read_curves(curves_path)
        if len(curves):
            curves = curves[~((curves.variant == variant) & (curves.run_seed == run_seed)
                              & (curves.train_size == train_size))]
        new = pd.DataFrame(rows, columns=CURVE_COLUMNS)
        curves = new if not len(curves) else pd.concat([curves, new], ignore_index=True)
        atomic_write_text(curves_path, curves.to_csv(index=False))
    return curves


def _write_summaries(out: Path, curves, cfg, data, command, wall_time_s: float, n_train: int) -> None:
    summary = summarize(curves)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "summary.json", json.dumps(json.loads(summary.to_json(orient="records")), indent=2))
    expr = expressiveness_table(curves)
    atomic_write_text(out / "expressiveness.csv", expr.to_csv(index=False))
    write_manifest(out / "manifest.json", command=command, parameters=cfg.as_dict(),
                   wall_time_s=wall_time_s, device=cfg.device,
                   extra={"training_seconds_total": float(curves.seconds.sum()),
                          "note": "wall_time_s covers this call only; runs found in curves.csv were skipped "
                                  "(resume); training_seconds_total sums the per-epoch times of every run",
                          "data": {"description": data.description, "variant": data.variant, "exact": data.exact,
                                   "train_images": n_train, "test_images": len(data.test_y)},
                          "files": ["curves.csv", "summary.csv", "summary.json", "expressiveness.csv"]})


# Parameters that may differ between calls writing into the same folder (they do not change a run's result,
# or select which runs are made).
_RESUME_FREE = {"variants", "run_seeds", "train_sizes", "device", "progress", "checkpoint", "eval_batch_size"}


def _check_same_config(manifest: Path, cfg: ClassificationConfig) -> None:
    if not manifest.exists():
        return
    old = json.loads(manifest.read_text()).get("parameters", {})
    new = json.loads(json.dumps(cfg.as_dict()))
    diff = sorted(k for k in new if k not in _RESUME_FREE and k in old and old[k] != new[k])
    if diff:
        raise ValueError(f"{manifest.parent} holds runs made with different settings ({', '.join(diff)}: "
                         f"{[old[k] for k in diff]} vs {[new[k] for k in diff]}); use another output folder "
                         "or resume=False")


# -- summaries ----------------------------------------------------------------------------------------------------


def epochs_to_accuracy(curve, threshold: float, column: str = "train_acc") -> float:
    """First epoch at which ``column`` reaches ``threshold`` (NaN if never): the G.5 convergence measure."""
    hit = curve[curve[column] >= threshold]
    return float(hit["epoch"].min()) if len(hit) else math.nan


def summarize(curves, thresholds: Sequence[float] = (0.4, 0.5)):
    """Table-1-style summary per (dataset, variant, train size): mean and std over run seeds of the maximal
    training accuracy over epochs, the final and the best test accuracy, and the mean first epoch reaching each
    training-accuracy threshold (NaN-aware; ``reached`` counts the seeds that got there)."""
    import pandas as pd

    rows = []
    if not len(curves):
        return pd.DataFrame()
    for (dataset, variant, size), g in curves.groupby(["dataset", "variant", "train_size"], sort=False):
        per_seed = []
        for seed, c in g.groupby("run_seed"):
            c = c.sort_values("epoch")
            item = {"max_train_acc": c.train_acc.max(), "final_test_acc": c.test_acc.iloc[-1],
                    "best_test_acc": c.test_acc.max(), "final_train_loss": c.train_loss.iloc[-1],
                    "final_test_loss": c.test_loss.iloc[-1], "epochs": int(c.epoch.max()),
                    "images_per_s": c.images_per_s.median(),
                    "inner_fraction": (c.inner_seconds.sum() / c.seconds.sum()) if c.seconds.sum() > 0 else 0.0}
            for th in thresholds:
                item[f"epochs_to_train_acc_{th:g}"] = epochs_to_accuracy(c, th)
            per_seed.append(item)
        ps = pd.DataFrame(per_seed)
        row = {"dataset": dataset, "variant": variant, "label": VARIANT_LABELS.get(variant, variant),
               "train_size": int(size), "seeds": len(ps), "epochs": int(ps.epochs.max())}
        for col in ("max_train_acc", "final_test_acc", "best_test_acc", "final_train_loss", "final_test_loss"):
            row[col] = ps[col].mean()
            row[col + "_std"] = ps[col].std(ddof=1) if len(ps) > 1 else 0.0
        row["images_per_s"] = ps.images_per_s.mean()
        row["inner_fraction"] = ps.inner_fraction.mean()
        for th in thresholds:
            col = f"epochs_to_train_acc_{th:g}"
            row[col] = ps[col].mean()
            row[col.replace("epochs_to", "reached")] = int(ps[col].notna().sum())
        paper = PAPER_TABLE1.get(dataset, {}).get(variant)
        row["paper_max_train_acc"] = paper[0] / 100 if paper else np.nan
        row["paper_test_acc"] = paper[1] / 100 if paper else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


#: The U-Hop variant of each base model (Table 1's pairs).
UHOP_PAIRS = {"mhm": "mhm_uhop", "sparse": "sparse_uhop"}


def per_seed_metrics(curves):
    """One row per (variant, run seed, train size): max training accuracy over epochs, final and best test
    accuracy, final training and test loss."""
    import pandas as pd

    rows = []
    for (variant, seed, size), c in curves.groupby(["variant", "run_seed", "train_size"]):
        c = c.sort_values("epoch")
        rows.append({"variant": variant, "run_seed": int(seed), "train_size": int(size), "epochs": int(c.epoch.max()),
                     "max_train_acc": c.train_acc.max(), "final_test_acc": c.test_acc.iloc[-1],
                     "best_test_acc": c.test_acc.max(), "final_train_loss": c.train_loss.iloc[-1],
                     "final_test_loss": c.test_loss.iloc[-1]})
    return pd.DataFrame(rows)


def paired_differences(curves, dataset: str = "cifar10"):
    """U-Hop minus its base model (MHM, Sparse MHM), paired by run seed (same initial weights, data, batch order
    and augmentation), for the max training accuracy and the final and best test accuracy: the mean over seeds
    with a 95% t interval, how many seeds U-Hop was higher in, and the paper's Table 1 difference.  Accuracies are
    fractions; the paper's are converted from percent."""
    import pandas as pd

    from .report import paired_interval

    per = per_seed_metrics(curves)
    per = per[per.train_size == per.train_size.max()] if len(per) else per
    rows = []
    for base, uhop in UHOP_PAIRS.items():
        a = per[per.variant == base].set_index("run_seed")
        b = per[per.variant == uhop].set_index("run_seed")
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            continue
        paper = PAPER_TABLE1.get(dataset, {})
        for metric, paper_idx in (("max_train_acc", 0), ("final_test_acc", 1), ("best_test_acc", 1)):
            r = paired_interval([b.loc[s, metric] - a.loc[s, metric] for s in seeds])
            if r["n"] < 2:
                verdict = "one seed"
            else:
                verdict = ("U-Hop higher" if r["low"] > 0 else "U-Hop lower" if r["high"] < 0
                           else "no resolved difference")
            paper_diff = ((paper[uhop][paper_idx] - paper[base][paper_idx]) / 100
                          if base in paper and uhop in paper else float("nan"))
            rows.append({"pair": f"{VARIANT_LABELS[uhop]} vs {VARIANT_LABELS[base]}", "metric": metric,
                         "seeds": r["n"], "base": a.loc[seeds, metric].mean(), "U-Hop": b.loc[seeds, metric].mean(),
                         "diff": r["mean"], "low": r["low"], "high": r["high"],
                         "U-Hop higher in": f"{r['positive']} of {r['n']}", "paper diff": paper_diff,
                         "verdict": verdict})
    return pd.DataFrame(rows)


def tier_status(run_name: str, output_dir) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """``(finished, pending)`` ``(variant, run seed)`` pairs of one ``notebooks/full_size.yml`` classification
    entry: finished when ``output_dir/curves.csv`` holds all of the entry's epochs for that run."""
    from ..reproduce import load_runs as load_full_size

    entry = next((r for r in load_full_size() if r["name"] == run_name), None)
    if entry is None:
        raise ValueError(f"unknown run {run_name!r} in notebooks/full_size.yml")
    cfg = config_from_parameters(entry.get("parameters") or {})
    curves = _read_curves(Path(output_dir) / "curves.csv")
    done = set()
    if len(curves):
        last = curves.groupby(["variant", "run_seed"])["epoch"].max()
        done = {(v, int(s)) for (v, s), e in last.items() if e >= cfg.epochs}
    wanted = [(v, s) for s in cfg.run_seeds for v in cfg.variants]
    return [w for w in wanted if w in done], [w for w in wanted if w not in done]


def expressiveness_table(curves):
    """Fig 6 / App G.4: max training accuracy (mean, std over seeds) per variant and training-set size."""
    import pandas as pd

    if not len(curves):
        return pd.DataFrame()
    per = curves.groupby(["dataset", "variant", "train_size", "run_seed"]).train_acc.max().reset_index()
    out = per.groupby(["dataset", "variant", "train_size"]).train_acc.agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"mean": "max_train_acc", "std": "max_train_acc_std", "count": "seeds"})
    out["label"] = out.variant.map(VARIANT_LABELS)
    return out


# -- command line -------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m uhop.experiments.classification train --run NAME [--variants V] [--seeds S]``: train chosen
    variants and run seeds of one ``notebooks/full_size.yml`` classification entry with exactly its settings
    (what the notebook would run), appending to its output folder, skipping finished runs -- for running a
    tier run by run in the background.  The summaries are rewritten after every run."""
    import argparse
    import sys

    from .notebook import add_train_parser, full_size_entry, notebook_path

    parser = argparse.ArgumentParser(prog="python -m uhop.experiments.classification", description=main.__doc__)
    add_train_parser(parser.add_subparsers(dest="command", required=True), "classification")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = dict(full_size_entry(args.run, "classification").get("parameters") or {})
    cfg = config_from_parameters({**params, "device": args.device})
    if args.variants:
        cfg = replace(cfg, variants=tuple(check_choice(v.strip(), "variant", VARIANTS)
                                          for v in args.variants.split(",") if v.strip()))
    if args.seeds:
        cfg = replace(cfg, run_seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()))
    out = notebook_path(params.get("output_dir") or f"../_build/classification/{args.run}")
    run(cfg, out, command=" ".join(["python -m uhop.experiments.classification", *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
