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
# # Forecasting with STanHop-Net, with and without U-Hop
#
# This notebook trains and tests the forecasting variants of Section 4.2 / Appendix F.5 of the paper
# {cite:p}`wu2024uniform` on one dataset and horizon:
#
# | variant | model | training |
# |---|---|---|
# | `stanhop` | STanHop-Net {cite:p}`wu2024stanhop` (our construction, see the chapter *Time-series forecasting*) | Adam on the task loss |
# | `stanhop_uhop` | the same network, every Hopfield layer kernelized by a learnable $\Phi$ | Algorithm 2: SGD on the separation loss of each layer's stored patterns (kernel only), then Adam on the task loss |
# | `persistence` | repeat the last observed value | none |
# | `linear` | one `Linear(input_len -> horizon)` shared by all channels | Adam on the task loss |
#
# Data: the standard splits of Informer {cite:p}`zhou2021informer` / STanHop, z-scored with training
# statistics; MSE and MAE on the standardised scale over the test windows. The **defaults are a smoke size**
# (tiny model, a few dozen windows, one epoch, a subsample of the test split) that runs in seconds on a CPU:
# their numbers are *not* results. The paper's settings (Table 7) are `d_model=256, n_heads=4, d_ff=512,
# factor=10, epochs=50, patience=25, batch_size=16, lr=1e-4, kernel_lr=0.1` with all windows (`0` for the
# three `max_*` parameters); the chapter lists the exact commands.

# %% tags=["parameters"]
dataset: str = "ETTh1"  # "ETTh1", "ETTm1" or "WTH"
horizon: int = 96  # forecast length (the paper: 96, 192, 336, 720); 1 STanHop block up to 192, 2 above
variants: str = "stanhop,stanhop_uhop,persistence,linear"  # comma-separated subset of the four variants
input_len: int = 96  # look-back window length (not stated in the paper)
epochs: int = 1  # maximum training epochs (paper: 50)
patience: int = 25  # early-stopping patience in epochs on the validation loss (paper: 25; 0 disables)
batch_size: int = 16  # training batch size (paper: 16)
lr: float = 1e-4  # Adam learning rate of the task loss (paper: 1e-4)
lr_decay: float = 1.0  # learning-rate factor applied after every epoch (1 keeps it constant, as the paper states)
loss: str = "mae"  # task loss, "mae" (App F.5) or "mse" (official STanHop code)
kernel_lr: float = 0.1  # SGD learning rate of U-Hop's inner separation-loss steps (paper: 0.1)
inner_steps: int = 1  # inner separation-loss steps per outer step (N_i of Algorithm 2; not stated)
inner_batch_size: int = 0  # Stage-I batch B_1 of Algorithm 2 (0 means batch_size, the paper's one batch size)
d_model: int = 16  # embedding dimension (paper: 256)
n_heads: int = 2  # Hopfield heads (official code: 4)
d_ff: int = 32  # MLP width (official code: 512)
factor: int = 3  # learned pooling patterns of the cross-series layer (official code: 10)
dropout: float = 0.3  # dropout (official example config: 0.3)
max_train_windows: int = 48  # training windows per epoch, a fixed random subset (0 means all)
max_val_windows: int = 48  # validation windows, evenly spaced (0 means all)
max_test_windows: int = 192  # test windows, evenly spaced (0 means the full test split, as in the paper)
epoch_windows: int = 0  # training windows per epoch as a fresh random sample each epoch (0 means every window)
eval_batch_size: int = 256  # windows per evaluation batch (does not change the metrics; 64 is faster at long horizons on a CPU)
seed: int = 0  # first run seed (model initialisation, batch order)
n_seeds: int = 1  # number of seeds: seed, seed + 1, ...
threads: int = 1  # torch CPU threads (0 means torch's default), 1 is fastest for tiny models on a shared CPU
out_dir: str = "../_build/forecasting/smoke"  # where run results (JSON + manifest) and the summary go
checkpoint_dir: str = "../_build/forecasting/checkpoints"  # last.pt and best.pt per run for resuming, empty string for none
device: str = "cpu"  # torch device, e.g. "cpu" or "cuda"

# %% tags=["remove-stderr"]
# papermill ignores unknown parameters; stop on a misspelt one instead of running the defaults
from uhop.experiments.notebook import check_parameters, notebook_path  # noqa: E402

check_parameters(globals())
out_dir = str(notebook_path(out_dir))  # relative to notebooks/, whatever the working directory
checkpoint_dir = str(notebook_path(checkpoint_dir)) if checkpoint_dir else ""

import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

from uhop.experiments import forecasting as fc
from uhop.experiments import report
from uhop.allocator import retain_freed_memory
from uhop.provenance import atomic_write_text, write_manifest

start = time.perf_counter()
report.book_style()
if threads:
    torch.set_num_threads(threads)
if device == "cpu":
    retain_freed_memory()  # keep freed blocks mapped: same numbers, fewer page faults (uhop/allocator.py)
parameters = dict(
    dataset=dataset, horizon=horizon, variants=variants, input_len=input_len, epochs=epochs, patience=patience,
    batch_size=batch_size, lr=lr, lr_decay=lr_decay, loss=loss, kernel_lr=kernel_lr, inner_steps=inner_steps,
    inner_batch_size=inner_batch_size,
    d_model=d_model, n_heads=n_heads, d_ff=d_ff, factor=factor, dropout=dropout, max_train_windows=max_train_windows,
    max_val_windows=max_val_windows, max_test_windows=max_test_windows, epoch_windows=epoch_windows,
    eval_batch_size=eval_batch_size, seed=seed, n_seeds=n_seeds)
# the one translation of these parameters into run configurations (shared with `python -m
# uhop.experiments.forecasting train`, so a background run and this notebook produce the same run keys)
base, chosen, seeds = fc.config_from_parameters(parameters)
print(f"{dataset}, horizon {horizon}, input {input_len}; variants {chosen}; seeds {seeds[0]}..{seeds[-1]}")
results = fc.run(base, chosen, seeds, device=device, out_dir=out_dir, checkpoint_dir=checkpoint_dir or None,
                 progress=True)

# %% [markdown]
# ## Test metrics of this run
#
# One row per variant and seed. `windows/s` is the training throughput (U-Hop's includes its inner
# steps); `best epoch` is the epoch whose validation loss was lowest (its weights were tested).

# %%
rows = []
for r in results:
    c = r["config"]
    rows.append({"variant": fc.VARIANT_LABELS[c["variant"]], "seed": c["seed"], "test MSE": r["test_mse"],
                 "test MAE": r["test_mae"], "epochs": r["epochs_run"], "best epoch": r["best_epoch"],
                 "s/epoch": r["seconds_per_epoch"], "windows/s": r["train_windows_per_s"],
                 "test windows": r["windows"]["test"]})
table = pd.DataFrame(rows).set_index("variant")
full_test = all(r["windows"]["test"] == r["windows"]["test_available"] for r in results)
if not full_test:
    r = results[0]["windows"]
    print(f"Tested on {r['test']} evenly spaced windows of the {r['test_available']} in the test split "
          "(a subsample: the CPU tier and smoke runs; the chapter measures what this changes).")
notes = ["blank: not trained (persistence)"] if table["best epoch"].isna().any() else []
for col in ("seed", "test windows"):
    if table[col].nunique() == 1:   # the same in every row: say it once
        notes.insert(0, f"{col} {table.pop(col).iloc[0]}")
report.table(table, fmt={"seed": "{:d}", "test MSE": "{:.4f}", "test MAE": "{:.4f}", "epochs": "{:d}",
                          "best epoch": "{:.0f}", "s/epoch": "{:.2f}", "windows/s": "{:.0f}", "test windows": "{:d}"},
             caption="; ".join(notes) or None)

# %% [markdown]
# The paper's Table 8 entry for the same dataset and horizon (its numbers, not ours; multivariate, standardised):

# %%
paper = fc.PAPER_TABLE8.get((dataset, horizon))
if paper is None:
    print(f"Table 8 has no entry for {dataset}, horizon {horizon}.")
else:
    display(report.table(pd.DataFrame({fc.VARIANT_LABELS[k]: {"MSE": v[0], "MAE": v[1]} for k, v in paper.items()}).T,
                         fmt="{:.3f}", caption=f"paper, Table 8: {dataset}, horizon {horizon}"))

# %% [markdown]
# ## Validation curves and U-Hop's separation loss

# %%
trained = [r for r in results if r["history"]]
if trained:
    fig, axes = report.figure(2, 1, height=6.2, sharex=True)
    for i, r in enumerate(trained):
        c, epoch = r["config"], [h["epoch"] for h in r["history"]]
        label = f"{fc.VARIANT_LABELS[c['variant']]} (seed {c['seed']})"
        axes[0, 0].plot(epoch, [h["val_mse"] for h in r["history"]], "o-", color=f"C{i}", label=label)
        if c["variant"] == "stanhop_uhop":   # same colour per run in both panels
            axes[1, 0].plot(epoch, [h["sep_loss_last"] for h in r["history"]], "o-", color=f"C{i}", label=label)
    axes[0, 0].set(ylabel="validation MSE", title="validation MSE")
    axes[1, 0].set(xlabel="epoch", ylabel="separation loss", title="U-Hop: separation loss (Def. 3.1), last inner step")
    axes[1, 0].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))   # epochs are whole numbers
    last = max(h["epoch"] for r in trained for h in r["history"])
    axes[1, 0].set_xlim(0.5, last + 0.5)
    report.legend_below(fig, axes[0, 0], ncol=2)
    plt.show()

# %%
out = Path(out_dir)
summary = fc.summarize(results)
atomic_write_text(out / f"summary_{dataset}_h{horizon}.csv", summary.to_csv(index=False))
write_manifest(out / f"summary_{dataset}_h{horizon}.csv.manifest.json", command="notebooks/forecasting.py",
               parameters={**parameters, "threads": threads}, wall_time_s=time.perf_counter() - start, device=device,
               extra={"runs": [r["key"] for r in results], "full_test_split": full_test})
print(f"wrote {len(results)} run(s) and the summary to {out.resolve()} in {time.perf_counter() - start:.1f} s")
