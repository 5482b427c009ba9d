"""python -m uhop.reproduce: the list, the plan, the lock, the three ways of running (sequential, a local pool, a
Dask LocalCluster) giving identical results at smoke size, a worker killed mid-run (the run is retried from its
committed groups and ends equal to a sequential run), and the bad-input messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from _book import REPO
from uhop import reproduce
from uhop.reproduce.cluster import dask_client
from uhop.reproduce.execute import lock_path, run_lock
from uhop.reproduce.progress import Progress
from uhop.provenance import lock_holder

# a notebook for the tests: a synthetic retrieval grid of 6 (M, seed) groups, about a second each, whose first
# attempt kills a process under it right after `kill_after` groups are committed
FAKE_NOTEBOOK = '''\
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

# %% tags=["parameters"]
output: str = "grid.csv"  # the grid CSV
jobs: int = 1  # groups at a time inside the grid
kill: str = "none"  # first attempt kills "unit" (the run's process), "dask_worker", "grid_worker" or nothing
kill_after: int = 2  # ... right after this many groups are committed
record: str = "record.jsonl"  # one line per committed group: kernel pid, groups done
hold: str = ""  # after the first group, wait for this file to exist (the run and its CSV stay locked)

# %%
import json
import multiprocessing
import os
import time

import psutil

from uhop.experiments.retrieval import GridConfig, run_grid

cfg = GridConfig(**GRID)
first_attempt = not os.path.exists(record)


def callback(done, total):
    with open(record, "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "done": done, "total": total}) + "\\n")
    while hold and not os.path.exists(hold):
        time.sleep(0.2)
    if first_attempt and kill != "none" and done == kill_after:
        if kill == "grid_worker":  # one process of the grid's own worker pool
            multiprocessing.active_children()[0].kill()
            return
        target = psutil.Process().parent()  # the run's process (it runs papermill, which runs this kernel)
        if kill == "dask_worker":
            target = target.parent()  # the Dask worker process whose task started the run
        target.kill()
        time.sleep(60)  # commit nothing more: this kernel goes down with its parent


run_grid(cfg, output, progress=False, threads=1, jobs=jobs, callback=callback)
'''

GRID = dict(experiment="killtest", dataset="synthetic", protocol="paper", methods=["mhm", "uhop_mhm"],
            sizes=[150, 200], epochs=[300], noise=[0.5], seeds=[0, 1, 2])
TIMING = ["stage1_s", "wall_s"]  # wall clocks differ from run to run


def _fake_runs(tmp_path, tag: str, runs: dict[str, dict]) -> str:
    """A runs file of fake-notebook runs ``{name: parameters}``; names get ``tag`` so that parallel test sessions
    never share a lock."""
    (tmp_path / "fake_grid.py").write_text(FAKE_NOTEBOOK.replace("GridConfig(**GRID)", f"GridConfig(**{GRID!r})"))
    spec = tmp_path / f"{tag}.yml"
    spec.write_text(yaml.safe_dump({"runs": [
        {"name": f"{name}_{tag}", "notebook": "fake_grid.py", "estimate": "20 s", "parameters": params}
        for name, params in runs.items()]}))
    return str(spec)


def _reference(tmp_path) -> pd.DataFrame:
    """The grid run sequentially in this process, nothing killed."""
    from uhop.experiments.retrieval import GridConfig, run_grid

    return run_grid(GridConfig(**GRID), tmp_path / "reference.csv", progress=False, threads=1).drop(columns=TIMING)


def _records(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def _resumed_from_committed(records: list[dict]) -> int:
    """Groups the first attempt committed, after checking that the second attempt (another kernel) went on from
    there instead of starting again."""
    pids = list(dict.fromkeys(r["pid"] for r in records))
    assert len(pids) == 2, records
    first = [r["done"] for r in records if r["pid"] == pids[0]]
    second = [r["done"] for r in records if r["pid"] == pids[1]]
    assert second[0] == first[-1] + 1 and second[-1] == records[0]["total"], records
    return first[-1]


def _spec(tmp_path, out: str) -> str:
    """A runs file of two small memory-capacity runs writing under ``tmp_path/out``; their names carry ``out`` and
    this process's id, so that tests running at the same time (pytest-xdist workers, parallel sessions) never take
    the same run lock (it lives in the repository's ``_build``)."""
    runs = []
    for seed in (0, 1):
        runs.append({"name": f"smoke_capacity_{out}{os.getpid()}_s{seed}", "notebook": "memory_capacity", "estimate": "1 min",
                     "parameters": {"dataset": "mnist", "protocol": "paper", "methods": ["mhm", "uhop_mhm"],
                                    "sizes": [5, 10], "epochs": [5], "plot_epochs": 5, "runs": 1, "seed": seed,
                                    "threads": 1, "output": str(tmp_path / out / f"s{seed}.csv")}})
    path = tmp_path / f"{out}.yml"
    path.write_text(yaml.safe_dump({"runs": runs}))
    return str(path)


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "uhop.reproduce", "run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


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


def test_unknown_run_name_names_close_matches_and_the_known_runs(capsys):
    known = [r["name"] for r in reproduce.load_runs()]
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["run", "--only", "mnist_capacity_tune", "--only", "zzz_no_such_run", "--dry-run"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "unknown run name(s) 'mnist_capacity_tune' (did you mean mnist_capacity_tuned" in err
    assert "'zzz_no_such_run'. Known runs: " + ", ".join(known[:3]) in err


def test_progress_estimates_time_left_from_measured_units(monkeypatch, tmp_path):
    runs = [{"name": n, "notebook": "x", "estimate": f"{e} s"} for n, e in (("a", 10), ("b", 20), ("c", 30))]
    units = {"a": (4, 4), "b": (0, 10), "c": None}
    monkeypatch.setattr(reproduce.runs, "run_units", lambda run: units[run["name"]])
    progress = Progress(runs, workers=2, repo=tmp_path)
    left, basis = progress.remaining()
    assert left == pytest.approx(30.0) and basis == "from the estimates"  # (10 + 20 + 30) s on 2 workers
    progress.started("a", "worker 1")
    progress.finished({"name": "a", "returncode": 0, "seconds": 20.0, "host": "h", "log": "-"})  # twice as slow
    left, basis = progress.remaining()
    assert left == pytest.approx((40 + 60) / 2) and basis == "measured"
    progress.started("b", "worker 1")
    progress.running["b"]["since"] -= 12.0  # 12 s in, 3 of its 10 units committed: 4 s per unit, 7 to go
    units["b"] = (3, 10)
    left, _ = progress.remaining()
    assert left == pytest.approx(max((28 + 60) / 2, 28), abs=0.5)
    lines = progress.worker_lines(["worker 1", "worker 2"])
    assert lines[0].startswith("  worker 1: b, 3/10 units, 12 s") and lines[1] == "  worker 2: idle"
    assert re.search(r"runs 1/3 done \(1 running\), units 7/14 committed \| elapsed \d+ s \| about \d+ s left "
                     r"\(measured\)", progress.overall())


def test_a_run_cannot_be_executed_twice_at_once(tmp_path):
    with run_lock("locked_run", tmp_path):
        assert lock_holder(lock_path("locked_run", tmp_path)) == f"pid {os.getpid()} on {os.uname().nodename}"
        with pytest.raises(RuntimeError, match="run .locked_run.. is being written by pid"):
            with run_lock("locked_run", tmp_path):
                pass
    assert lock_holder(lock_path("locked_run", tmp_path)) is None
    with run_lock("locked_run", tmp_path):  # released: free again
        pass


def test_unreachable_scheduler_fails_fast_naming_the_address(tmp_path):
    import distributed  # noqa: F401  (imported before timing)

    start = time.perf_counter()
    with pytest.raises(SystemExit, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9 within 2 s"):
        dask_client("tcp://127.0.0.1:9", None, connect_timeout=2.0)
    assert time.perf_counter() - start < 12  # bounded by the timeout, not Dask's default 30 s
    with pytest.raises(SystemExit, match="local:N with N >= 1"):
        dask_client("local:zero", None)
    out = _cli("--spec", _spec(tmp_path, "unreachable"), "--scheduler", "nonsense://host:1",
               "--connect-timeout", "2", timeout=120)
    assert out.returncode == 1 and "cannot reach the Dask scheduler at nonsense://host:1" in out.stderr


def test_a_killed_grid_worker_keeps_committed_groups_and_the_rerun_equals_a_sequential_run(tmp_path):
    # the contract the retry relies on: run_grid(jobs=2) whose pool loses a process raises, the groups committed
    # before stay in the CSV, and running it again computes only the rest
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    from uhop.experiments.retrieval import GridConfig, run_grid

    out, seen = tmp_path / "grid.csv", []

    def kill_a_worker(done, total):
        seen.append(done)
        if done == 1:
            multiprocessing.active_children()[0].kill()

    with pytest.raises(BrokenProcessPool):
        run_grid(GridConfig(**GRID), out, progress=False, threads=1, jobs=2, callback=kill_a_worker)
    kept = pd.read_csv(out)
    assert seen and kept.groupby(["M", "seed"]).ngroups == seen[-1] >= 1
    resumed = []
    final = run_grid(GridConfig(**GRID), out, progress=False, threads=1, jobs=2,
                     callback=lambda done, total: resumed.append(done)).drop(columns=TIMING)
    assert resumed[0] == seen[-1] + 1 and resumed[-1] == 6  # the committed groups were not recomputed
    reference = _reference(tmp_path)
    pd.testing.assert_frame_equal(final, reference)
    committed = reference.set_index(["M", "seed"]).index.isin(kept.set_index(["M", "seed"]).index)
    pd.testing.assert_frame_equal(kept.drop(columns=TIMING), reference[committed].reset_index(drop=True))


@pytest.mark.notebook
def test_local_pool_retries_killed_workers_from_their_committed_groups(tmp_path):
    tag = f"pool{os.getpid()}"
    spec = _fake_runs(tmp_path, tag, {
        "kill_unit": {"output": str(tmp_path / "unit.csv"), "record": str(tmp_path / "unit.jsonl"), "kill": "unit"},
        "kill_grid_worker": {"output": str(tmp_path / "gw.csv"), "record": str(tmp_path / "gw.jsonl"),
                             "kill": "grid_worker", "jobs": 2}})
    out = _cli("--spec", spec, "--jobs", "2", "--progress-every", "2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    kept_unit = _resumed_from_committed(_records(tmp_path / "unit.jsonl"))
    assert kept_unit == 2
    _resumed_from_committed(_records(tmp_path / "gw.jsonl"))
    reference = _reference(tmp_path)
    for name in ("unit", "gw"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / f"{name}.csv").drop(columns=TIMING), reference)
    text = out.stdout
    # the retries, said as they happen and in the summary
    assert (f"kill_unit_{tag}: attempt 1 ended: worker killed by SIGKILL; 2/6 units committed are kept; retrying "
            "from there (attempt 2)") in text
    assert f"kill_grid_worker_{tag}: attempt 1 ended: worker died" in text
    assert f"kill_unit_{tag}: ok after 2 attempts" in text and "finished in" in text and "2 run(s) ok, 0 failed" in text
    assert re.search(rf"  kill_unit_{tag}: ok \(after attempt 1: worker killed by SIGKILL; resumed", text)
    # progress: the overall line and one line per worker
    assert re.search(r"runs 0/2 done \(2 running\), units \d+/\d+ committed \| elapsed \d+ s \| about \d+ s left",
                     text)
    assert re.search(rf"  worker 1: kill_\w+_{tag}, (\d/6 units|units not known yet), \d+ s", text)
    assert re.search(rf"  worker 2: kill_\w+_{tag}, ", text)
    assert "runs 2/2 done (0 running), units 12/12 committed" in text
    log = (REPO / "_build" / "reproduce" / "logs" / f"kill_unit_{tag}.log").read_text()
    assert "attempt 1 started" in log and "attempt 2 started" in log and "attempt 2 ended: exit 0" in log


@pytest.mark.notebook
def test_dask_reschedules_a_run_whose_worker_died_and_it_resumes(tmp_path):
    tag = f"dask{os.getpid()}"
    spec = _fake_runs(tmp_path, tag, {"kill_dask_worker": {"output": str(tmp_path / "dk.csv"),
                                                          "record": str(tmp_path / "dk.jsonl"),
                                                          "kill": "dask_worker"}})
    out = _cli("--spec", spec, "--scheduler", "local:2", "--progress-every", "2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _resumed_from_committed(_records(tmp_path / "dk.jsonl")) == 2
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "dk.csv").drop(columns=TIMING), _reference(tmp_path))
    assert f"kill_dask_worker_{tag}: ok after 2 attempts" in out.stdout
    assert "attempt 1: its worker died before reporting; resumed from its committed units" in out.stdout
    assert re.search(rf"  worker tcp://127\.0\.0\.1:\d+: kill_dask_worker_{tag}, ", out.stdout)


@pytest.mark.notebook
def test_a_second_reproduce_on_the_same_run_or_output_is_refused_naming_the_holder(tmp_path):
    tag = f"lock{os.getpid()}"
    hold, csv = tmp_path / "go", tmp_path / "held.csv"
    params = {"output": str(csv), "record": str(tmp_path / "held.jsonl"), "hold": str(hold)}
    spec = _fake_runs(tmp_path, tag, {"held": params})
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    first = subprocess.Popen([sys.executable, "-m", "uhop.reproduce", "run", "--spec", spec], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        # the first run is inside its grid once it has committed a group: it holds the run's lock and the CSV's
        while not (tmp_path / "held.jsonl").exists() and time.time() < deadline:
            assert first.poll() is None, first.stdout.read()
            time.sleep(0.5)
        run_lock = lock_path(f"held_{tag}", REPO)
        holder = lock_holder(run_lock)
        assert holder and holder.startswith("pid ")
        second = _cli("--spec", spec, timeout=300)  # the same run
        assert second.returncode == reproduce.EXIT_LOCKED
        assert f"held_{tag}: {run_lock} is being written by {holder} (lock {run_lock}.lock)" in second.stderr
        other = _fake_runs(tmp_path, tag + "b", {"other": params})  # another run writing the same CSV
        third = _cli("--spec", other, timeout=300)
        assert third.returncode == reproduce.EXIT_LOCKED and f"{csv} is being written by pid " in third.stderr
        hold.touch()
        text, _ = first.communicate(timeout=600)
    finally:
        hold.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, text[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(csv).drop(columns=TIMING), _reference(tmp_path))  # nothing mixed


@pytest.mark.notebook
def test_sequential_local_pool_and_dask_give_identical_results(tmp_path):
    results = {}
    for how, args in (("seq", ["--jobs", "1"]), ("pool", ["--jobs", "2"]), ("dask", ["--scheduler", "local:2"])):
        spec = _spec(tmp_path, how)
        dry = _cli("--spec", spec, "--dry-run", *args)
        assert dry.returncode == 0 and f"smoke_capacity_{how}{os.getpid()}_s1" in dry.stdout and not (tmp_path / how).exists()
        out = _cli("--spec", spec, *args)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert out.stdout.count("[reproduce] ") >= 4 and "runs 2/2 done" in out.stdout
        results[how] = _rows(tmp_path / how)
    pd.testing.assert_frame_equal(results["seq"], results["pool"])
    pd.testing.assert_frame_equal(results["seq"], results["dask"])
    assert len(results["seq"]) > 0
