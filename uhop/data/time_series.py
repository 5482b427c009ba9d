"""ETTh1, ETTm1 and WTH: the long-horizon forecasting benchmarks of Informer (Zhou et al., AAAI 2021),
used by STanHop-Net (Wu et al., ICLR 2024) and U-Hop (Wu et al., ICML 2024, Appendix F.5).

The CSVs are read with pandas and never modified or rewritten (ETT is CC BY-ND 4.0); splits, scaling and windows are
computed at run time.

Splits (rows, in time order; ``L`` = ``input_len``; each non-train split starts ``L`` rows early so that its first
window predicts its first own row, as in Informer's ``data_loader.py``):

* ETTh1 (``Dataset_ETT_hour``): train ``[0, 8640)`` (12 months of 30 days x 24 h), val ``[8640 - L, 11520)``
  (4 months), test ``[11520 - L, 14400)`` (4 months).  Rows 14400-17419 are unused, as in Informer.
* ETTm1 (``Dataset_ETT_minute``): the same borders x 4 (15-minute steps): 34560 / 46080 / 57600.
* WTH (``Dataset_Custom``): ``n_train = int(0.7 N)``, ``n_test = int(0.2 N)``, ``n_val = N - n_train - n_test``;
  train ``[0, n_train)``, val ``[n_train - L, n_train + n_val)``, test ``[N - n_test - L, N)``.

``protocol="stanhop"`` gives the row borders of STanHop/Crossformer instead: identical for ETT; WTH
28/10/10 months of 30 x 24 rows (train 20160, val 7200, test 7200; the last 504 rows unused).

Scaling: z-score with the mean and (population, ddof=0) standard deviation of the **train rows only**, per column
(Informer's ``StandardScaler``).  Features (Informer's ``--features``): ``"M"`` all columns in and out, ``"S"`` the
target only, ``"MS"`` all columns in, the target out.  Columns are ordered with the target last (``Dataset_Custom``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .checksums import verify_file
from .errors import DatasetNotFoundError, unknown_name
from .paths import data_root

__all__ = ["TIME_SERIES", "load_time_series", "split_borders", "time_series_splits", "TimeSeriesSplits",
           "SlidingWindowDataset"]

#: name -> (file relative to the data root, default target, Informer dataset class, rows per "month" unit)
TIME_SERIES: dict[str, dict] = {
    "ETTh1": {"rel": "ett/ETT-small/ETTh1.csv", "target": "OT", "kind": "ett", "month": 30 * 24},
    "ETTm1": {"rel": "ett/ETT-small/ETTm1.csv", "target": "OT", "kind": "ett", "month": 4 * 30 * 24},
    "WTH": {"rel": "wth/WTH.csv", "target": "WetBulbCelsius", "kind": "custom", "month": 30 * 24},
}
FEATURES = ("M", "S", "MS")
PROTOCOLS = ("informer", "stanhop")
SPLITS = ("train", "val", "test")


def _canonical_name(name: str) -> str:
    for k in TIME_SERIES:
        if str(name).lower() == k.lower():
            return k
    raise unknown_name("time-series dataset", name, TIME_SERIES)


def _csv_path(name: str, root: Path) -> Path:
    rel = TIME_SERIES[name]["rel"]
    candidates = [root / rel, root / Path(rel).name]
    for p in candidates:
        if p.is_file():
            return verify_file(p, rel)
    raise DatasetNotFoundError(name, candidates,
                               hint=f"Fix: set UHOP_DATA (or root=) to a folder holding {rel} (unmodified). "
                                    "No automatic download is offered for the time-series CSVs.")


def load_time_series(name: str, root=None):
    """Read ``ETTh1``, ``ETTm1`` or ``WTH`` (case-insensitive) as a ``pandas.DataFrame``.

    The file is sha256-checked first.  Columns: ``date`` (datetime64) then the numeric columns in file order
    (ETT: ``HUFL HULL MUFL MULL LUFL LULL OT``; WTH: 12 weather columns ending with ``WetBulbCelsius``), float64.
    Rows: ETTh1 17,420 (hourly), ETTm1 69,680 (15 min), WTH 35,064 (hourly).
    """
    import pandas as pd

    name = _canonical_name(name)
    path = _csv_path(name, data_root(root))
    df = pd.read_csv(path)
    df["date"] = pd.to_datetime(df["date"])
    num = [c for c in df.columns if c != "date"]
    df[num] = df[num].astype("float64")
    return df


def split_borders(name: str, n_rows: int, input_len: int, protocol: str = "informer") -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, end)`` of train/val/test (val and test start ``input_len`` rows early).

    Raises ValueError if ``input_len`` is negative or longer than the training part.
    """
    name = _canonical_name(name)
    if protocol not in PROTOCOLS:
        raise unknown_name("split protocol", protocol, PROTOCOLS)
    if int(input_len) != input_len or input_len < 0:
        raise ValueError(f"input_len must be a non-negative integer, got {input_len!r}")
    spec = TIME_SERIES[name]
    L = int(input_len)
    if spec["kind"] == "ett" or protocol == "stanhop":
        m = spec["month"]
        n_tr, n_va, n_te = ((12 * m, 4 * m, 4 * m) if spec["kind"] == "ett" else (28 * m, 10 * m, 10 * m))
        end = n_tr + n_va + n_te
        if end > n_rows:
            raise ValueError(f"{name} has {n_rows} rows, the {protocol} split needs {end}")
        borders = {"train": (0, n_tr), "val": (n_tr - L, n_tr + n_va), "test": (n_tr + n_va - L, end)}
    else:  # Informer Dataset_Custom: 70 / 10 / 20 %
        n_tr = int(n_rows * 0.7)
        n_te = int(n_rows * 0.2)
        n_va = n_rows - n_tr - n_te
        borders = {"train": (0, n_tr), "val": (n_tr - L, n_tr + n_va), "test": (n_rows - n_te - L, n_rows)}
    if L > borders["train"][1]:
        raise ValueError(f"input_len={L} is longer than the {name} training part ({borders['train'][1]} rows)")
    return borders


@dataclass
class TimeSeriesSplits:
    """Standardised train/val/test arrays of one forecasting dataset.

    ``train``, ``val``, ``test``: float32 ``(T_split, C)`` z-scores (train statistics), columns ``columns`` with the
    target last (``target_index = C - 1``).  ``mean``/``std``: float64 ``(C,)`` train statistics (raw units).
    ``borders``: the row ranges used (see :func:`split_borders`); ``dates``: the matching timestamps.
    """

    name: str
    features: str
    target: str
    columns: list[str]
    input_len: int
    protocol: str
    borders: dict[str, tuple[int, int]]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    dates: dict = field(repr=False, default_factory=dict)

    @property
    def target_index(self) -> int:
        return len(self.columns) - 1

    def split(self, which: str) -> np.ndarray:
        if which not in SPLITS:
            raise unknown_name("split", which, SPLITS)
        return getattr(self, which)

    def inverse_transform(self, x, columns: slice | list[int] | None = None):
        """Undo the z-scoring: ``x * std + mean`` (last axis = columns; ``columns`` selects a subset)."""
        sel = slice(None) if columns is None else columns
        mean, std = self.mean[sel], self.std[sel]
        if isinstance(x, torch.Tensor):
            return x * torch.as_tensor(std, dtype=x.dtype, device=x.device) + torch.as_tensor(mean, dtype=x.dtype,
                                                                                               device=x.device)
        return np.asarray(x) * std + mean

    def dataset(self, which: str, horizon: int) -> "SlidingWindowDataset":
        """Sliding windows over one split: ``x`` = ``input_len`` rows, ``y`` = the next ``horizon`` rows
        (for ``features="MS"`` only the target column)."""
        target = self.target_index if self.features == "MS" else None
        return SlidingWindowDataset(self.split(which), self.input_len, horizon, target_index=target)


def time_series_splits(name: str, input_len: int, features: str = "M", target: str | None = None, root=None,
                       protocol: str = "informer", scale: bool = True) -> TimeSeriesSplits:
    """Load a forecasting dataset and cut the standard splits (see the module docstring for every choice).

    Parameters
    ----------
    name : ``"ETTh1"``, ``"ETTm1"`` or ``"WTH"``.
    input_len : look-back window length ``L`` (Informer's ``seq_len``); ``0`` gives the disjoint splits
        (ETTh1: 8640 / 2880 / 2880 rows).
    features : ``"M"``, ``"S"`` or ``"MS"``.
    target : target column (default ``OT`` for ETT, ``WetBulbCelsius`` for WTH).
    protocol : ``"informer"`` (default) or ``"stanhop"`` (differs for WTH only).
    scale : z-score with train statistics (default True); False keeps raw values (``mean=0``, ``std=1``).
    """
    name = _canonical_name(name)
    if features not in FEATURES:
        raise unknown_name("features mode", features, FEATURES)
    df = load_time_series(name, root)
    cols = [c for c in df.columns if c != "date"]
    target = TIME_SERIES[name]["target"] if target is None else target
    if target not in cols:
        raise unknown_name(f"{name} target column", target, cols)
    cols = [target] if features == "S" else [c for c in cols if c != target] + [target]
    values = df[cols].to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError(f"{name} contains NaN values in columns {cols}")
    borders = split_borders(name, len(df), input_len, protocol)
    a, b = borders["train"]
    if scale:
        mean = values[a:b].mean(axis=0)
        std = values[a:b].std(axis=0)
        std = np.where(std == 0, 1.0, std)
    else:
        mean, std = np.zeros(len(cols)), np.ones(len(cols))
    z = ((values - mean) / std).astype(np.float32)
    parts = {k: z[s:e] for k, (s, e) in borders.items()}
    dates = {k: df["date"].iloc[s:e].reset_index(drop=True) for k, (s, e) in borders.items()}
    return TimeSeriesSplits(name, features, target, cols, int(input_len), protocol, borders, parts["train"],
                            parts["val"], parts["test"], mean, std, dates)


class SlidingWindowDataset(Dataset):
    """All windows of a multivariate series: item ``i`` is ``(x, y)`` with

    * ``x = values[i : i + input_len]`` float32 ``(input_len, C)``,
    * ``y = values[i + input_len : i + input_len + horizon]`` float32 ``(horizon, C)``
      (``(horizon, 1)`` when ``target_index`` is given: that column only).

    ``len = T - input_len - horizon + 1`` (Informer's ``__len__``).  ``values``: array or tensor ``(T, C)``
    (a 1-D series is treated as ``(T, 1)``).  Raises ValueError for non-positive lengths, a window
    (``input_len + horizon``) longer than the series, or NaN/inf values.
    """

    def __init__(self, values, input_len: int, horizon: int, target_index: int | None = None):
        v = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
        v = v.detach().to(torch.float32)
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2:
            raise ValueError(f"values must have shape (T, C), got {tuple(v.shape)}")
        if int(input_len) != input_len or int(horizon) != horizon or input_len < 1 or horizon < 1:
            raise ValueError(f"input_len and horizon must be positive integers, got {input_len!r}, {horizon!r}")
        T = v.shape[0]
        if input_len + horizon > T:
            raise ValueError(f"window input_len + horizon = {input_len} + {horizon} = {input_len + horizon} is longer "
                             f"than the series ({T} rows)")
        if not torch.isfinite(v).all():
            bad = int((~torch.isfinite(v)).any(dim=1).nonzero()[0])
            raise ValueError(f"the series contains NaN/inf values (first at row {bad}); clean or impute it first")
        if target_index is not None and not -v.shape[1] <= target_index < v.shape[1]:
            raise ValueError(f"target_index {target_index} out of range for {v.shape[1]} columns")
        self.values = v.contiguous()
        self.input_len = int(input_len)
        self.horizon = int(horizon)
        self.target_index = None if target_index is None else int(target_index) % v.shape[1]

    def __len__(self) -> int:
        return self.values.shape[0] - self.input_len - self.horizon + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"window index {i} out of range for {n} windows")
        x = self.values[i:i + self.input_len]
        y = self.values[i + self.input_len:i + self.input_len + self.horizon]
        if self.target_index is not None:
            y = y[:, self.target_index:self.target_index + 1]
        return x, y
