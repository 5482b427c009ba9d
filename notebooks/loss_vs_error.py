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
# # Separation loss against retrieval error
#
# Figure 1 and Figure 7 of the paper: many U-Hop runs with diverse Stage-I settings, each giving
# one point (separation loss of the learned kernel on the memory set, mean retrieval error). The
# paper draws each run's kernel learning rate "in $\mathcal{N}(0, 1)$" and $N$ uniformly in
# $[1, 200]$. A negative learning rate would *ascend* the loss, so each run here uses
# $|z|$, $z \sim \mathcal{N}(0, 1)$ (our reading; the paper does not say). Everything else follows
# the chosen protocol (`"paper"`: average loss, identity init, row-normalised $\mathbf{W}$,
# $\beta = 1$, 50% masked queries).
#
# The separation loss on the x axis is the average loss (Definition 2.2, $t = 2$, distinct pairs,
# normalised features) of the kernel actually used for retrieval, on all $M$ memories. We report
# Pearson's and Spearman's correlation coefficients (Spearman from average ranks, no scipy).

# %% tags=["parameters"]
dataset: str = "mnist"  # image set: "mnist", "cifar10" (the 60k JPEG copy, lossy) or "synthetic"
protocol: str = "paper"  # "paper", "official" or "tuned"
methods: list = ["uhop_mhm"]  # U-Hop variants to run (uhop_mhm and/or uhop_sparse_mhm)
memories: int = 30  # memory-set size M of every run (the paper does not say, full size: 100)
epochs_range: list = [1, 50]  # N is drawn uniformly from this closed range (the paper: [1, 200])
runs: int = 24  # number of runs, each with its own memories, learning rate and N (the paper: 200)
mask_fraction: float = 0.5  # fraction of each query hidden
beta: float = 1.0  # inverse temperature (the paper: 1)
t: float = 2.0  # RBF scale of the separation loss (the paper: 2)
seed: int = 0  # first seed, run r uses seed + r
device: str = "cpu"  # torch device, e.g. "cpu" or "cuda"
threads: int = 1  # torch CPU threads (1 avoids oversubscription on a shared 2-core machine)
jobs: int = 1  # groups (M, seed) computed at a time, one process and one thread each (same results)
output: str = "../_build/results-smoke/retrieval/loss_error/mnist_paper.csv"  # results CSV (full size: ../results/...)
resume: bool = False  # True: keep the cells already in `output`, False: start afresh (only under _build/)
command: str = ""  # command recorded in the manifest (full_size.yml fills it)

# %% tags=["remove-stderr"]
# papermill ignores unknown parameters; stop on a misspelt one instead of running the defaults
from uhop.experiments.notebook import check_parameters, notebook_path  # noqa: E402

check_parameters(globals())
output = str(notebook_path(output))  # relative to notebooks/, whatever the working directory

import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from uhop.experiments import GridConfig, run_grid
from uhop.experiments import report

start = time.perf_counter()
report.book_style()
config = GridConfig(
    experiment="loss_error", dataset=dataset, protocol=protocol, methods=methods, sizes=[memories],
    epochs=epochs_range, noise=[mask_fraction], seeds=[seed + r for r in range(runs)], corruption="mask",
    beta=beta, t=t, stage1_sampling="random",
)
path = report.prepare_output(output, resume)
results = run_grid(config, path, device=device, threads=threads, jobs=jobs,
                   command=command or f"papermill notebooks/loss_vs_error.py (output={output})")
print(f"{len(results)} runs -> {path}; {results['variant'].iloc[0]!r} copy of {dataset}")

# %%
rows = []
for method, part in results.groupby("method"):
    rows.append({"method": report.label(method), "runs": len(part),
                 "Pearson(sep. loss, SSE)": report.pearson(part["sep_loss"], part["sse_mean"]),
                 "Spearman(sep. loss, SSE)": report.spearman(part["sep_loss"], part["sse_mean"]),
                 "Spearman(N, SSE)": report.spearman(part["N"], part["sse_mean"]),
                 "Spearman(lr, SSE)": report.spearman(part["lr"], part["sse_mean"]),
                 "Spearman(eff. support, SSE)": report.spearman(part["eff_support"], part["sse_mean"])})
correlations = pd.DataFrame(rows)
report.table(correlations.set_index("method").T, caption="correlations over runs (one column per method)")

# %%
fig, axes = report.figure(2, 1, height=7.6)
data = results.assign(method=results["method"].map(report.label)).rename(columns={"lr": "learning rate"})
sns.scatterplot(data=data, x="sep_loss", y="sse_mean", hue="N", style="method", palette="viridis", ax=axes[0, 0],
                s=30)
axes[0, 0].set_title(f"{dataset}, M = {memories}, {len(results)} runs")
sns.scatterplot(data=data, x="N", y="sse_mean", hue="learning rate", style="method", palette="magma",
                ax=axes[1, 0], s=30)
axes[1, 0].set_title("the same runs against N")
for ax, x in zip(axes[:, 0], ["sep_loss", "N"]):
    ax.set(xlabel=report.AXIS_LABELS[x], ylabel=report.AXIS_LABELS["sse_mean"])
    sns.move_legend(ax, "center left", bbox_to_anchor=(1.02, 0.5))
plt.show()

# %%
# Smoke check: one row per run and method, each with its own N in the range and a positive lr.
assert len(results) == runs * len(methods), len(results)
assert results["N"].between(*epochs_range).all() and (results["lr"] > 0).all()
print(f"wall time: {time.perf_counter() - start:.1f} s")
