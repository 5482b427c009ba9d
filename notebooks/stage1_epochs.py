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
# # Stage-I epochs: retrieval error and separation loss against N, average against max loss
#
# Figure 5 (error against the number $N$ of Stage-I epochs), and Figure 8 / Appendix G.2 (the
# average separation loss of Definition 2.2 against the worst-pair "max" loss that the official
# scripts use): for each $(M, \text{seed})$ Stage I runs once per loss up to the largest $N$, and
# the kernel at every $N$ of `epochs` is used for one retrieval step on 50%-masked queries.
# Baselines (no Stage I) appear as flat lines. Plots: mean over runs $\pm$ one standard deviation
# over runs.

# %% tags=["parameters"]
dataset: str = "mnist"  # image set: "mnist", "cifar10" (the 60k JPEG copy, lossy) or "synthetic"
protocol: str = "paper"  # "paper", "official" or "tuned"
methods: list = ["mhm", "uhop_mhm", "uhop_sparse_mhm"]  # methods compared (uhop.experiments.METHODS)
sizes: list = [20, 50]  # memory-set sizes M
epochs: list = [0, 1, 10, 20, 50]  # Stage-I epochs N (Table 4: 1, 10, 20, 50, 100, 200, 500, 1000)
losses: list = ["avg", "max"]  # Stage-I losses compared (App G.2)
mask_fraction: float = 0.5  # fraction of each query hidden
runs: int = 2  # runs (seeds seed, seed+1, ...), the paper uses 20
beta: float = 1.0  # inverse temperature (the paper: 1)
t: float = 2.0  # RBF scale of the separation loss (the paper: 2)
lr: float = 0.0  # Stage-I learning rate, 0: the protocol default (paper 1)
seed: int = 0  # first seed, run r uses seed + r
device: str = "cpu"  # torch device, e.g. "cpu" or "cuda"
threads: int = 1  # torch CPU threads (1 avoids oversubscription on a shared 2-core machine)
jobs: int = 1  # groups (M, seed) computed at a time, one process and one thread each (same results)
output: str = "../_build/results-smoke/retrieval/epochs/mnist_paper.csv"  # results CSV (full size: ../results/...)
resume: bool = False  # True: keep the cells already in `output`, False: start afresh (only under _build/)
command: str = ""  # command recorded in the manifest (full_size.yml fills it)

# %% tags=["remove-stderr"]
# papermill ignores unknown parameters; stop on a misspelt one instead of running the defaults
from uhop.experiments.notebook import check_parameters, notebook_path  # noqa: E402

check_parameters(globals())
output = str(notebook_path(output))  # relative to notebooks/, whatever the working directory

import time

import matplotlib.pyplot as plt
import seaborn as sns

from uhop.experiments import GridConfig, run_grid
from uhop.experiments import report

start = time.perf_counter()
report.book_style()
config = GridConfig(
    experiment="epochs", dataset=dataset, protocol=protocol, methods=methods, sizes=sizes, epochs=epochs,
    noise=[mask_fraction], seeds=[seed + r for r in range(runs)], corruption="mask", beta=beta, t=t,
    losses=losses, lr=lr or None,
)
path = report.prepare_output(output, resume)
results = run_grid(config, path, device=device, threads=threads, jobs=jobs,
                   command=command or f"papermill notebooks/stage1_epochs.py (output={output})")
print(f"{len(results)} rows -> {path}; {results['variant'].iloc[0]!r} copy of {dataset}")

# %% [markdown]
# Retrieval error against $N$, one panel per $M$ (solid: average loss, dashed: max loss; the x
# axis is symmetric-log so that $N = 0$, U-Hop before any training, is shown).

# %%
uhop_rows = results[results["N"].notna()]
curves = report.expand_baselines(results, sorted(uhop_rows["N"].unique()))
LOSSES = {"avg": "average", "max": "max (worst pair)"}
curves = curves.assign(**{"Stage-I loss": curves["loss"].map(LOSSES).fillna("none (baseline)")})
fig, axes = report.figure(len(config.sizes), 1, height=3.4 * len(config.sizes), sharex=True)
for ax, M in zip(axes[:, 0], config.sizes):
    report.lineplot(curves[curves["M"] == M], x="N", y="sse_mean", style="Stage-I loss", ax=ax, logy=True,
                    title=f"{dataset}, M = {M}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xticks(config.epochs, [f"{n:g}" for n in config.epochs])
report.legend_below(fig, axes[0, 0], ncol=3)
plt.show()

# %% [markdown]
# The separation losses of the kernels against $N$: the average loss (Definition 2.2) and the
# worst-pair loss, both evaluated on all $M$ memories whichever loss Stage I minimised.

# %%
kern = uhop_rows[uhop_rows["method"] == uhop_rows["method"].iloc[0]]
kern = kern.assign(**{"memories M": kern["M"].astype(int).astype(str), "Stage-I loss": kern["loss"].map(LOSSES)})
fig, axes = report.figure(2, 1, height=6.4, sharex=True)
for ax, value, name in zip(axes[:, 0], ["sep_loss", "sep_loss_max"], ["average loss", "max (worst-pair) loss"]):
    sns.lineplot(data=kern, x="N", y=value, hue="memories M", style="Stage-I loss", errorbar="sd", err_style="bars",
                 hue_order=[str(m) for m in config.sizes], marker="o", ax=ax)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xticks(config.epochs, [f"{n:g}" for n in config.epochs])
    ax.set(title=f"{name} of the learned kernel", ylabel=name, xlabel=report.AXIS_LABELS["N"])
report.legend_below(fig, axes[0, 0], ncol=3)
plt.show()

# %%
shown = report.summary(uhop_rows, ["method", "loss", "M", "N"])
shown.columns = ["method", "Stage-I loss", "M", "N", "mean error", "sd over runs", "runs"]
shown["Stage-I loss"] = shown["Stage-I loss"].map(LOSSES)
report.table(shown, fmt={"M": "{:g}", "N": "{:g}", "mean error": "{:.3g}", "sd over runs": "{:.3g}"}, index=False,
             scroll=True)

# %%
# Smoke check: one row per cell; U-Hop at N = 0 (identity kernel) equals MHM under "paper".
assert len(results) == sum(len(config.cells(M, s)) for M, s in config.groups()), len(results)
if protocol == "paper" and 0 in config.epochs and "mhm" in methods and "uhop_mhm" in methods:
    a = results[(results["method"] == "uhop_mhm") & (results["N"] == 0)].groupby(["M", "seed", "loss"])["sse_mean"].first()
    b = results[results["method"] == "mhm"].set_index(["M", "seed"])["sse_mean"]
    assert all(abs(v - b[(M, s)]) <= 1e-4 * (1 + b[(M, s)]) for (M, s, _), v in a.items())
print(f"wall time: {time.perf_counter() - start:.1f} s")
