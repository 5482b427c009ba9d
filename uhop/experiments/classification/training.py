"""Training: one variant with one run seed (:func:`train_variant`, Algorithm 2 for the U-Hop variants), the
test-set evaluation, and :func:`run`, which trains every requested run of a configuration into an output
folder and writes its summaries and manifest."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ...models.vision import VARIANT_LABELS, build_model
from ...nn.bilevel import BilevelTrainer
from ...provenance import atomic_write_text, write_manifest, writer_lock
from .analysis import expressiveness_table, summarize
from .config import ClassificationConfig
from .data import ClassificationData, load_data, make_transform
from .store import CURVE_COLUMNS, LOCK_WAIT_S, add_run, check_same_config, read_curves


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
    transform = make_transform(data, cfg.device)
    train_transform = make_transform(data, cfg.device, augment=cfg.augment, seed=run_seed + 7) if cfg.augment else transform

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
    curves = read_curves(curves_path) if resume else pd.DataFrame(columns=CURVE_COLUMNS)
    if len(curves):
        check_same_config(out / "manifest.json", cfg)
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
                curves = add_run(curves_path, rows, variant, run_seed, actual)
    # other processes may be training other runs into the same folder: summarise what is on disk, under its lock
    with writer_lock(curves_path, "classification curves", wait=LOCK_WAIT_S):
        if curves_path.exists():
            curves = read_curves(curves_path)
        _write_summaries(out, curves, cfg, data, command, time.perf_counter() - start, n_train)
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
