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
# # Noise robustness: retrieval error against the noise level
#
# Figure 3 (right) of the paper: each query is its memory plus Gaussian noise, and the error of one
# retrieval step is reported against the noise level $\sigma$ (Table 4's levels 0 to 2). Two noise
# definitions exist (Appendix F.3 and the official scripts): `noise_mode="total_norm"` adds a
# Gaussian vector rescaled to norm $\sigma$ (the paper's text), `"per_entry"` adds
# $\mathcal{N}(0, \sigma^2)$ to every pixel (`memory_retrieval_noise.py`); both return
# $\mathrm{clamp}(|\mathbf{x} + \mathbf{n}|, 0, 1)$. A total norm of 2 on 784 pixels is a per-pixel
# standard deviation of about 0.07, so the two axes are not comparable.
#
# The same Gaussian draw is reused at every level of a run (common random numbers), so each curve
# varies only $\sigma$. U-Hop's Stage I runs once per $(M, \text{seed})$ (the paper: $N = 100$ for
# MNIST, $200$ for CIFAR-10). Plot: mean over runs with error bars of $\pm$ one standard deviation over runs.

# %% tags=["parameters"]
dataset: str = "mnist"  # image set: "mnist", "cifar10" (the 60k JPEG copy, lossy) or "synthetic"
protocol: str = "paper"  # "paper", "official" or "tuned" (beta chosen on held-out memories)
methods: list = ["mhm", "sparse_mhm", "uhop_mhm", "uhop_sparse_mhm", "dam", "dam_official", "l2", "l2_official", "manhattan", "manhattan_official"]  # methods compared (uhop.experiments.METHODS)
memories: int = 50  # memory-set size M (the official noise scripts: 100)
epochs: int = 20  # Stage-I epochs N (the paper: 100 for MNIST, 200 for CIFAR-10)
noise_levels: list = [0.0, 0.1, 0.5, 1.0, 2.0]  # sigma (Table 4: 0, .01, .05, .1, .3, .5, .7, 1, 1.2, 1.4, 2)
noise_mode: str = "total_norm"  # "total_norm" (noise vector of norm sigma) or "per_entry" (std sigma per pixel)
runs: int = 2  # runs (seeds seed, seed+1, ...), the paper uses 20
beta: float = 1.0  # inverse temperature (the paper: 1, "tuned" chooses it per method)
t: float = 2.0  # RBF scale of the separation loss (the paper: 2)
loss: str = ""  # Stage-I loss "avg" or "max", empty: the protocol default
lr: float = 0.0  # Stage-I learning rate, 0: the protocol default
seed: int = 0  # first seed, run r uses seed + r for memories, noise and kernel init
device: str = "cpu"  # torch device, e.g. "cpu" or "cuda"
threads: int = 1  # torch CPU threads (1 avoids oversubscription on a shared 2-core machine)
jobs: int = 1  # groups (M, seed) computed at a time, one process and one thread each (same results)
output: str = "../_build/results-smoke/retrieval/noise/mnist_paper.csv"  # results CSV (full size: ../results/...)
resume: bool = False  # True: keep the cells already in `output`, False: start afresh (only under _build/)
command: str = ""  # command recorded in the manifest (full_size.yml fills it)

# %% tags=["remove-stderr"]
# papermill ignores unknown parameters; stop on a misspelt one instead of running the defaults
from uhop.experiments.notebook import check_parameters, notebook_path  # noqa: E402

check_parameters(globals())
output = str(notebook_path(output))  # relative to notebooks/, whatever the working directory

import time

import matplotlib.pyplot as plt

from uhop.experiments import GridConfig, run_grid
from uhop.experiments import report

start = time.perf_counter()
report.book_style()
config = GridConfig(
    experiment="noise", dataset=dataset, protocol=protocol, methods=methods, sizes=[memories],
    epochs=[epochs], noise=noise_levels, seeds=[seed + r for r in range(runs)], corruption="noise",
    noise_mode=noise_mode, beta=beta, t=t, losses=[loss or None], lr=lr or None,
)
path = report.prepare_output(output, resume)
results = run_grid(config, path, device=device, threads=threads, jobs=jobs,
                   command=command or f"papermill notebooks/noise_robustness.py (output={output})")
print(f"{len(results)} rows -> {path}; {results['variant'].iloc[0]!r} copy of {dataset}")

# %%
fig, ax = report.figure(1, 1, height=6.0)
report.lineplot(results, x="noise", ax=ax[0, 0], logy=True,
                title=f"{dataset}, protocol {protocol!r}, M = {memories}, N = {epochs}")
ax[0, 0].set_xlabel(f"noise level σ ({noise_mode.replace('_', ' ')})")
report.legend_below(fig, ax[0, 0], ncol=2)  # two columns: ten method names in three stick out of the column
plt.show()

# %%
table = report.mean_table(results, "noise")   # mean error over runs, one row per method
blank = "; blank: not finite in any run" if table.isna().any(axis=None) else ""
report.table(table, caption="error (SSE per memory), mean over runs" + blank, scroll=True)

# %%
# Smoke check: one row per cell, and finite errors for every corrected method.
assert len(results) == sum(len(config.cells(M, s)) for M, s in config.groups()), len(results)
assert results.loc[~results["method"].str.endswith("_official"), "sse_mean"].notna().all()
print(f"wall time: {time.perf_counter() - start:.1f} s")
