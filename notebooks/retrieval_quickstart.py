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
# # Quick start: memory retrieval with and without U-Hop
#
# This notebook is the smallest complete experiment of the book. It stores `n_memories` real
# images as memories, hides half of each image's entries, and asks four Hopfield models to
# retrieve the original from the corrupted query in one update step:
#
# | method | similarity | separation |
# |---|---|---|
# | MHM {cite:p}`ramsauer2021hopfield` | dot product | softmax |
# | sparse MHM {cite:p}`hu2023sparse` | dot product | sparsemax |
# | U-Hop + MHM | learned kernel $\mathcal{K}$ | softmax |
# | U-Hop + sparse MHM | learned kernel $\mathcal{K}$ | sparsemax |
#
# U-Hop first runs `epochs` steps of Stage I (separation-loss minimisation on the memories), then
# the same one-step retrieval with the learned kernel. The error is the paper's per-memory
# sum of squared pixel differences. The default parameters are a small size that runs in seconds;
# the full memory-capacity sweep lives in its own notebook.

# %% tags=["parameters"]
dataset: str = "mnist"  # image set the memories come from: "mnist" or "cifar10"
n_memories: int = 50  # M, number of stored memories
epochs: int = 20  # N, Stage-I epochs of separation-loss minimisation
lr: float = 1.0  # Stage-I learning rate (plain SGD; Table 4 of the paper uses 1)
beta: float = 1.0  # inverse temperature inside Sep (the paper uses 1)
t: float = 2.0  # width of the Phi-RBF kernel in the separation loss (the paper uses 2)
mask_fraction: float = 0.5  # fraction of entries zeroed in each query
seed: int = 0  # seed for the memory sample, the mask and the kernel
device: str = "cpu"  # torch device, e.g. "cpu" or "cuda"

# %%
# papermill ignores unknown parameters; stop on a misspelt one instead of running the defaults
from uhop.experiments.notebook import check_parameters, notebook_path  # noqa: E402

check_parameters(globals())

import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

import uhop
from uhop.data import sample_memories
from uhop.experiments import report

start = time.perf_counter()
report.book_style()
torch.manual_seed(seed)
sample = sample_memories(dataset, n_memories, seed=seed)
memories = sample.memories.to(device)
generator = torch.Generator(device="cpu").manual_seed(seed)
queries = uhop.random_mask(memories.cpu(), p=mask_fraction, generator=generator).to(device)
print(f"{dataset} ({sample.variant}): M = {memories.shape[0]} memories of dimension d = {memories.shape[1]}")

# %% [markdown]
# Stage I learns $\mathbf{W}$ of the feature map $\Phi(\mathbf{u}) = \mathbf{W}\mathbf{u}$ on the
# memories; the loss history shows that the mapped memories are pushed apart.

# %%
kernel, history = uhop.fit_kernel(memories, epochs=epochs, lr=lr, t=t, seed=seed)
print(f"separation loss: {history.loss[0]:.4f} -> {history.loss[-1]:.4f} after {epochs} epochs")

# %%
methods = {
    "MHM": dict(separation="softmax"),
    "sparse MHM": dict(separation="sparsemax"),
    "U-Hop + MHM": dict(separation="softmax", kernel=kernel),
    "U-Hop + sparse MHM": dict(separation="sparsemax", kernel=kernel),
}
retrieved = {name: uhop.retrieve(queries, memories, beta=beta, **kw) for name, kw in methods.items()}
errors = {name: uhop.sse(x, memories) for name, x in retrieved.items()}
table = pd.DataFrame(
    {
        "mean SSE": {k: v.mean().item() for k, v in errors.items()},
        "std SSE": {k: v.std().item() for k, v in errors.items()},
    }
)
report.table(table, fmt="{:.3g}")

# %% [markdown]
# The first five memories, their corrupted queries and what each method retrieved:

# %%
shape = sample.image_shape
rows = {"memory": memories, "query": queries, **retrieved}
fig, axes = report.figure(len(rows), 5, height=1.2 * len(rows))
for r, (name, images) in enumerate(rows.items()):
    for c in range(5):
        image = images[c].detach().cpu().clamp(0, 1).reshape(shape).permute(1, 2, 0).squeeze(-1)
        axes[r, c].imshow(image, cmap="gray" if shape[0] == 1 else None, vmin=0, vmax=1)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
plt.show()

# %%
# A smoke check that fails loudly if something is badly wrong: every method must beat
# returning the corrupted query itself.
query_error = uhop.sse(queries, memories).mean().item()
assert all(v.mean().item() < query_error for v in errors.values()), (query_error, table)
print(f"wall time: {time.perf_counter() - start:.1f} s")
