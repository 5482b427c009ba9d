"""uhop.data time series: ETTh1 / ETTm1 / WTH reading, Informer/STanHop splits, scaling, sliding windows.

Real-data tests need UHOP_DATA (skipped with a visible reason otherwise); window tests use synthetic arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import uhop.data as D
from uhop.data import checksums

DATA = os.environ.get("UHOP_DATA")
needs_data = pytest.mark.skipif(not DATA or not Path(DATA).is_dir(),
                                reason="UHOP_DATA is not set to the data folder: real-data tests skipped")
ETT_COLS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


@pytest.fixture(autouse=True)
def _offline_private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("UHOP_OFFLINE", "1")
    monkeypatch.setenv("UHOP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def frames():
    if not DATA:
        pytest.skip("UHOP_DATA is not set")
    return {n: D.load_time_series(n, root=DATA) for n in ("ETTh1", "ETTm1", "WTH")}


# ------------------------------------------------------------------ reading
@needs_data
def test_read_shapes_columns_dates(frames):
    h, m, w = frames["ETTh1"], frames["ETTm1"], frames["WTH"]
    assert h.shape == (17_420, 8) and m.shape == (69_680, 8) and w.shape == (35_064, 13)
    assert list(h.columns) == ["date"] + ETT_COLS and list(m.columns) == ["date"] + ETT_COLS
    assert w.columns[-1] == "WetBulbCelsius" and w.columns[0] == "date"
    for df, step in ((h, "1h"), (m, "15min"), (w, "1h")):
        assert not df.isna().any().any()
        assert (df["date"].diff().dropna() == pd.Timedelta(step)).all()
    assert str(h["date"].iloc[0]) == "2016-07-01 00:00:00" and str(w["date"].iloc[-1]) == "2013-12-31 23:00:00"


@needs_data
def test_files_are_never_modified(frames):
    for rel in ("ett/ETT-small/ETTh1.csv", "ett/ETT-small/ETTm1.csv", "wth/WTH.csv"):
        assert checksums.file_digest(Path(DATA) / rel) == checksums.KNOWN_FILES[rel].sha256
    D.time_series_splits("ETTh1", 96, root=DATA)
    assert checksums.file_digest(Path(DATA) / "ett/ETT-small/ETTh1.csv") == checksums.KNOWN_FILES[
        "ett/ETT-small/ETTh1.csv"].sha256


@needs_data
def test_etth1_is_ettm1_every_fourth_row(frames):
    h, m = frames["ETTh1"], frames["ETTm1"].iloc[::4].reset_index(drop=True)
    assert len(h) == len(m) and (h["date"] == m["date"]).all()  # timestamps: exactly equal
    diff = np.abs(h[ETT_COLS].to_numpy() - m[ETT_COLS].to_numpy())
    # values: equal up to float formatting in the CSVs (max |diff| 7.1e-15), not bit-identical everywhere
    assert diff.max() < 1e-12
    assert 0.9 < (diff == 0).mean() < 1.0


# ------------------------------------------------------------------ splits
@needs_data
def test_ett_split_sizes():
    s = D.time_series_splits("ETTh1", 0, root=DATA)
    assert s.borders == {"train": (0, 8640), "val": (8640, 11520), "test": (11520, 14400)}
    assert (len(s.train), len(s.val), len(s.test)) == (8640, 2880, 2880)
    s = D.time_series_splits("ETTm1", 0, root=DATA)
    assert (len(s.train), len(s.val), len(s.test)) == (34560, 11520, 11520)
    s = D.time_series_splits("ETTh1", 96, root=DATA)
    assert s.borders == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
    assert (len(s.train), len(s.val), len(s.test)) == (8640, 2976, 2976)
    assert str(s.dates["val"].iloc[96]) == "2017-06-26 00:00:00"  # first own val row = 360 days after the start


@needs_data
def test_wth_split_sizes():
    N = 35_064
    n_tr, n_te = int(0.7 * N), int(0.2 * N)
    n_va = N - n_tr - n_te
    assert (n_tr, n_va, n_te) == (24544, 3508, 7012)
    s = D.time_series_splits("WTH", 168, root=DATA)
    assert s.borders == {"train": (0, n_tr), "val": (n_tr - 168, n_tr + n_va), "test": (N - n_te - 168, N)}
    assert s.columns[-1] == "WetBulbCelsius" and s.train.shape == (n_tr, 12)
    st = D.time_series_splits("WTH", 0, root=DATA, protocol="stanhop")
    assert (len(st.train), len(st.val), len(st.test)) == (20160, 7200, 7200)
    assert D.time_series_splits("ETTh1", 0, root=DATA, protocol="stanhop").borders == \
        D.time_series_splits("ETTh1", 0, root=DATA).borders


@needs_data
def test_standardisation_uses_train_rows_only(frames):
    s = D.time_series_splits("ETTh1", 96, root=DATA)
    raw = frames["ETTh1"][ETT_COLS].to_numpy()
    np.testing.assert_allclose(s.mean, raw[:8640].mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.std, raw[:8640].std(0), rtol=1e-12)  # population std (ddof=0), as Informer
    assert np.abs(s.mean - raw[:14400].mean(0)).max() > 0.1  # not the statistics of all rows
    assert s.train.dtype == np.float32
    np.testing.assert_allclose(s.train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(s.train.std(0), 1, atol=1e-4)
    assert np.abs(s.test.mean(0)).max() > 0.05  # test rows are scaled with train stats, so not centred
    back = s.inverse_transform(s.val)
    np.testing.assert_allclose(back, raw[8544:11520], rtol=1e-5, atol=1e-4)
    back_t = s.inverse_transform(torch.from_numpy(s.val[:5]))
    assert isinstance(back_t, torch.Tensor) and torch.allclose(back_t.double(), torch.from_numpy(raw[8544:8549]),
                                                               atol=1e-4)


@needs_data
def test_features_and_target():
    s = D.time_series_splits("ETTh1", 96, features="S", root=DATA)
    assert s.columns == ["OT"] and s.train.shape == (8640, 1)
    s = D.time_series_splits("ETTh1", 96, features="MS", target="HUFL", root=DATA)
    assert s.columns[-1] == "HUFL" and s.target_index == 6 and len(s.columns) == 7
    x, y = s.dataset("train", 24)[0]
    assert x.shape == (96, 7) and y.shape == (24, 1)
    assert torch.equal(y[:, 0], torch.from_numpy(s.train[96:120, 6]))
    with pytest.raises(ValueError, match="target column 'oil'.*'OT'"):
        D.time_series_splits("ETTh1", 96, target="oil", root=DATA)
    with pytest.raises(ValueError, match="features mode"):
        D.time_series_splits("ETTh1", 96, features="X", root=DATA)
    with pytest.raises(ValueError, match="longer than the ETTh1 training part"):
        D.time_series_splits("ETTh1", 9000, root=DATA)


@needs_data
def test_val_windows_predict_the_val_rows():
    L, H = 96, 48
    s = D.time_series_splits("ETTh1", L, root=DATA)
    full = D.time_series_splits("ETTh1", 0, root=DATA)
    ds = s.dataset("val", H)
    assert len(ds) == 2976 - L - H + 1
    x0, y0 = ds[0]
    assert torch.equal(y0, torch.from_numpy(full.val[:H]))  # the first target is the first val row (8640)
    assert torch.equal(x0, torch.from_numpy(full.train[-L:]))  # its input: the last L train rows
    _, y_last = ds[len(ds) - 1]
    assert torch.equal(y_last, torch.from_numpy(full.val[-H:]))  # the last target ends at row 11519


# ------------------------------------------------------------------ sliding windows (synthetic)
def test_sliding_window_off_by_one():
    T, C, L, H = 20, 3, 5, 4
    v = np.arange(T * C, dtype=np.float64).reshape(T, C)
    ds = D.SlidingWindowDataset(v, L, H)
    assert len(ds) == T - L - H + 1 == 12
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (L, C) and y.shape == (H, C)
    assert torch.equal(x, torch.tensor(v[0:5], dtype=torch.float32))
    assert torch.equal(y, torch.tensor(v[5:9], dtype=torch.float32))
    x, y = ds[len(ds) - 1]
    assert torch.equal(y[-1], torch.tensor(v[-1], dtype=torch.float32))  # last window ends at the last row
    assert torch.equal(ds[-1][0], x)
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert len(D.SlidingWindowDataset(v, 16, 4)) == 1  # window exactly as long as the series
    one = D.SlidingWindowDataset(np.arange(10.0), 3, 2)  # 1-D series -> (T, 1)
    assert one[0][0].shape == (3, 1) and len(one) == 6
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, L, C) and yb.shape == (4, H, C)


def test_sliding_window_errors():
    v = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"5 \+ 6 = 11 is longer than the series \(10 rows\)"):
        D.SlidingWindowDataset(v, 5, 6)
    v[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN.*row 7"):
        D.SlidingWindowDataset(v, 2, 2)
    with pytest.raises(ValueError, match="positive"):
        D.SlidingWindowDataset(np.zeros((10, 2)), 0, 2)
    with pytest.raises(ValueError, match=r"shape \(T, C\)"):
        D.SlidingWindowDataset(np.zeros((2, 3, 4)), 1, 1)
