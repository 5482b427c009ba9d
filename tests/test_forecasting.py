"""The forecasting loop (uhop.experiments.forecasting): bad input, resume, baselines on real ETTh1.

Synthetic splits (a few sines) keep the loop tests independent of the data files; the real-data checks run
when UHOP_DATA holds ETTh1 and are skipped otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from uhop.data import TimeSeriesSplits
from uhop.experiments.forecasting import (PAPER_TABLE8, ForecastConfig, LinearForecaster, Persistence, load_results,
                                          continue_shorter_run, summarize, train_forecaster)

TINY = dict(d_model=16, n_heads=2, d_ff=32, factor=3, dropout=0.1, input_len=24, horizon=12, batch_size=8,
            eval_batch_size=64, lr=3e-3)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is much faster (tests/conftest.py)


def synthetic_splits(n=(200, 80, 80), channels=3, input_len=24, name="ETTh1", nan=False) -> TimeSeriesSplits:
    total = sum(n)
    t = np.arange(total + 2 * input_len, dtype=np.float64)[:, None]
    values = np.sin(t / (4.0 + np.arange(channels))) + 0.05 * np.random.default_rng(0).standard_normal(
        (len(t), channels))
    values = values.astype(np.float32)
    if nan:
        values[5, 0] = np.nan
    a, b = n[0], n[0] + n[1]
    parts = {"train": values[:a], "val": values[a - input_len:b], "test": values[b - input_len:total]}
    cols = [f"c{i}" for i in range(channels)]
    return TimeSeriesSplits(name, "M", cols[-1], cols, input_len, "stanhop",
                            {"train": (0, a), "val": (a - input_len, b), "test": (b - input_len, total)},
                            parts["train"], parts["val"], parts["test"], np.zeros(channels), np.ones(channels))


def has_ett() -> bool:
    root = os.environ.get("UHOP_DATA")
    return bool(root) and os.path.exists(os.path.join(root, "ett", "ETT-small", "ETTh1.csv"))


needs_ett = pytest.mark.skipif(not has_ett(), reason="UHOP_DATA does not hold ETTh1")


# -- bad input ------------------------------------------------------------------------------------------------

def test_unknown_dataset_and_variant():
    with pytest.raises(ValueError, match="(?i)ETTh1"):
        train_forecaster(ForecastConfig(dataset="ETTh3", variant="persistence"), progress=False)
    with pytest.raises(ValueError, match="variant"):
        ForecastConfig(variant="transformer")
    with pytest.raises(ValueError, match="loss"):
        ForecastConfig(loss="huber")


def test_horizon_longer_than_split():
    splits = synthetic_splits(n=(200, 30, 80))
    cfg = ForecastConfig(variant="persistence", input_len=24, horizon=48)
    with pytest.raises(ValueError, match="val split .* too short"):
        train_forecaster(cfg, splits=splits, progress=False)


def test_nan_in_series():
    splits = synthetic_splits(nan=True)
    with pytest.raises(ValueError, match="NaN"):
        train_forecaster(ForecastConfig(variant="persistence", input_len=24, horizon=12), splits=splits,
                         progress=False)


def test_splits_must_match_config():
    with pytest.raises(ValueError, match="do not match"):
        train_forecaster(ForecastConfig(variant="persistence", input_len=48, horizon=12), splits=synthetic_splits(),
                         progress=False)
    # the protocol too: uhop.data's default protocol ("informer") cuts WTH differently from the config's
    # default ("stanhop"); such splits were once accepted silently
    informer = dataclasses.replace(synthetic_splits(), protocol="informer")
    with pytest.raises(ValueError, match="protocol"):
        train_forecaster(ForecastConfig(variant="persistence", input_len=24, horizon=12), splits=informer,
                         progress=False)


@needs_ett
def test_bad_input_on_real_data():
    with pytest.raises(ValueError, match="target"):
        train_forecaster(ForecastConfig(variant="persistence", target="XYZ"), progress=False)
    with pytest.raises(ValueError, match="input_len"):
        train_forecaster(ForecastConfig(variant="persistence", input_len=9000), progress=False)
    with pytest.raises(ValueError, match="too short"):
        train_forecaster(ForecastConfig(variant="persistence", input_len=96, horizon=3000), progress=False)


# -- baselines -------------------------------------------------------------------------------------------------

def test_baseline_modules():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    out = Persistence(4)(x)
    assert out.shape == (2, 4, 3) and torch.equal(out, x[:, -1:, :].expand(-1, 4, -1))
    lin = LinearForecaster(5, 4)
    assert lin(x).shape == (2, 4, 3)
    assert sum(p.numel() for p in lin.parameters()) == 5 * 4 + 4  # shared by the channels


@needs_ett
def test_persistence_and_linear_sane_on_etth1():
    # Persistence ("Repeat") on ETTh1-96 is a published number: MSE 1.295, MAE 0.713 (Zeng et al., 2023).
    p = train_forecaster(ForecastConfig(variant="persistence"), progress=False)
    assert p["windows"]["test"] == 2785
    assert abs(p["test_mse"] - 1.295) < 0.01 and abs(p["test_mae"] - 0.713) < 0.01, p
    lin = train_forecaster(ForecastConfig(variant="linear", epochs=2, lr=1e-3, batch_size=32, max_train_windows=3000,
                                          max_val_windows=500, loss="mse"), progress=False)
    assert 0.3 < lin["test_mse"] < 0.6 and lin["test_mae"] < 0.55, lin
    assert lin["test_mse"] < p["test_mse"] and lin["test_mae"] < p["test_mae"]


# -- the loop ------------------------------------------------------------------------------------------------------

def test_training_reduces_validation_error_and_writes_results(tmp_path):
    splits = synthetic_splits()
    cfg = ForecastConfig(variant="stanhop_uhop", epochs=2, patience=5, max_train_windows=64, **TINY)
    res = train_forecaster(cfg, splits=splits, out_dir=tmp_path / "out", progress=False)
    hist = res["history"]
    assert len(hist) == 2 and res["epochs_run"] == 2
    assert hist[-1]["val_mse"] < hist[0]["val_mse"]
    assert all(h["sep_loss_first"] is not None and h["inner_seconds"] > 0 for h in hist)
    assert 1.0 < res["alpha"]["min"] <= res["alpha"]["max"] < 2.0
    assert 0 < res["cpu_time_s"] and 0 < res["wall_time_s"]  # both clocks, from the same start
    # where a run's time went: training passes, per-epoch validation and the closing evaluation, all inside the wall time
    assert all(h["eval_seconds"] > 0 for h in hist) and res["final_eval_seconds"] > 0
    assert sum(h["seconds"] + h["eval_seconds"] for h in hist) + res["final_eval_seconds"] < res["wall_time_s"]
    # one process: the run's total is this process's time, to the same clock reading
    assert res["processes"] == 1
    assert (res["wall_time_total_s"], res["cpu_time_total_s"]) == (res["wall_time_s"], res["cpu_time_s"])
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"{res['key']}.json", f"{res['key']}.json.manifest.json"]
    df = load_results(tmp_path / "out")
    assert len(df) == 1 and df.loc[0, "variant"] == "stanhop_uhop"
    summary = summarize(df)
    assert summary.loc[0, "full_test"] and summary.loc[0, "seeds"] == 1


def test_resume_reproduces_uninterrupted_run(tmp_path):
    splits = synthetic_splits()
    cfg = ForecastConfig(variant="stanhop_uhop", epochs=2, patience=5, max_train_windows=48, **TINY)
    full = train_forecaster(cfg, splits=splits, checkpoint_dir=tmp_path / "a", progress=False)
    part = train_forecaster(cfg, splits=splits, checkpoint_dir=tmp_path / "b", progress=False, stop_after_epochs=1)
    assert part["interrupted"] and len(part["history"]) == 1
    resumed = train_forecaster(cfg, splits=splits, checkpoint_dir=tmp_path / "b", progress=False)
    assert not resumed["interrupted"] and resumed["epochs_run"] == 2
    assert resumed["best_epoch"] == full["best_epoch"]
    timing = ("seconds", "inner_seconds", "eval_seconds")
    assert ([{k: v for k, v in h.items() if k not in timing} for h in full["history"]]
            == [{k: v for k, v in h.items() if k not in timing} for h in resumed["history"]])  # bit for bit
    assert (resumed["test_mse"], resumed["test_mae"]) == (full["test_mse"], full["test_mae"])
    # the resumed run's total counts the interrupted process too (up to its checkpoint), not only the last one
    assert resumed["processes"] == 2 and full["processes"] == 1
    parts = sum(h["seconds"] + h["eval_seconds"] for h in resumed["history"]) + resumed["final_eval_seconds"]
    first = part["history"][0]
    assert parts < resumed["wall_time_total_s"]
    assert resumed["wall_time_s"] + first["seconds"] + first["eval_seconds"] < resumed["wall_time_total_s"]
    assert resumed["cpu_time_s"] < resumed["cpu_time_total_s"]
    # a checkpoint from another configuration is refused
    other = dataclasses.replace(cfg, lr=1e-3)
    (tmp_path / "b" / other_key(other)).mkdir(parents=True)
    import shutil

    shutil.copy(tmp_path / "b" / resumed["key"] / "last.pt", tmp_path / "b" / other_key(other) / "last.pt")
    with pytest.raises(ValueError, match="different configuration"):
        train_forecaster(other, splits=splits, checkpoint_dir=tmp_path / "b", progress=False)
    # a last.pt in the format of the loop before it used uhop.nn.BilevelTrainer is refused by name
    from uhop.nn.checkpoints import save_checkpoint

    old = tmp_path / "b" / resumed["key"] / "last.pt"
    save_checkpoint(old, {"model": {}, "optimizer": {}, "kernel_optimizer": None, "history": [], "bad_epochs": 0,
                          "best_val": 1.0, "best_epoch": 1, "config": dataclasses.asdict(cfg), "rng": {}})
    with pytest.raises(ValueError, match=r"last.pt is not a checkpoint of uhop.nn.BilevelTrainer.*resume=False"):
        train_forecaster(cfg, splits=splits, checkpoint_dir=tmp_path / "b", progress=False)


def _without_timing(result):
    timing = ("seconds", "inner_seconds", "eval_seconds")
    return ([{k: v for k, v in h.items() if k not in timing} for h in result["history"]],
            {k: result[k] for k in ("epochs_run", "best_epoch", "stopped_early", "val_mse", "test_mse", "test_mae")})


@pytest.mark.parametrize("variant, patience, lr", [("stanhop_uhop", 0, 3e-2), ("linear", 0, 3e-2), ("stanhop", 1, 1.0)])
def test_a_run_carried_on_to_a_larger_cap_equals_a_run_made_with_it(tmp_path, variant, patience, lr):
    # A finished run with epochs=2 carried on to epochs=4 gives, bit for bit, the run made with epochs=4 from scratch.
    # At lr 1.0 the validation loss rises in epoch 2, so with patience 1 the fresh run stops after 2 epochs (checked
    # below) and the carried-on run, whose checkpoint holds that early-stopping state, stops there too.
    splits = synthetic_splits()
    long = ForecastConfig(variant=variant, epochs=4, patience=patience, epoch_windows=32, **{**TINY, "lr": lr})
    fresh = train_forecaster(long, splits=splits, progress=False)
    short = dataclasses.replace(long, epochs=2)
    first = train_forecaster(short, splits=splits, checkpoint_dir=tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / first["key"]).iterdir()}
    carried = train_forecaster(long, splits=splits, checkpoint_dir=tmp_path, progress=False)
    assert carried["continued_from"] == {"key": first["key"], "epochs": 2, "epochs_run": first["epochs_run"]}
    assert _without_timing(carried) == _without_timing(fresh)
    assert carried["key"] == fresh["key"] != first["key"] and "continued_from" not in fresh
    assert {p.name: p.read_bytes() for p in (tmp_path / first["key"]).iterdir()} == before  # earlier run untouched
    if patience:
        assert fresh["stopped_early"] and fresh["epochs_run"] == 2
    else:
        assert fresh["epochs_run"] == 4
    # a cap that is not larger, or other settings, find nothing to carry on from
    assert train_forecaster(dataclasses.replace(long, epochs=2, lr=1e-3), splits=splits, checkpoint_dir=tmp_path,
                            progress=False).get("continued_from") is None
    assert continue_shorter_run(dataclasses.replace(short, epochs=1), tmp_path) is None


def _old_layout(path):
    """Rewrite a trainer last.pt in the layout of the forecasting loop before it used uhop.nn.BilevelTrainer."""
    from uhop.nn.checkpoints import load_checkpoint, save_checkpoint

    c = load_checkpoint(path)
    history = [{("windows" if k == "images" else k): v for k, v in row.items() if k not in ("train_acc", "outer_seconds")}
               for row in c["history"]]
    save_checkpoint(path, {"model": c["model"], "optimizer": c["outer_optimizer"], "kernel_optimizer": c["kernel_optimizer"],
                           "history": history, "bad_epochs": c["best"]["bad_epochs"], "best_val": c["best"]["value"],
                           "best_epoch": c["best"]["epoch"], "config": c["config"],
                           "rng": {"torch": c["rng"]["torch"], "batches": c["rng"]["batches"], "inner": c["rng"]["inner"]}})


@pytest.mark.parametrize("lr", [1.0, 3e-2])
def test_an_old_layout_checkpoint_is_carried_on_only_if_its_run_had_stopped(tmp_path, lr):
    # lr 1.0 stops early after 2 epochs (see above): nothing more to train, so the old layout is enough and the result
    # is the fresh run's; at 3e-2 the run reached its cap, and the old layout (no optimizer layout, no global RNG
    # states of the trainer) cannot be carried on exactly: the run starts from scratch instead.
    splits = synthetic_splits()
    long = ForecastConfig(variant="stanhop", epochs=4, patience=1, epoch_windows=32, **{**TINY, "lr": lr})
    first = train_forecaster(dataclasses.replace(long, epochs=2), splits=splits, checkpoint_dir=tmp_path, progress=False)
    _old_layout(tmp_path / first["key"] / "last.pt")
    carried = train_forecaster(long, splits=splits, checkpoint_dir=tmp_path, progress=False)
    assert _without_timing(carried) == _without_timing(train_forecaster(long, splits=splits, progress=False))
    assert ("continued_from" in carried) == (lr == 1.0)


def other_key(cfg):
    from uhop.experiments.forecasting import run_key

    return run_key(cfg)


def test_paper_table_is_complete():
    assert len(PAPER_TABLE8) == 12
    assert PAPER_TABLE8[("ETTh1", 720)]["stanhop_uhop"] == (0.572, 0.559)


# -- the committed CPU tier (results/forecasting/runs) -----------------------------------------------------------

_RUNS_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "results" / "forecasting" / "runs"
# notebook parameter -> ForecastConfig field, where the names differ or need conversion
_ZERO_IS_NONE = ("max_train_windows", "max_val_windows", "max_test_windows")


def test_committed_cpu_tier_covers_every_table8_cell_with_the_documented_settings():
    # The chapter book/forecasting.md renders these runs beside Table 8: every cell (3 datasets x 4 horizons)
    # must hold both STanHop variants and both baselines for >= 3 seeds, each run written by the settings its
    # full_size.yml entry declares, with a provenance manifest naming a commit.

    from uhop.experiments.forecasting import DATASETS, HORIZONS
    from uhop.reproduce import load_runs

    entries = {(r["parameters"]["dataset"], r["parameters"]["horizon"]): r["parameters"] for r in load_runs()
               if r["name"].startswith("forecasting_cpu_")}
    assert set(entries) == {(d, h) for d in DATASETS for h in HORIZONS}
    from uhop.experiments.forecasting import load_runs

    runs = load_runs(_RUNS_DIR)
    for (dataset, horizon), params in entries.items():
        for variant in ("stanhop", "stanhop_uhop", "persistence", "linear"):
            cell = [r for r in runs if r["config"]["dataset"] == dataset and r["config"]["horizon"] == horizon
                    and r["config"]["variant"] == variant]
            seeds = {r["config"]["seed"] for r in cell}
            assert len(seeds) >= 3 and seeds == set(range(params["seed"], params["seed"] + params["n_seeds"])), \
                f"{dataset} h{horizon} {variant}: seeds {sorted(seeds)}"
            for r in cell:
                c = r["config"]
                for key, value in params.items():
                    if key in c and key != "seed":  # "seed" is the first of n_seeds
                        expected = None if key in _ZERO_IS_NONE and value == 0 else value
                        assert c[key] == expected, f"{r['key']}: {key}={c[key]!r}, full_size.yml says {value!r}"
                assert not r["interrupted"] and np.isfinite(r["test_mse"]) and np.isfinite(r["test_mae"])
                assert r["windows"]["test"] == min(params["max_test_windows"] or 10**9, r["windows"]["test_available"])
                if variant.startswith("stanhop"):
                    assert r["epochs_run"] == params["epochs"] and r["best_epoch"] is not None
                manifest = json.loads((_RUNS_DIR / f"{r['key']}.json.manifest.json").read_text())
                assert len(manifest["git"]["commit"]) == 40 and manifest["parameters"]["seed"] == c["seed"]


def test_retest_reproduces_recorded_metrics_and_measures_kernel_drift(tmp_path):
    from uhop.experiments.forecasting import build_model, kernel_drift, retest

    splits = synthetic_splits()
    results = {}
    for variant in ("stanhop", "stanhop_uhop", "persistence"):
        cfg = ForecastConfig(variant=variant, epochs=2, patience=0, max_train_windows=48, max_test_windows=20, **TINY)
        results[variant] = train_forecaster(cfg, splits=splits, out_dir=tmp_path / "out",
                                            checkpoint_dir=tmp_path / "ck", progress=False)
    from uhop.experiments.forecasting import load_runs

    files = load_runs(tmp_path / "out")
    assert sorted(r["config"]["variant"] for r in files) == sorted(results)
    # the same windows again: the recorded numbers, from best.pt
    same = {r["variant"]: r for r in retest(files, tmp_path / "ck", max_test_windows=20, splits=splits)}
    for variant, res in results.items():
        assert same[variant]["windows"] == res["windows"]["test"] == 20
        assert same[variant]["mse"] == pytest.approx(res["test_mse"], rel=1e-6)
        assert same[variant]["mae"] == pytest.approx(res["test_mae"], rel=1e-6)
    # the whole test split: every window, and a different number
    whole = {r["variant"]: r for r in retest(files, tmp_path / "ck", splits=splits)}
    assert whole["stanhop"]["windows"] == results["stanhop"]["windows"]["test_available"] > 20
    assert whole["stanhop"]["mse"] != pytest.approx(results["stanhop"]["test_mse"], rel=1e-9)
    # kernel drift: zero at the identity start, positive after training, absent without U-Hop
    assert whole["stanhop"]["kernel_drift"] is None and whole["persistence"]["kernel_drift"] is None
    drift = whole["stanhop_uhop"]["kernel_drift"]
    # (TINY's decoder has one output segment: its across-time layer stores one pattern, whose weight is 1
    # whatever Phi is, so that Phi gets no gradient and stays at the identity; hence min >= 0, max > 0)
    assert drift["layers"] == 11 and 0 <= drift["min"] <= drift["mean"] <= drift["max"] and drift["max"] > 0
    fresh = build_model(ForecastConfig(variant="stanhop_uhop", **TINY), 3)
    assert kernel_drift(fresh)["max"] == 0.0
    # a missing checkpoint is named
    with pytest.raises(FileNotFoundError, match="best.pt"):
        retest(files, tmp_path / "nowhere", splits=splits)
    drift_only = retest(files, tmp_path / "ck", splits=splits, test=False)
    assert all(r["mse"] is None for r in drift_only)
    assert [r["kernel_drift"] for r in drift_only] == [r["kernel_drift"] for r in retest(files, tmp_path / "ck",
                                                                                          splits=splits)]


@needs_ett
def test_retest_command_line_writes_json_and_manifest(tmp_path, capsys):

    from uhop.experiments.forecasting import main

    cfg = ForecastConfig(dataset="ETTh1", horizon=96, variant="persistence", max_val_windows=8, max_test_windows=50)
    res = train_forecaster(cfg, out_dir=tmp_path / "runs", progress=False)
    out = tmp_path / "check.json"
    assert main(["retest", "--runs", str(tmp_path / "runs"), "--checkpoints", str(tmp_path / "ck"),
                 "--cells", "ETTh1_96,WTH_720", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["key"] == res["key"] and rows[0]["recorded_windows"] == 50
    assert rows[0]["windows"] == res["windows"]["test_available"]
    assert rows[0]["mse"] == pytest.approx(1.2944, abs=5e-4)  # persistence on the whole ETTh1 test split
    manifest = json.loads((tmp_path / "check.json.manifest.json").read_text())
    assert "retest" in manifest["command"] and "ETTh1_96" in manifest["command"]
    assert "MSE" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # no run of the requested cells
        main(["retest", "--runs", str(tmp_path / "runs"), "--checkpoints", "x", "--cells", "WTH_96", "--out", str(out)])


# -- the converged tier (results/forecasting/converged) and the GPU slice ------------------------------------------

_CONVERGED = _RUNS_DIR.parent / "converged"


def test_parameter_translation_is_shared_and_strict():
    from uhop.experiments.forecasting import config_from_parameters

    base, variants, seeds = config_from_parameters({"dataset": "WTH", "variants": "stanhop, linear", "seed": 3,
                                                    "n_seeds": 2, "max_test_windows": 0, "epoch_windows": 128,
                                                    "threads": 1, "out_dir": "x"})
    assert (base.dataset, base.max_test_windows, base.epoch_windows) == ("WTH", None, 128)
    assert variants == ["stanhop", "linear"] and seeds == [3, 4]
    with pytest.raises(ValueError, match="unknown forecasting parameter.*n_memorys"):
        config_from_parameters({"n_memorys": 10})
    with pytest.raises(ValueError, match="variant"):
        config_from_parameters({"variants": "stanhop,transformer"})


def test_window_batches_sample_each_epoch_afresh_and_resume_from_their_state():
    from uhop.experiments.forecasting.data import WindowBatches, Windows

    splits = synthetic_splits()
    windows = Windows(splits.dataset("train", 12), torch.arange(0, 150, 3), "cpu")  # 50 windows
    source = WindowBatches(windows, 8, seed=1, epoch_windows=20)
    assert len(source) == 3 and len(WindowBatches(windows, 8, seed=1)) == 7
    epochs = []
    for _ in range(2):
        xs = [x for x, _ in source.epoch()]
        assert [len(x) for x in xs] == [8, 8, 4]
        first = torch.cat(xs)[:, 0, 0]  # the window's first value identifies its start
        assert len(set(first.tolist())) == 20  # distinct windows within an epoch
        epochs.append(first)
    assert not torch.equal(epochs[0], epochs[1])  # a fresh sample every epoch
    x, y = windows.batch(windows.starts[:2])
    assert x.shape == (2, 24, 3) and y.shape == (2, 12, 3) and torch.equal(x[1, 3:], windows.values[3 + 3:3 + 24])
    state = source.get_state()
    a = source.sample(200)[0]
    source.set_state(state)
    assert torch.equal(source.sample(200)[0], a)  # resumable from the generator state
    # 200 draws from 50 windows: with replacement, and only from the source's windows
    assert len(a) == 200 and set(a[:, 0, 0].tolist()) <= set(windows.values[windows.starts, 0].tolist())
    with pytest.raises(ValueError, match="epoch_windows"):
        WindowBatches(windows, 8, seed=1, epoch_windows=0)


def test_epoch_windows_draws_a_fresh_paired_sample_each_epoch(tmp_path):
    splits = synthetic_splits()
    cfg = ForecastConfig(variant="stanhop", epochs=3, patience=0, epoch_windows=40, **TINY)
    r = train_forecaster(cfg, splits=splits, progress=False)
    assert [h["windows"] for h in r["history"]] == [40, 40, 40]
    # the run key of a config without the new field is what it was before the field existed
    from uhop.experiments.forecasting import run_key

    assert run_key(ForecastConfig(variant="linear")) == run_key(dataclasses.replace(ForecastConfig(variant="linear"),
                                                                                   epoch_windows=None))
    assert run_key(ForecastConfig(variant="linear")) != run_key(ForecastConfig(variant="linear", epoch_windows=8))


def test_inner_batch_size_is_algorithm_2_stage_one_batch(monkeypatch):
    # B_1 < B_2: every separation step sees inner_batch_size windows while the task batches keep batch_size, and
    # the outer batches (their own generator) are those of the B_1 = B_2 run; the run key of the default stays
    # what it was before the field existed, and 0 from the notebook means "the training batch"
    import uhop.nn.bilevel as bilevel
    from uhop.experiments.forecasting import config_from_parameters, run_key

    seen = []
    real = bilevel.separation_step

    def spy(model, inputs, *args, **kwargs):
        seen.append(len(inputs))
        return real(model, inputs, *args, **kwargs)

    monkeypatch.setattr(bilevel, "separation_step", spy)
    splits = synthetic_splits()
    runs = {}
    for b1 in (None, 3):
        seen.clear()
        cfg = ForecastConfig(variant="stanhop_uhop", epochs=1, patience=0, max_train_windows=40,
                             inner_batch_size=b1, **TINY)
        runs[b1] = train_forecaster(cfg, splits=splits, progress=False)
        assert seen and set(seen) == {3 if b1 else TINY["batch_size"]}
        assert runs[b1]["history"][0]["windows"] == 40
    assert runs[None]["history"][0]["train_loss"] != runs[3]["history"][0]["train_loss"]  # B_1 changes the kernels
    plain = ForecastConfig(variant="stanhop_uhop")
    assert run_key(plain) == run_key(dataclasses.replace(plain, inner_batch_size=None))
    assert run_key(plain) != run_key(ForecastConfig(variant="stanhop_uhop", inner_batch_size=4))
    assert config_from_parameters({"inner_batch_size": 0})[0].inner_batch_size is None
    with pytest.raises(ValueError, match="inner_batch_size"):
        ForecastConfig(inner_batch_size=0)


def _ended(variant, val_mae, stopped_early, epochs=4, seed=0):
    best = int(np.argmin(val_mae)) + 1
    return {"config": {"dataset": "ETTh1", "horizon": 96, "variant": variant, "epochs": epochs, "loss": "mae",
                       "seed": seed},
            "history": [{"val_mae": v, "val_mse": 2 * v} for v in val_mae], "epochs_run": len(val_mae),
            "best_epoch": best, "stopped_early": stopped_early}


def test_stopping_summary_counts_how_runs_ended():
    from uhop.experiments.forecasting import stopping_summary

    runs = [_ended("stanhop", [1.0, 0.8, 0.9, 0.95], True),          # stopped early: no gain in the last two epochs
            _ended("stanhop", [1.0, 0.9, 0.85, 0.81], False, seed=1),  # still improving at the cap
            _ended("stanhop_uhop", [1.0, 0.8, 0.7, 0.75], False),      # reached the cap, best one epoch earlier
            _ended("persistence", [1.0], False)]
    s = stopping_summary(runs).set_index("variant")
    assert "persistence" not in s.index
    assert s.loc["stanhop", ["runs", "cap", "stopped_early", "best_at_cap"]].tolist() == [2, 4, 1, 1]
    assert s.loc["stanhop", "best_epoch"] == 3.0
    # gains of the best validation loss over the last two epochs: 0 and (0.9 - 0.81) / 0.9
    assert s.loc["stanhop", "last_gain"] == pytest.approx((0 + 0.09 / 0.9) / 2)
    assert s.loc["stanhop_uhop", ["stopped_early", "best_at_cap"]].tolist() == [0, 0]
    assert s.loc["stanhop_uhop", "last_gain"] == pytest.approx(0.1 / 0.8)
    # the monitor follows the training loss: MSE-trained runs are judged on val_mse
    mse = _ended("stanhop", [1.0, 0.9, 0.85, 0.81], False)
    mse["config"]["loss"] = "mse"
    assert stopping_summary([mse]).loc[0, "last_gain"] == pytest.approx(0.09 / 0.9)


def test_pooled_difference_is_relative_and_paired_by_cell_and_seed():
    import pandas as pd

    from uhop.experiments.forecasting import PAPER_TABLE8, pooled_difference

    rows = []
    for (d, h), seeds, base, change in ((("ETTh1", 96), (0, 1), 0.4, -0.04), (("WTH", 192), (0, 1, 2), 0.5, 0.05)):
        for s in seeds:
            rows += [{"dataset": d, "horizon": h, "seed": s, "variant": "stanhop", "test_mse": base, "test_mae": 1.0},
                     {"dataset": d, "horizon": h, "seed": s, "variant": "stanhop_uhop", "test_mse": base + change,
                      "test_mae": 1.0 + s / 10}]
    rows.append({"dataset": "ETTm1", "horizon": 96, "seed": 0, "variant": "stanhop", "test_mse": 0.3, "test_mae": 0.3})
    r = pooled_difference(pd.DataFrame(rows))
    assert (r["pairs"], r["cells"]) == (5, 2)  # the unpaired ETTm1 run is left out
    assert r["mse"]["mean"] == pytest.approx((2 * -0.1 + 3 * 0.1) / 5)  # relative: -0.04/0.4 and +0.05/0.5
    assert (r["mse"]["negative"], r["mse"]["positive"]) == (2, 3) and r["sign_p"] == 1.0
    assert r["mae"]["mean"] == pytest.approx((0 + 0.1 + 0 + 0.1 + 0.2) / 5)
    paper = [PAPER_TABLE8[c]["stanhop_uhop"][0] / PAPER_TABLE8[c]["stanhop"][0] - 1 for c in (("ETTh1", 96), ("WTH", 192))]
    assert r["paper_mse"] == pytest.approx(sum(paper) / 2)
    assert pooled_difference(pd.DataFrame(rows[-1:]))["pairs"] == 0


def test_pooled_by_stopping_splits_the_pairs_by_when_each_run_had_its_best_epoch():
    import pandas as pd

    from uhop.experiments.forecasting import pooled_by_stopping

    def pair(d, h, s, best, best_uhop, mse, mse_uhop):
        return [{"dataset": d, "horizon": h, "seed": s, "variant": "stanhop", "best_epoch": best, "test_mse": mse},
                {"dataset": d, "horizon": h, "seed": s, "variant": "stanhop_uhop", "best_epoch": best_uhop,
                 "test_mse": mse_uhop}]

    rows = (pair("ETTh1", 96, 0, 5, 3, 0.4, 0.36) + pair("ETTh1", 96, 1, 5, 2, 0.5, 0.4)  # U-Hop earlier: -10%, -20%
            + pair("WTH", 720, 0, 4, 4, 0.5, 0.51)                                           # same: +2%
            + pair("WTH", 720, 1, 4, 4, 0.5, 0.51)
            + [{"dataset": "ETTm1", "horizon": 96, "seed": 0, "variant": "stanhop", "best_epoch": 3, "test_mse": 1.0}])
    out = pooled_by_stopping(pd.DataFrame(rows)).set_index("when")
    assert list(out.index) == ["earlier", "same"]  # no pair where U-Hop stopped later; the unpaired run is left out
    assert out.loc["earlier", "pairs"] == 2 and out.loc["earlier", "mean"] == pytest.approx(-0.15)
    assert out.loc["earlier", "uhop_lower"] == 2 and out.loc["earlier", "low"] < -0.15 < out.loc["earlier", "high"]
    assert out.loc["same", "mean"] == pytest.approx(0.02) and out.loc["same", "uhop_lower"] == 0
    assert pooled_by_stopping(pd.DataFrame(rows[-1:])).empty


def test_paired_by_seed_pairs_common_seeds_and_gives_a_verdict():
    import pandas as pd

    from uhop.experiments.forecasting import paired_by_seed

    # seed 0 lacks a reference, seed 4 a value, seed 3's value is NaN: seeds 1, 2, 5 pair
    a = pd.Series({0: 1.0, 1: 2.0, 2: 3.0, 3: np.nan, 5: 4.0})
    b = pd.Series({1: 2.5, 2: 3.4, 3: 1.0, 4: 9.0, 5: 4.45})
    d = paired_by_seed(a, b, "A lower", "A higher")
    assert d["seeds"] == [1, 2, 5] and d["n"] == 3 and d["mean"] == pytest.approx(-0.45)
    assert d["verdict"] == "A lower" and d["negative"] == 3 and d["high"] < 0  # -0.5, -0.4, -0.45
    assert paired_by_seed(b.drop(4), a.drop(3), "A lower", "A higher")["verdict"] == "A higher"
    mixed = paired_by_seed(pd.Series({0: 1.0, 1: 2.0, 2: 3.0}), pd.Series({0: 1.5, 1: 1.5, 2: 3.1}))
    assert mixed["verdict"] == "no resolved difference"
    assert paired_by_seed(pd.Series({0: 2.0}), pd.Series({0: 1.0}))["verdict"] == "one seed"
    with pytest.raises(ValueError, match="no seed"):
        paired_by_seed(pd.Series({0: 1.0}), pd.Series({1: 1.0}))


def test_committed_stage1_batch_runs_match_their_entry():
    # The Stage-I batch ablation (forecasting_stage1_batch_<cell>): every committed run is one its entry declares,
    # U-Hop with B_1 = 4 and otherwise the converged tier's settings of that cell, on the whole test split
    from uhop.experiments.forecasting import load_runs, tier_status
    from uhop.experiments.notebook import full_size_entry

    folder = _CONVERGED.parent / "converged_inner_batch"
    cells = ("ETTh1_96", "WTH_192")
    finished, pending = tier_status("forecasting_stage1_batch_", folder)
    assert len(finished) + len(pending) == 5 * len(cells)
    runs = load_runs(folder)
    assert {r["key"] for r in runs} == {item["key"] for item in finished}
    for cell in cells:
        tier = dict(full_size_entry(f"forecasting_converged_{cell}", "forecasting")["parameters"])
        mine = dict(full_size_entry(f"forecasting_stage1_batch_{cell}", "forecasting")["parameters"])
        assert {k: v for k, v in mine.items() if k not in ("variants", "inner_batch_size", "out_dir")} == \
            {k: v for k, v in tier.items() if k not in ("variants", "out_dir")}
    for r in runs:
        assert r["config"]["inner_batch_size"] == 4 and r["config"]["variant"] == "stanhop_uhop"
        assert r["windows"]["test"] == r["windows"]["test_available"] and not r["interrupted"]


def test_committed_converged_runs_match_their_entries():
    # Every committed run of the converged tier is one its full_size.yml entry declares (the key hashes the whole
    # configuration), was tested on the whole test split, validated on the whole validation split, saw at least
    # 20,000 training windows unless early stopping ended it, and has a manifest naming a commit.

    from uhop.experiments.forecasting import load_runs, tier_status

    finished, pending = tier_status("forecasting_converged_", _CONVERGED)
    assert len(finished) + len(pending) == 12 * 4 * 5
    keys = {item["key"] for item in finished}
    runs = load_runs(_CONVERGED)
    assert {r["key"] for r in runs} == keys, "a committed run that no full_size.yml entry declares"
    for r in runs:
        w = r["windows"]
        assert w["test"] == w["test_available"] and w["val"] == w["val_available"], r["key"]
        assert not r["interrupted"] and np.isfinite(r["test_mse"])
        if r["config"]["variant"] in ("stanhop", "stanhop_uhop", "linear"):
            seen = sum(h["windows"] for h in r["history"])
            assert seen >= 20_000 or r["stopped_early"], f"{r['key']}: {seen} windows"
        manifest = json.loads((_CONVERGED / f"{r['key']}.json.manifest.json").read_text())
        assert len(manifest["git"]["commit"]) == 40


@needs_ett
def test_gpu_slice_declares_the_paper_settings_and_runs_at_smoke_size(tmp_path):
    from uhop.experiments.forecasting import config_from_parameters, run
    from uhop.reproduce import load_runs

    entry = next(r for r in load_runs() if r["name"] == "forecasting_gpu_slice")
    params = entry["parameters"]
    base, variants, seeds = config_from_parameters(params)
    assert (base.d_model, base.d_ff, base.epochs, base.patience, base.lr, base.batch_size) == (256, 512, 50, 25, 1e-4, 16)
    assert base.max_train_windows is None and base.max_test_windows is None and base.epoch_windows is None
    assert variants == ["stanhop", "stanhop_uhop"] and seeds == [0] and params["device"] == "cuda"
    smoke = {**params, "d_model": 16, "n_heads": 2, "d_ff": 32, "factor": 3, "epochs": 1, "max_train_windows": 32,
             "max_val_windows": 16, "max_test_windows": 16}
    base, variants, seeds = config_from_parameters(smoke)
    results = run(base, variants, seeds, device="cpu", out_dir=tmp_path, progress=False)
    assert [r["config"]["variant"] for r in results] == ["stanhop", "stanhop_uhop"]
    assert all(np.isfinite(r["test_mse"]) for r in results) and len(list(tmp_path.glob("*.manifest.json"))) == 2


def test_time_split_counts_only_fully_timed_runs():
    from uhop.experiments.forecasting import time_split

    def timed(variant, seconds, evals, closing, seed=0):
        return {"config": {"dataset": "WTH", "horizon": 336, "variant": variant, "seed": seed},
                "history": [{"seconds": s, "eval_seconds": e} for s, e in zip(seconds, evals)],
                "final_eval_seconds": closing}

    runs = [timed("stanhop", [10.0, 10.0], [4.0, 4.0], 2.0),
            timed("stanhop", [20.0], [6.0], 4.0, seed=1),
            timed("stanhop", [10.0, 10.0], [None, 4.0], 2.0, seed=2),    # an epoch from before the field: left out
            {"config": {"dataset": "WTH", "horizon": 336, "variant": "stanhop", "seed": 3},  # older run: left out
             "history": [{"seconds": 5.0}]}]
    s = time_split(runs).set_index("variant")
    assert s.loc["stanhop", "runs"] == 2
    assert s.loc["stanhop", ["train_s", "validation_s", "closing_s"]].tolist() == [20.0, 7.0, 3.0]
    assert s.loc["stanhop", "validation_share"] == pytest.approx(7.0 / 30.0)
    assert time_split(runs[3:]).empty  # nothing timed yet: an empty table, not an error


def test_run_wall_times_use_the_recorded_total_else_the_larger_lower_bound():
    from uhop.experiments.forecasting import run_wall_times

    def run(key, wall, seconds, evals, closing, total=None, carried=None):
        r = {"key": key, "wall_time_s": wall, "final_eval_seconds": closing,
             "history": [{"seconds": s, "eval_seconds": e} for s, e in zip(seconds, evals)]}
        if total is not None:
            r["wall_time_total_s"] = total
        if carried is not None:
            r["continued_from"] = {"key": carried}
        return r

    runs = [run("whole", 40.0, [10.0, 10.0], [4.0, 4.0], 2.0),               # one process: its own wall time
            run("resumed", 12.0, [10.0, 10.0], [4.0, 4.0], 2.0),             # last process only: the parts (30)
            run("recorded", 12.0, [10.0, 10.0], [4.0, 4.0], 2.0, total=33.0),  # newer runs record the total
            run("carried", 25.0, [10.0, 10.0, 10.0], [4.0, None, 4.0], 2.0, carried="first")]
    earlier = [run("first", 30.0, [10.0, 10.0], [4.0, None], 2.0)]
    assert run_wall_times(runs, earlier) == {"whole": 40.0, "resumed": 30.0, "recorded": 33.0, "carried": 55.0}
    assert run_wall_times(runs)["carried"] == 40.0  # without the first part: the timed parts (30 + 8 + 2)


def test_against_tier_pairs_a_setting_with_both_tier_variants_by_seed():
    import pandas as pd

    from uhop.experiments.forecasting import against_tier

    def rows(variant, mses, best, seeds=(0, 1, 2)):
        return [{"dataset": "WTH", "horizon": 192, "variant": variant, "seed": s, "test_mse": m, "best_epoch": b}
                for s, m, b in zip(seeds, mses, best)]

    tier = pd.DataFrame(rows("stanhop", [1.0, 2.0, 3.0], [3, 3, 3]) + rows("stanhop_uhop", [0.9, 1.8, 2.7], [4, 5, 6])
                        + rows("linear", [9.0, 9.0, 9.0], [1, 1, 1]))
    setting = pd.DataFrame(rows("stanhop_uhop", [1.1, 2.0, 9.9], [4, 2, 6], seeds=(0, 1, 7)))  # seed 7: not in the tier
    [cell] = against_tier(setting, tier, setting="B1=4")
    assert (cell["dataset"], cell["horizon"], cell["seeds"]) == ("WTH", 192, [0, 1])
    assert cell["vs_stanhop"]["mean"] == pytest.approx(0.05) and cell["vs_stanhop"]["n"] == 2
    assert cell["vs_stanhop"]["verdict"] == "no resolved difference"  # +0.1 and 0.0
    assert cell["vs_uhop"]["mean"] == pytest.approx(0.2) and cell["vs_uhop"]["verdict"] == "B1=4 higher"  # 0.2 twice
    assert cell["uhop_vs_stanhop"]["mean"] == pytest.approx(-0.15) and cell["uhop_vs_stanhop"]["negative"] == 2
    assert cell["uhop_vs_stanhop"]["verdict"] == "no resolved difference"  # -0.1, -0.2: two seeds, wide interval
    lower = tier.assign(test_mse=tier["test_mse"].where(tier["variant"] != "stanhop_uhop", tier["test_mse"] - 0.5))
    [low] = against_tier(setting.assign(test_mse=[0.0, 1.0, 0.0]), lower)  # tier U-Hop -0.5 in both; setting -1
    assert (low["uhop_vs_stanhop"]["verdict"], low["vs_stanhop"]["verdict"]) == ("U-Hop lower", "setting lower")
    assert cell["means"] == pytest.approx({"stanhop": 1.5, "stanhop_uhop": 1.35, "setting": 1.55})
    assert cell["same_best_epoch"] == 1
    with pytest.raises(ValueError, match="no STanHop and U-Hop runs of WTH-192"):
        against_tier(setting, tier[tier["variant"] != "stanhop"])


@needs_ett
def test_train_command_runs_an_entry_reports_its_total_time_and_skips_it_when_done(tmp_path, monkeypatch, capsys):
    from uhop.experiments import notebook
    from uhop.experiments.forecasting import main

    entry = {"name": "tiny", "notebook": "forecasting", "parameters": {
        "dataset": "ETTh1", "horizon": 24, "variants": "stanhop_uhop", "input_len": 48, "epochs": 1, "patience": 2,
        "d_model": 16, "n_heads": 2, "d_ff": 32, "factor": 3, "max_train_windows": 32, "max_val_windows": 16,
        "max_test_windows": 16, "seed": 0, "n_seeds": 1, "out_dir": str(tmp_path / "out"),
        "checkpoint_dir": str(tmp_path / "ck")}}
    monkeypatch.setattr(notebook, "full_size_entry", lambda name, nb: entry)
    assert main(["train", "--run", "tiny"]) == 0
    printed = capsys.readouterr().out
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*_s0_*.json")
                 if not p.name.endswith(".manifest.json")]
    assert f"{result['key']}: test MSE {result['test_mse']:.4f}" in printed
    assert f"{result['wall_time_total_s']:.0f} s" in printed and "processes" not in printed  # one process
    assert main(["train", "--run", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == f"{result['key']}: already done"
