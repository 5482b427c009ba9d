# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Image classification with and without U-Hop
#
# This notebook runs the supervised-learning experiment of Section 4.2 of the paper (App F.4, Table 1,
# Fig 6, App G.4-G.5). Images are cut into patches; a learned CLS token is the query (state pattern) of a
# Hopfield layer whose memories (stored patterns) are the patch tokens of the same image (CIFAR), or three
# Hopfield blocks replace the attention of a small ViT (Tiny ImageNet). Four variants are compared:
#
# | variant | separation | similarity |
# |---|---|---|
# | MHM {cite:p}`ramsauer2021hopfield` | softmax | dot product |
# | MHM + U-Hop | softmax | learned kernel, trained by Algorithm 2 |
# | Sparse MHM {cite:p}`hu2023sparse` | sparsemax | dot product |
# | Sparse MHM + U-Hop | sparsemax | learned kernel, trained by Algorithm 2 |
#
# Every variant of a run seed starts from the same weights (the U-Hop feature map starts at the identity)
# and sees the same seeded training subset, in both stages of Algorithm 2. The defaults are a CI smoke size
# (a few hundred images, two epochs): **their numbers mean nothing**. The committed full-size results and
# their discussion are in {doc}`../book/classification`. The output folder receives `curves.csv`,
# `summary.csv`/`summary.json` (Table 1), `expressiveness.csv` (Fig 6) and `manifest.json`.

# %% tags=["parameters"]
dataset: str = "cifar10"  # cifar10, cifar100 (torchvision files only) or tiny_imagenet
variants: str = "mhm,mhm_uhop,sparse,sparse_uhop"  # comma-separated subset of the four variants
preset: str = "smoke"  # hyperparameter preset, one of smoke, cpu, companion, paper (Tables 5-6)
patch_size: int = 0  # patch side in pixels, 0 for the preset value (the paper uses 32, ONE token on CIFAR)
dim: int = 0  # embedding dimension, 0 for the preset value (512 in the paper)
epochs: int = 0  # training epochs, 0 for the preset value (25 in the paper)
batch_size: int = 0  # B_2, task mini-batch size, 0 for the preset value (128 in the paper)
lr: float = 0.0  # Adam learning rate, 0 for the preset value (1e-3 CIFAR and 1e-4 Tiny ImageNet in the paper)
kernel_lr: float = 0.0  # SGD learning rate of the Algorithm 2 inner steps, 0 for the preset value (0.1 in the paper)
inner_steps: int = 1  # N_i, inner separation-loss steps per outer step (not given in the paper)
inner_batch_size: int = 0  # B_1, images per inner step, 0 for batch_size (not given in the paper)
train_sizes: str = "512"  # comma-separated training-set sizes, full for the whole split, several for Fig 6
test_size: int = 512  # size of the seeded test (Tiny ImageNet val) subset, 0 for the whole split
runs: int = 1  # number of run seeds 0 .. runs-1 (model init and batch order)
seed: int = 0  # seed of the training and test subsets (shared by all variants, runs and both stages)
device: str = "cpu"  # torch device, e.g. cpu or cuda
output_dir: str = "../_build/classification_smoke"  # folder for curves, summaries and the manifest
threads: int = 1  # torch CPU threads, 0 for the torch default (1 avoids oversubscribing shared cores)
command: str = ""  # command recorded in the manifest, empty for a papermill call rebuilt from these parameters
architecture: str = "auto"  # auto (App F.4: one-layer CLS classifier on CIFAR, 3-block ViT on Tiny ImageNet), classifier or vit
depth: int = 3  # Hopfield blocks of the ViT architecture
num_heads: int = 0  # Hopfield heads, 0 for the preset value (1 on CIFAR in the official code)
augment: bool = False  # random crop (4-pixel padding) and horizontal flip of the training images
weight_decay: float = 0.0  # Adam weight decay of the task step
checkpoint: bool = False  # save every epoch under output_dir/checkpoints and resume an interrupted run from it

# %%
# papermill ignores unknown parameters; stop on a misspelt one instead of running the defaults
from uhop.experiments.notebook import check_parameters, notebook_path  # noqa: E402

check_parameters(globals())
output_dir = str(notebook_path(output_dir))  # relative to notebooks/, whatever the working directory

import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from matplotlib.ticker import MaxNLocator

from uhop.experiments import classification as cls
from uhop.experiments import report

start = time.perf_counter()
report.book_style()
if threads:
    torch.set_num_threads(threads)
# the one translation of these parameters (shared with `python -m uhop.experiments.classification train`)
cfg = cls.config_from_parameters(dict(
    dataset=dataset, variants=variants, preset=preset, patch_size=patch_size, dim=dim, epochs=epochs,
    batch_size=batch_size, lr=lr, kernel_lr=kernel_lr, inner_steps=inner_steps, inner_batch_size=inner_batch_size,
    train_sizes=train_sizes, test_size=test_size, runs=runs, seed=seed, device=device, architecture=architecture,
    depth=depth, num_heads=num_heads, augment=augment, weight_decay=weight_decay, checkpoint=checkpoint))
n_tokens = ((64 if dataset == "tiny_imagenet" else 32) // cfg.patch_size) ** 2
if n_tokens == 1:
    print(f"patch_size {cfg.patch_size} gives ONE patch token per image: the Hopfield layer retrieves from a single "
          "memory (every separation returns 1) and Algorithm 2 has no pair to separate (its loss is NaN).")
cfg

# %% [markdown]
# Training. U-Hop variants run Algorithm 2: before every Adam step on the cross-entropy, `inner_steps`
# SGD steps on the separation loss of Definition 3.1 update the feature maps only. Runs already present
# in `output_dir` (same settings) are skipped, so an interrupted full-size run can be resumed.

# %%
if not command:
    command = (f"papermill classification.ipynb (cwd notebooks/) -p dataset {dataset} -p preset {preset} "
               f"-p epochs {epochs} -p dim {dim} -p patch_size {patch_size} -p inner_batch_size {inner_batch_size} "
               f"-r train_sizes {train_sizes} -p test_size {test_size} -p runs {runs} -p seed {seed} "
               f"-p device {device} -p output_dir {output_dir} -p architecture {architecture} -p depth {depth} "
               f"-p num_heads {num_heads} -p augment {augment} -p weight_decay {weight_decay}")
curves = cls.run(cfg, output_dir, command=command)
out = Path(output_dir)
summary = pd.read_csv(out / "summary.csv")

# %% [markdown]
# ## Table 1: maximal training accuracy and test accuracy
#
# Mean over run seeds (± standard deviation) at the largest training-set size, next to the paper's Table 1
# (25 epochs, embedding 512, patch 32 on CIFAR; labelled "paper").

# %%
largest = summary[summary.train_size == summary.train_size.max()]


def pm(mean, std):
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


table = pd.DataFrame({
    "model": largest.label,
    ("ours", "max train"): [pm(m, s) for m, s in zip(largest.max_train_acc, largest.max_train_acc_std)],
    ("ours", "final test"): [pm(m, s) for m, s in zip(largest.final_test_acc, largest.final_test_acc_std)],
    ("ours", "best test"): [pm(m, s) for m, s in zip(largest.best_test_acc, largest.best_test_acc_std)],
    ("paper", "max train"): 100 * largest.paper_max_train_acc,
    ("paper", "test"): 100 * largest.paper_test_acc,
}).set_index("model")
table.columns = pd.MultiIndex.from_tuples(table.columns, names=["accuracy (%)", ""])
report.table(table, fmt={("paper", "max train"): "{:.1f}", ("paper", "test"): "{:.1f}"},
             caption=f"{dataset}: {int(largest.train_size.iloc[0])} training images, "
                     f"{int(largest.epochs.iloc[0])} epochs, {int(largest.seeds.iloc[0])} run seed(s)")

# %% [markdown]
# ## Convergence (App G.5)
#
# Per-epoch training and test accuracy and loss (mean over run seeds, error bars = ± one standard deviation) at the
# largest training-set size, and the first epoch at which the training accuracy reaches a threshold.

# %%
largest_curves = curves[curves.train_size == curves.train_size.max()]
fig, axes = report.figure(2, 2, height=5.8, sharex=True)
for ax, col, title in zip(axes.flat, ["train_acc", "test_acc", "train_loss", "test_loss"],
                          ["training accuracy", "test accuracy", "training loss", "test loss"]):
    sns.lineplot(data=largest_curves, x="epoch", y=col, hue="label", errorbar="sd", err_style="bars", marker="o",
                 ax=ax)
    ax.set(title=title, ylabel="")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))   # epochs are whole numbers
report.legend_below(fig, axes[0, 0], ncol=2)
plt.show()
plt.close(fig)
conv = largest.set_index("label")
shown = pd.DataFrame(index=pd.Index(conv.index, name="model"))
for col in [c for c in conv.columns if c.startswith("epochs_to_")]:
    reached = conv[col.replace("epochs_to", "reached")]
    shown[f"first epoch, train acc. {float(col.rsplit('_', 1)[1]):.0%}"] = [
        f"{e:.3g} ({k} of {n} runs)" if k else f"never ({n} runs)" for e, k, n in zip(conv[col], reached, conv.seeds)]
shown["images/s"] = conv.images_per_s
shown["inner steps (% of time)"] = 100 * conv.inner_fraction
report.table(shown, fmt={"images/s": "{:.0f}", "inner steps (% of time)": "{:.0f}"}, wrap=True)

# %% [markdown]
# ## Expressiveness (Fig 6, App G.4)
#
# Maximal training accuracy as the training set grows (only when `train_sizes` lists several sizes).

# %%
expr = pd.read_csv(out / "expressiveness.csv")
if expr.train_size.nunique() > 1:
    fig, ax = report.figure(1, 1, height=4.0)
    ax = ax[0, 0]
    for label, g in expr.groupby("label"):
        ax.errorbar(g.train_size, g.max_train_acc, yerr=g.max_train_acc_std.fillna(0), marker="o", capsize=3,
                    label=label)
    ax.set(xscale="log", xlabel="training-set size", ylabel="max training accuracy", title=f"{dataset}")
    report.legend_below(fig, ax, ncol=2)
    plt.show()
    plt.close(fig)
shown = expr.set_index(["label", "train_size"])[["max_train_acc", "max_train_acc_std", "seeds"]]
shown.index.names = ["model", "training images"]
shown.columns = ["max train acc. (%)", "sd over runs", "runs"]
shown[["max train acc. (%)", "sd over runs"]] *= 100
report.table(shown, fmt={"max train acc. (%)": "{:.1f}", "sd over runs": "{:.1f}", "runs": "{:d}"},
             caption="sd blank: a single run" if (expr.seeds == 1).any() else None)

# %%
# Smoke checks that fail loudly if something is badly wrong.
assert curves.train_acc.between(0, 1).all() and curves.test_acc.between(0, 1).all()
assert set(curves.variant) == set(cfg.variants)
uhop_rows = curves[curves.variant.str.endswith("uhop")]
if len(uhop_rows):
    assert (uhop_rows.inner_seconds > 0).all()
    if cfg.patch_size < (64 if dataset == "tiny_imagenet" else 32):  # several memories per image
        assert uhop_rows.sep_loss_first.notna().all()
plain = curves[~curves.variant.str.endswith("uhop")]
if len(plain):
    assert (plain.inner_seconds == 0).all()
print(f"wall time: {time.perf_counter() - start:.1f} s")
