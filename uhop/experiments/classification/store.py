"""The output folder's ``curves.csv`` (one row per training run and epoch): reading it, adding a finished
run's rows under the folder's writer lock, and refusing a folder whose runs were made with other settings."""

from __future__ import annotations

import json
from pathlib import Path

from ...provenance import atomic_write_text, writer_lock
from .config import ClassificationConfig

#: The columns of ``curves.csv``.
CURVE_COLUMNS = ["dataset", "data_variant", "variant", "label", "run_seed", "train_size", "epoch", "train_loss",
                 "train_acc", "test_loss", "test_acc", "sep_loss_first", "sep_loss_last", "seconds",
                 "inner_seconds", "outer_seconds", "images_per_s"]


def load_folder(folder):
    """``(curves, summary, manifest)`` of a results folder (``curves.csv``, ``summary.csv``, ``manifest.json``) as two
    DataFrames and a dict; ``FileNotFoundError`` naming every missing file otherwise."""
    import pandas as pd

    folder = Path(folder)
    files = [folder / name for name in ("curves.csv", "summary.csv", "manifest.json")]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found")
    return pd.read_csv(files[0]), pd.read_csv(files[1]), json.loads(files[2].read_text())


def read_curves(path: Path):
    """``curves.csv`` at ``path`` as a DataFrame; an empty one with :data:`CURVE_COLUMNS` when the file is missing
    or empty."""
    import pandas as pd

    if path.exists() and path.stat().st_size > 0:
        return pd.read_csv(path)
    return pd.DataFrame(columns=CURVE_COLUMNS)


#: How long a writer waits for another process's write of the same folder (a write takes well under a second).
LOCK_WAIT_S = 600.0


def add_run(curves_path: Path, rows: list[dict], variant: str, run_seed: int, train_size: int):
    """Add one finished run's rows to ``curves.csv``: under an exclusive lock, the file is read again just before
    the write, so processes training different runs into one folder never drop each other's rows (a process
    holding an old copy would)."""
    import pandas as pd

    with writer_lock(curves_path, "classification curves", wait=LOCK_WAIT_S):
        curves = read_curves(curves_path)
        if len(curves):
            curves = curves[~((curves.variant == variant) & (curves.run_seed == run_seed)
                              & (curves.train_size == train_size))]
        new = pd.DataFrame(rows, columns=CURVE_COLUMNS)
        curves = new if not len(curves) else pd.concat([curves, new], ignore_index=True)
        atomic_write_text(curves_path, curves.to_csv(index=False))
    return curves


# Parameters that may differ between calls writing into the same folder (they do not change a run's result,
# or select which runs are made).
RESUME_FREE = {"variants", "run_seeds", "train_sizes", "device", "progress", "checkpoint", "eval_batch_size"}


def check_same_config(manifest: Path, cfg: ClassificationConfig) -> None:
    """Refuse (``ValueError``) to add runs of ``cfg`` to a folder whose ``manifest`` records other settings (all
    but :data:`RESUME_FREE`)."""
    if not manifest.exists():
        return
    old = json.loads(manifest.read_text()).get("parameters", {})
    new = json.loads(json.dumps(cfg.as_dict()))
    diff = sorted(k for k in new if k not in RESUME_FREE and k in old and old[k] != new[k])
    if diff:
        raise ValueError(f"{manifest.parent} holds runs made with different settings ({', '.join(diff)}: "
                         f"{[old[k] for k in diff]} vs {[new[k] for k in diff]}); use another output folder "
                         "or resume=False")
