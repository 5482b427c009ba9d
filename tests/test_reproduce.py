"""python -m uhop.reproduce: the list, the plan, the lock, and the three ways of running (sequential, a local
pool, a Dask LocalCluster) giving identical results at smoke size."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from _book import REPO
from uhop import reproduce


def _spec(tmp_path, out: str) -> str:
    runs = []
    for seed in (0, 1):
        runs.append({"name": f"smoke_capacity_s{seed}", "notebook": "memory_capacity", "estimate": "1 min",
                     "parameters": {"dataset": "mnist", "protocol": "paper", "methods": ["mhm", "uhop_mhm"],
                                    "sizes": [5, 10], "epochs": [5], "plot_epochs": 5, "runs": 1, "seed": seed,
                                    "threads": 1, "output": str(tmp_path / out / f"s{seed}.csv")}})
    path = tmp_path / f"{out}.yml"
    path.write_text(yaml.safe_dump({"runs": runs}))
    return str(path)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "uhop.reproduce", "run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900)


def _rows(folder):
    frames = [pd.read_csv(f) for f in sorted(folder.glob("s*.csv"))]
    df = pd.concat(frames, ignore_index=True)
    timing = [c for c in df.columns if "second" in c or "time" in c or c.endswith("_s")]  # wall clocks differ
    return df.drop(columns=timing).sort_values(
        list(df.columns[:6])).reset_index(drop=True)


def test_estimates_and_list_table():
    assert reproduce.estimate_seconds("about 2 min (measured)") == 120
    assert reproduce.estimate_seconds("5 h of one core") == 5 * 3600
    assert reproduce.estimate_seconds("not measured yet") is None
    out = _cli("--list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "notebook", "estimate", "output", "status"]
    assert "forecasting_converged_ETTh1_96" in out.stdout and lines[-1].endswith("when run one after another")
    bad = _cli("--only", "no_such_run")
    assert bad.returncode == 2 and "unknown run name(s) ['no_such_run']" in bad.stderr


@pytest.mark.notebook
def test_sequential_local_pool_and_dask_give_identical_results(tmp_path):
    results = {}
    for how, args in (("seq", ["--jobs", "1"]), ("pool", ["--jobs", "2"]), ("dask", ["--scheduler", "local:2"])):
        spec = _spec(tmp_path, how)
        dry = _cli("--spec", spec, "--dry-run", *args)
        assert dry.returncode == 0 and "smoke_capacity_s1" in dry.stdout and not (tmp_path / how).exists()
        out = _cli("--spec", spec, *args)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert out.stdout.count("[reproduce] ") >= 4 and "2/2" in out.stdout
        results[how] = _rows(tmp_path / how)
    pd.testing.assert_frame_equal(results["seq"], results["pool"])
    pd.testing.assert_frame_equal(results["seq"], results["dask"])
    assert len(results["seq"]) > 0


def test_a_run_cannot_be_executed_twice_at_once(tmp_path):
    with reproduce._run_lock("locked_run", tmp_path):
        with pytest.raises(RuntimeError, match="run .locked_run.. is being written by pid"):
            with reproduce._run_lock("locked_run", tmp_path):
                pass
    with reproduce._run_lock("locked_run", tmp_path):  # released: free again
        pass


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    out = _cli("--spec", _spec(tmp_path, "x"), "--scheduler", "tcp://127.0.0.1:9")
    assert out.returncode != 0 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in out.stderr + out.stdout
