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
# # Memory capacity: retrieval error against the number of memories
#
# Figure 3 (left) and Figure 26 of the paper: store $M$ images, corrupt each one into a query
# (50% masked), run one retrieval step with every method and report the per-memory sum of squared
# pixel differences (SSE), averaged over the $M$ queries of a run; the plot shows the mean over
# `runs` runs with error bars of $\pm$ one standard deviation over runs.
#
# The grid runs through `uhop.experiments.retrieval.run_grid`: for each $(M, \text{seed})$
# the memories and queries are drawn once, the baselines run once, and Stage I runs once up to the
# largest $N$ of `epochs`, keeping the kernel at every $N$ of the list. The `protocol` parameter
# selects the paper's protocol (`"paper"`), the official scripts' (`"official"`) or the
# temperature-matched control (`"tuned"`, $\beta$ chosen per method on held-out memories); the
# {doc}`../book/memory_retrieval` chapter describes them and shows the full-size results. The
# defaults are a smoke size that runs in seconds and writes under `_build/`, never into `results/`.

# %% tags=["parameters"]
dataset: str = "mnist"  # image set: "mnist", "cifar10" (the 60k JPEG copy, lossy) or "synthetic"
protocol: str = "paper"  # "paper", "official" or "tuned" (beta chosen on held-out memories)
methods: list = ["mhm", "sparse_mhm", "uhop_mhm", "uhop_sparse_mhm", "dam", "dam_official", "l2", "l2_official", "manhattan", "manhattan_official"]  # methods compared (uhop.experiments.METHODS)
sizes: list = [10, 20, 50]  # memory-set sizes M (Table 4: 10, 20, 30, 50, 100, 200, 500)
epochs: list = [10, 100]  # Stage-I epochs N kept from one run (Table 4: 1, 10, ..., 1000)
plot_epochs: int = 100  # N of the error-vs-M plot (Fig 26: 100 for MNIST, 500 for CIFAR-10)
mask_fraction: float = 0.5  # fraction of each query hidden (the paper: 50%)
runs: int = 2  # runs (seeds seed, seed+1, ...), the paper uses 20
beta: float = 1.0  # inverse temperature (the paper: 1, "tuned" chooses it per method)
beta_grid: list = []  # candidate betas of "tuned" (empty: 1e-2 to 1e4, 4 per decade)
t: float = 2.0  # RBF scale of the separation loss (the paper: 2)
loss: str = ""  # Stage-I loss "avg" or "max", empty: the protocol default
lr: float = 0.0  # Stage-I learning rate, 0: the protocol default (paper 1, official 10)
seed: int = 0  # first seed, run r uses seed + r for memories, queries and kernel init
device: str = "cpu"  # torch device, e.g. "cpu" or "cuda"
threads: int = 1  # torch CPU threads (1 avoids oversubscription on a shared 2-core machine)
jobs: int = 1  # groups (M, seed) computed at a time, one process and one thread each (same results)
output: str = "../_build/results-smoke/retrieval/capacity/mnist_paper.csv"  # results CSV (full size: ../results/...)
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

from uhop.experiments import GridConfig, run_grid
from uhop.experiments import report

start = time.perf_counter()
report.book_style()
config = GridConfig(
    experiment="capacity", dataset=dataset, protocol=protocol, methods=methods, sizes=sizes,
    epochs=epochs, noise=[mask_fraction], seeds=[seed + r for r in range(runs)], corruption="mask",
    beta=beta, t=t, losses=[loss or None], lr=lr or None,
    **({"beta_grid": beta_grid} if beta_grid else {}),
)
path = report.prepare_output(output, resume)
results = run_grid(config, path, device=device, threads=threads, jobs=jobs,
                   command=command or f"papermill notebooks/memory_capacity.py (output={output})")
print(f"{len(results)} rows -> {path}; {results['variant'].iloc[0]!r} copy of {dataset}")

# %% [markdown]
# Error against the number of memories $M$ at $N$ = `plot_epochs` Stage-I epochs (baselines do
# not depend on $N$). The y axis is logarithmic.

# %%
at_n = report.at_epochs(results, plot_epochs if plot_epochs in config.epochs else max(config.epochs))
fig, ax = report.figure(1, 1, height=6.0)
report.lineplot(at_n, x="M", ax=ax[0, 0], logx=True, logy=True,
                title=f"{dataset}, protocol {protocol!r}, N = {plot_epochs}")
report.legend_below(fig, ax[0, 0], ncol=2)  # two columns: ten method names in three stick out of the column
plt.show()

# %%
table = report.mean_table(at_n, "M")   # mean error over runs, one row per method
blank = "; blank: not finite in any run" if table.isna().any(axis=None) else ""
report.table(table, caption="error (SSE per memory), mean over runs" + blank, scroll=True)

# %% [markdown]
# The $\beta$ each method used (for `"tuned"`: chosen on the held-out memories; its median over runs),
# and how concentrated the separation weights were (effective support $= e^{H(p)}$; 1 = one memory).

# %%
report.table(report.mean_table(at_n, "M", value="eff_support"), fmt="{:.2f}",
             caption="effective support, mean over runs", scroll=True)

# %%
beta_used = at_n.groupby(["method", "M"])["beta"].median().unstack()
beta_used = beta_used.loc[[m for m in report.ORDER if m in beta_used.index]].rename(index=report.label)
beta_used.columns = [f"{c:g}" for c in beta_used.columns]
beta_used.columns.name = report.AXIS_LABELS["M"]
report.table(beta_used, fmt="{:.4g}", caption="β used, median over runs; blank: the method has no β", scroll=True)

# %%
# Smoke check: one row per cell of the grid, and finite errors for every corrected method.
assert len(results) == sum(len(config.cells(M, s)) for M, s in config.groups()), len(results)
assert results.loc[~results["method"].str.endswith("_official"), "sse_mean"].notna().all()
print(f"wall time: {time.perf_counter() - start:.1f} s")
