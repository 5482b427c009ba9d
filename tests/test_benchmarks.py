"""Every benchmark script runs in its --quick mode and writes its JSON and manifest.

Benchmarks report timings; tests never assert anything about time (the machines are noisy).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _book import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_quick_mode_runs(script, tmp_path):
    out = tmp_path / f"{script.stem}.json"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data, f"{script.name} wrote an empty result"
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    for key in ("command", "date", "git", "machine", "versions", "wall_time_s"):
        assert key in manifest, f"{script.name}: manifest lacks {key}"


def test_forecasting_benchmark_times_trained_checkpoints(tmp_path):
    # two tiny trained runs (both STanHop variants) in a checkpoint folder: --trained finds the lowest seed of
    # each, loads its weights and times it on real windows against the legacy code path
    import os

    from uhop import allocator
    from uhop.experiments.forecasting import ForecastConfig, benchmark_table, train_forecaster

    if not os.path.exists(os.path.join(os.environ.get("UHOP_DATA", ""), "ett", "ETT-small", "ETTh1.csv")):
        pytest.skip("UHOP_DATA does not hold ETTh1")
    tiny = dict(dataset="ETTh1", horizon=12, input_len=24, d_model=16, n_heads=2, d_ff=32, factor=3, epochs=1,
                batch_size=8, max_train_windows=32, max_val_windows=32, max_test_windows=32, eval_batch_size=32)
    for variant in ("stanhop", "stanhop_uhop"):
        for seed in (1, 0):
            train_forecaster(ForecastConfig(variant=variant, seed=seed, **tiny), checkpoint_dir=tmp_path / "ckpt",
                             progress=False)
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_forecasting.py"), "--quick", "--trained",
         str(tmp_path / "ckpt"), "--trained-cells", "ETTh1:12,WTH:12", "--trained-eval-batch", "16",
         "--allocator", "ETTh1:12:stanhop_uhop,WTH:12:stanhop", "--allocator-legacy", "--inner-batches", "4",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "WTH-12: no best.pt" in result.stdout  # a cell without checkpoints is reported and skipped
    result_json = json.loads(out.read_text())
    (row,) = result_json["trained"]
    assert (row["shape"], row["horizon"], row["seed"]) == ("ETTh1", 12, 0)
    table = benchmark_table([row])
    assert table.loc[("ETTh1", 12), "speed-up"] == row["speedup_train"]
    assert row["stanhop"]["params"] < row["stanhop_uhop"]["params"]  # each variant its own checkpoint
    # U-Hop with Stage-I batch B_1 = 4: the same trained network, its slowdown reported beside B_1 = B_2
    assert row["stanhop_uhop_b1_4"]["params"] == row["stanhop_uhop"]["params"] and row["uhop_slowdown_b1_4"] > 0
    assert result_json["config"]["inner_batches"] == [4]
    assert table.loc[("ETTh1", 12), "U-Hop slowdown, B1=4"] == row["uhop_slowdown_b1_4"]
    # the allocator comparison: the trained U-Hop checkpoint where there is one, a fresh network where not; both
    # malloc settings compute the same bits
    trained_cell, fresh_cell = result_json["allocator"]
    assert (trained_cell["dataset"], trained_cell["trained"], trained_cell["seed"]) == ("ETTh1", True, 0)
    assert (fresh_cell["dataset"], fresh_cell["trained"]) == ("WTH", False)
    for cell in (trained_cell, fresh_cell):
        assert cell["identical"] and cell["applied"] == (allocator.glibc_malloc() is not None)
        assert cell["retain_eval_windows_per_s"] > 0 and cell["default_step_windows_per_s"] > 0
        # --allocator-legacy: the code before the speed work with the default settings, side by side; the package
        # as it runs now over it, and the code's share of that
        for kind, key in (("eval", "eval_windows_per_s"), ("train", "step_windows_per_s")):
            # (the ratios are of the unrounded medians; the throughputs are stored to 0.1)
            legacy = cell[f"legacy_{key}"]
            assert cell[f"as_run_{kind}_speedup"] == pytest.approx(cell[f"retain_{key}"] / legacy, rel=0.01)
            assert cell[f"code_{kind}_speedup"] == pytest.approx(cell[f"default_{key}"] / legacy, rel=0.01)
    assert result_json["config"]["allocator_legacy"]


def test_forecasting_profile_lists_each_phase(tmp_path):
    # benchmarks/profile_forecasting.py (not a bench_* script: it prints operator tables, no JSON) on a tiny fresh
    # U-Hop cell: every phase gets a table whose shares are of that phase, and a plain network has no inner step
    script = str(REPO / "benchmarks" / "profile_forecasting.py")
    tiny = ["--cell", "ETTh1:12", "--d-model", "16", "--steps", "1", "--eval-batch", "8", "--top", "5"]
    result = subprocess.run([sys.executable, script, *tiny, "--json", str(tmp_path / "profile.json")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for phase in ("train:", "inner:", "eval:"):
        assert f"\n{phase}\n" in result.stdout
    assert result.stdout.count("all operators") == 3
    assert result.stdout.count("GFLOP/s") == 3 and "d_ff 32," in result.stdout  # d_ff 2 x d_model, as the tiers
    # --json: every phase's distance from its matrix products; a training step has matrix products, and at the rate
    # of a large torch.mm they take part of the step's time
    floors = json.loads((tmp_path / "profile.json").read_text())
    assert set(floors["phases"]) == {"train", "inner", "eval"}
    assert floors["config"]["retain_freed_memory"] in (True, False)
    train = floors["phases"]["train"]
    assert train["matmul_gflop"] > 0 and 0 < train["floor_share"] < 1 and train["operator_calls"] > 100
    assert train["matmul_floor_ms"] == pytest.approx(train["matmul_gflop"] / floors["matmul_gflops"] * 1e3)
    assert (tmp_path / "profile.json.manifest.json").exists()
    shares = [float(line.split()[-2].rstrip("%")) for line in result.stdout.splitlines()
              if line.startswith("  aten::") and line.split()[-2].endswith("%")]
    assert shares and all(0 < s <= 100 for s in shares)
    plain = subprocess.run([sys.executable, script, *tiny, "--variant", "stanhop", "--phases", "inner,train", "--legacy",
                            "--top", "200"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-4000:]
    assert "inner: skipped (no U-Hop kernels in stanhop)" in plain.stdout and "legacy code path" in plain.stdout
    assert "EntmaxBisectFunction" in plain.stdout  # the bisection solver is what runs
    bad = subprocess.run([sys.executable, script, "--cell", "ETTx:96"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "bad cell 'ETTx:96'" in bad.stderr
