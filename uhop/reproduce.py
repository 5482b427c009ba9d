"""Run the full-size experiments: ``python -m uhop.reproduce run`` (what ``make results`` calls).

The runs are listed in ``notebooks/full_size.yml`` of the repository: each names an experiment notebook and the
papermill parameters of its full-size configuration; the notebook writes its results and manifests under
``results/``.  Three ways to run them:

* **sequentially** (default, ``--jobs 1``): one run after another on this machine;
* **a local pool** (``--jobs N``): N runs at a time, each in its own process with one torch thread
  (``OMP_NUM_THREADS=1``) and, when GPUs are visible, the GPU of its worker slot (``CUDA_VISIBLE_DEVICES``);
* **a Dask cluster** (``--scheduler tcp://host:8786``, or ``--scheduler local:N`` for a
  ``distributed.LocalCluster`` of N workers on this machine, or ``--cluster-config FILE`` for a
  ``dask-jobqueue`` Slurm/PBS cluster): every run is one task; the workers need this checkout at the same
  path (a shared file system) and the ``cluster`` extra.

Each run is one unit of work: a child process ``python -m uhop.reproduce run --only NAME --in-process``
whose output goes to ``_build/reproduce/logs/NAME.log``.  A run holds an exclusive lock
(``_build/reproduce/locks/NAME.lock``) while it executes, so a second ``reproduce`` process asked for the same
run refuses, naming the holder, instead of writing into the same files.  The runs write their results through
the notebooks' own resumable writers (atomic files per finished unit -- a grid's (M, seed) group, a training
run's (variant, seed) -- with configuration fingerprints checked before writing), so a run interrupted on any
path resumes from what it had committed.

**A worker that dies** (the run's process or its notebook kernel killed, e.g. by the out-of-memory killer, or a
process of a grid's worker pool killed) makes the run retryable: it is started again, up to ``--retries``
times, and resumes from its last committed unit; what it had committed is kept.  A notebook that fails with an
ordinary error is not retried (it would fail again).  On Dask, a task whose worker process dies is rescheduled
by the scheduler and resumes the same way; the run's process is started so that it dies with its worker
(Linux), so no orphan keeps writing.  Which unit of a grid runs where never changes a number: every unit seeds
itself, so results equal a sequential run's (tested, also with a worker killed mid-run).

This module needs the ``book`` extra (jupytext, papermill, PyYAML) and a checkout of the repository.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

__all__ = ["load_runs", "estimate_seconds", "run_status", "run_units", "main"]

# exit codes of one run's child process (``--in-process``)
EXIT_FAILED = 1  # the notebook raised: not retried, it would fail again
EXIT_LOCKED = 73  # the run (or its output) is being written by another process: refused, not retried
EXIT_WORKER_DIED = 75  # the notebook's kernel, or a process of its grid's worker pool, died: retried


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def load_runs(spec: Path | None = None) -> list[dict]:
    """The list of full-size runs declared in ``notebooks/full_size.yml`` (or ``spec``)."""
    import yaml

    spec = Path(spec) if spec else _repo() / "notebooks" / "full_size.yml"
    if not spec.exists():
        raise FileNotFoundError(f"{spec} not found: run from a checkout of the repository")
    runs = (yaml.safe_load(spec.read_text()) or {}).get("runs") or []
    names = set()
    for run in runs:
        for key in ("name", "notebook"):
            if key not in run:
                raise ValueError(f"{spec}: a run lacks the key {key!r}: {run}")
        if run["name"] in names:
            raise ValueError(f"{spec}: the run name {run['name']!r} appears twice")
        names.add(run["name"])
    return runs


def notebook_source(run: dict, spec: Path | None = None) -> Path:
    """The notebook a run executes: ``notebooks/<notebook>.py`` of the checkout, or, when ``notebook`` ends in
    ``.py``, that file (a relative path is taken against the folder of the runs file ``spec``)."""
    name = str(run["notebook"])
    if name.endswith(".py"):
        path = Path(name)
        return path if path.is_absolute() else (Path(spec or _repo() / "notebooks" / "x").parent / path).resolve()
    return _repo() / "notebooks" / f"{name}.py"


_UNITS = {"s": 1, "sec": 1, "min": 60, "h": 3600, "hour": 3600, "hours": 3600}


def estimate_seconds(text: str | None) -> float | None:
    """Seconds in a human estimate such as ``"about 2 min"``, ``"5 h of one core"`` or ``"1.5 hours"`` (the first
    number and unit); ``None`` when there is none."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*(hours|hour|h|min|sec|s)\b", str(text or ""))
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def run_units(run: dict) -> tuple[int, int] | None:
    """``(committed, total)`` units of a run as they are on disk, or ``None`` when unknown yet.

    A unit is what the run's writer commits atomically: a retrieval grid's (M, seed) group (from the grid's
    ``<output>.manifest.json``), a classification or forecasting tier's (variant, seed) training run."""
    from .experiments.notebook import notebook_path

    params = run.get("parameters") or {}
    if run["notebook"] == "forecasting" and params.get("out_dir"):
        from .experiments.forecasting import tier_status

        done, pending = tier_status(run["name"], notebook_path(params["out_dir"]), exact=True)
        return len(done), len(done) + len(pending)
    if run["notebook"] == "classification" and params.get("output_dir"):
        from .experiments.classification import tier_status

        done, pending = tier_status(run["name"], notebook_path(params["output_dir"]))
        return len(done), len(done) + len(pending)
    if params.get("output"):
        manifest = Path(f"{notebook_path(params['output'])}.manifest.json")
        if manifest.exists():
            m = json.loads(manifest.read_text())
            if "groups_total" in m:
                return int(m.get("groups_done") or 0), int(m["groups_total"])
    return None


def run_status(run: dict) -> str:
    """``"done"``, ``"partial k/n"`` or ``"missing"``, from the run's outputs as they are on disk."""
    from .experiments.notebook import notebook_path

    params = run.get("parameters") or {}
    try:
        units = run_units(run)
        if units is None:
            if not params.get("output"):
                return "?"
            out = notebook_path(params["output"])
            manifest = Path(f"{out}.manifest.json")
            return "done" if out.exists() and manifest.exists() else "partial" if out.exists() else "missing"
    except Exception as err:  # a status line must never stop a listing
        return f"? ({type(err).__name__})"
    done, total = units
    return "done" if done >= total else f"partial {done}/{total}" if done else "missing"


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _table(runs: list[dict]) -> str:
    rows = [("name", "notebook", "estimate", "output", "status")]
    total = 0.0
    for run in runs:
        params = run.get("parameters") or {}
        out = params.get("output") or params.get("out_dir") or params.get("output_dir") or "-"
        est = estimate_seconds(run.get("estimate"))
        total += est or 0.0
        rows.append((run["name"], run["notebook"], _format_duration(est), str(out).replace("../", ""),
                     run_status(run)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(runs)} runs, estimated {_format_duration(total)} in all when run one after another")
    return "\n".join(lines)


# -- executing one run (in the child process) -------------------------------------------------------------------


def _lock_path(name: str, repo: Path) -> Path:
    return repo / "_build" / "reproduce" / "locks" / name


def _run_lock(name: str, repo: Path, wait: float = 0.0):
    """Exclusive lock for one run (:func:`uhop.provenance.writer_lock`): a second holder gets a clear error."""
    from .provenance import writer_lock

    return writer_lock(_lock_path(name, repo), what=f"run {name!r}", wait=wait)


def _execute(run: dict, repo: Path, spec: Path | None = None, lock_wait: float = 0.0) -> float:
    """Execute one run's notebook with papermill in this process (under the run's lock)."""
    import jupytext
    import papermill as pm

    source = notebook_source(run, spec)
    out = repo / "_build" / "papermill" / "full" / f"{run['name']}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _run_lock(run["name"], repo, wait=lock_wait):
        pm.execute_notebook(jupytext.read(source), str(out), parameters=run.get("parameters") or {},
                            cwd=str(source.parent), kernel_name="python3", progress_bar=False, log_output=True)
    return time.perf_counter() - start


# exceptions, raised in the notebook (papermill reports their names), that mean a process died under the run
_DIED_IN_NOTEBOOK = {"BrokenProcessPool", "DeadKernelError", "KilledWorker"}


def _execute_reporting(run: dict, repo: Path, spec: Path, lock_wait: float) -> int:
    """:func:`_execute`, its outcome as an exit code: ``EXIT_LOCKED`` / ``EXIT_WORKER_DIED`` for the cases the
    parent treats apart (refusal; retry), an ordinary notebook error raised (traceback in the log, exit 1)."""
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from .provenance import LockedError

    name = run["name"]
    try:
        seconds = _execute(run, repo, spec, lock_wait)
    except LockedError as err:
        print(f"[reproduce] {name}: refused: {err}", flush=True)
        return EXIT_LOCKED
    except DeadKernelError:
        print(f"[reproduce] {name}: the notebook's kernel died (killed?); its committed units are kept",
              flush=True)
        return EXIT_WORKER_DIED
    except PapermillExecutionError as err:
        if err.ename == "LockedError":  # the notebook's own writer lock (e.g. the grid CSV) is held
            print(f"[reproduce] {name}: refused: {err.evalue}", flush=True)
            return EXIT_LOCKED
        if err.ename in _DIED_IN_NOTEBOOK:
            print(f"[reproduce] {name}: a worker process of the notebook died ({err.ename}: {err.evalue}); its "
                  "committed units are kept", flush=True)
            return EXIT_WORKER_DIED
        raise
    print(f"[reproduce] {name} finished in {seconds:.0f} s", flush=True)
    return 0


# -- one run as a unit of work: a child process, retried when its worker dies ----------------------------------


def _unit_command(name: str, spec: Path, lock_wait: float = 0.0) -> list[str]:
    cmd = [sys.executable, "-m", "uhop.reproduce", "run", "--only", name, "--spec", str(spec), "--in-process"]
    return cmd + (["--lock-wait", str(lock_wait)] if lock_wait else [])


def _child_env(gpu: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def _die_with_parent():
    """A ``preexec_fn`` making the child receive SIGKILL when the thread that started it dies (Linux
    ``PR_SET_PDEATHSIG``): a killed Dask worker takes its run's process with it (and the notebook kernel follows,
    it polls its parent), instead of leaving an orphan that keeps writing while the task is retried elsewhere.
    Resolved before the fork: the function run between fork and exec must not import anything."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _reason(rc: int | None) -> str:
    if rc == 0:
        return "ok"
    if rc is None:
        return "its worker died before reporting"
    if rc < 0:
        try:
            return f"worker killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"worker killed by signal {-rc}"
    if rc == EXIT_WORKER_DIED:
        return "worker died (the notebook's kernel or a grid worker process)"
    if rc == EXIT_LOCKED:
        return "refused: locked by another process"
    return f"failed (exit {rc})"


def _retryable(rc: int | None) -> bool:
    return rc is None or rc < 0 or rc == EXIT_WORKER_DIED


_SESSION = "[reproduce] session "
_ATTEMPT = re.compile(r"^\[reproduce\] attempt (\d+) (started|ended)")


def _previous_attempts(log: Path, session: str) -> list[dict]:
    """The attempts of this run already made in this session (a Dask task rescheduled after its worker died
    finds its predecessor's in the log; an attempt that never wrote its end died with its worker)."""
    if not log.exists():
        return []
    with open(log, errors="replace") as fh:
        if fh.readline().rstrip("\n") != _SESSION + session:
            return []
        started, ended = [], {}
        for line in fh:
            m = _ATTEMPT.match(line)
            if m and m.group(2) == "started":
                started.append(int(m.group(1)))
            elif m:
                rc = re.search(r"exit (-?\d+)", line)
                ended[int(m.group(1))] = int(rc.group(1)) if rc else None
    return [{"attempt": k, "returncode": ended.get(k), "reason": _reason(ended.get(k))} for k in started]


def _open_attempt(log: Path, session: str) -> bool:
    """Whether the run of ``log`` is executing now in this session (its last attempt started, not ended)."""
    tries = _previous_attempts(log, session)
    return bool(tries) and tries[-1]["returncode"] is None


def _run_unit(name: str, spec: str, repo: str, gpu: str | None = None, retries: int = 0, session: str = "",
              report=None) -> dict:
    """One run in a child process, its output in ``_build/reproduce/logs/NAME.log``; a run whose worker died is
    started again (it resumes from its committed units), up to ``retries`` more attempts in all.  Returns what
    happened.  ``report(name, attempt, reason, units)`` is told of each retry.  Module-level so that Dask can
    ship it to a worker."""
    log = Path(repo) / "_build" / "reproduce" / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    run = next(r for r in load_runs(Path(spec)) if r["name"] == name)
    attempts = _previous_attempts(log, session) if session else []
    host = os.uname().nodename
    start = time.perf_counter()
    preexec = _die_with_parent()
    while True:
        attempt = len(attempts) + 1
        if not attempts:  # a new session's log starts empty
            log.write_text(f"{_SESSION}{session}\n")
        # appending only: a killed attempt's kernel may still write its last words while the next attempt starts
        with open(log, "a") as fh:
            fh.write(f"[reproduce] attempt {attempt} started on {host} (pid {os.getpid()})\n")
            fh.flush()
            t0 = time.perf_counter()
            # a retry waits a little for the lock: the killed attempt's process may still be going away
            rc = subprocess.run(_unit_command(name, Path(spec), 60.0 if attempt > 1 else 0.0), cwd=repo,
                                stdout=fh, stderr=subprocess.STDOUT, env=_child_env(gpu),
                                preexec_fn=preexec).returncode
            fh.write(f"\n[reproduce] attempt {attempt} ended: exit {rc}\n")
        reason = _reason(rc)
        if rc == EXIT_LOCKED:  # the child named the holder: pass its words on
            reason = next((line.split("refused:", 1)[1].strip() for line in reversed(_tail(log).splitlines())
                           if "refused:" in line), reason)
            reason = f"refused: {reason}"
        attempts.append({"attempt": attempt, "returncode": rc, "reason": reason,
                         "seconds": round(time.perf_counter() - t0, 1)})
        if not _retryable(rc) or attempt > retries:
            break
        if report is not None:
            report(name, attempt, _reason(rc), _safe_units(run))
    return {"name": name, "returncode": rc, "reason": reason, "seconds": time.perf_counter() - start,
            "log": str(log), "host": host, "attempts": attempts}


def _safe_units(run: dict) -> tuple[int, int] | None:
    try:
        return run_units(run)
    except Exception:  # progress is for reading, never a reason to stop
        return None


def _gpus() -> list[str]:
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover
        return []


def _tail(log: str | Path, size: int = 4096) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - size, 0))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _last_line(log: str | Path, width: int = 90) -> str:
    """The last non-empty line of a log (a tqdm bar's latest state: the text after its last carriage return)."""
    # the kernel's own warnings (unencrypted TCP, shutting down) say nothing about the run's progress
    lines = [seg.strip() for seg in re.split(r"[\r\n]", _tail(log))
             if seg.strip() and not seg.startswith("[IPKernelApp]")]
    text = lines[-1] if lines else ""
    return text if len(text) <= width else text[: width - 3] + "..."


# -- progress ---------------------------------------------------------------------------------------------------


class _Progress:
    """What a person watching needs: one overall line (runs and units done, elapsed, time left estimated from
    the measured cost of finished units) and one line per worker (its run, units, time, last log line).

    A run's units are read from its outputs on disk (:func:`run_units`).  Time left: a running run that has
    committed units since it started is extrapolated from its own measured cost per unit; the other runs from
    their ``estimate`` in the runs file, scaled by the measured/estimated ratio of the runs finished so far;
    the sum is spread over the workers."""

    def __init__(self, runs: list[dict], workers: int, repo: Path, stream=None):
        self.runs = {r["name"]: r for r in runs}
        self.workers = max(int(workers), 1)
        self.estimates = {r["name"]: estimate_seconds(r.get("estimate")) for r in runs}
        self.log_dir = repo / "_build" / "reproduce" / "logs"
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.running: dict[str, dict] = {}  # name -> worker, since, units at start
        self.done: dict[str, dict] = {}
        self.lock = threading.Lock()

    def _print(self, *lines: str) -> None:
        with self.lock:
            for line in lines:
                print(f"[reproduce] {line}", file=self.stream, flush=True)

    def started(self, name: str, worker: str) -> None:
        units = _safe_units(self.runs[name])
        self.running[name] = {"worker": worker, "since": time.perf_counter(), "units0": units[0] if units else 0}

    def retrying(self, name: str, attempt: int, reason: str, units) -> None:
        kept = f"{units[0]}/{units[1]} units committed are kept" if units else "what it had committed is kept"
        self._print(f"{name}: attempt {attempt} ended: {reason}; {kept}; retrying from there "
                    f"(attempt {attempt + 1})")
        if name in self.running:
            self.running[name].update(since=time.perf_counter(), units0=units[0] if units else 0)

    def finished(self, result: dict) -> None:
        self.running.pop(result["name"], None)
        self.done[result["name"]] = result
        tries = len(result.get("attempts") or ()) or 1
        if result["returncode"] == 0:
            state = "ok" if tries == 1 else f"ok after {tries} attempts"
        else:
            state = f"FAILED: {result['reason']} (see {result['log']})"
        self._print(f"{result['name']}: {state} in {_format_duration(result['seconds'])} on "
                    f"{result.get('host', '?')}", self.overall())

    def remaining(self) -> tuple[float | None, str]:
        now = time.perf_counter()
        ok = [d for d in self.done.values() if d["returncode"] == 0 and self.estimates.get(d["name"])]
        est_ok = sum(self.estimates[d["name"]] for d in ok)
        pace = sum(d["seconds"] for d in ok) / est_ok if est_ok else None
        measured = pace is not None
        left, unknown, longest = 0.0, 0, 0.0
        for name in self.runs:
            if name in self.done:
                continue
            est = self.estimates[name]
            info = self.running.get(name)
            if info is not None:
                t = now - info["since"]
                units = _safe_units(self.runs[name])
                if units and units[0] > info["units0"]:
                    secs = (units[1] - units[0]) * t / (units[0] - info["units0"])
                    measured = True
                elif est:
                    secs = max(est * (pace or 1.0) - t, 0.0)
                else:
                    unknown += 1
                    continue
                longest = max(longest, secs)
            elif est:
                secs = est * (pace or 1.0)
            else:
                unknown += 1
                continue
            left += secs
        if unknown and not left:
            return None, "unknown"
        basis = "measured" if measured else "from the estimates"
        return max(left / self.workers, longest), basis + (f"; {unknown} run(s) without an estimate" if unknown
                                                           else "")

    def overall(self) -> str:
        elapsed = time.perf_counter() - self.start
        done_units = total_units = 0
        for name, run in self.runs.items():
            units = _safe_units(run)
            if units:
                done_units, total_units = done_units + units[0], total_units + units[1]
        failed = sum(1 for d in self.done.values() if d["returncode"] != 0)
        if len(self.done) < len(self.runs):
            secs, basis = self.remaining()
            left = f"about {_format_duration(secs)} left ({basis})"
        else:
            left = "nothing left"
        units = f"units {done_units}/{total_units} committed" if total_units else "units not known yet"
        return (f"runs {len(self.done)}/{len(self.runs)} done ({len(self.running)} running"
                + (f", {failed} failed" if failed else "")
                + f"), {units} | elapsed {_format_duration(elapsed)} | {left}")

    def worker_lines(self, workers: list[str] | None = None) -> list[str]:
        busy = {info["worker"]: name for name, info in list(self.running.items())}
        lines = []
        for worker in workers if workers is not None else sorted(busy):
            name = busy.get(worker)
            if name is None:
                lines.append(f"  {worker}: idle")
                continue
            info = self.running[name]
            units = _safe_units(self.runs[name])
            done = f"{units[0]}/{units[1]} units" if units else "units not known yet"
            last = _last_line(self.log_dir / f"{name}.log")
            lines.append(f"  {worker}: {name}, {done}, {_format_duration(time.perf_counter() - info['since'])}"
                         + (f" | {last}" if last else ""))
        return lines

    def snapshot(self, workers: list[str] | None = None) -> None:
        self._print(self.overall(), *self.worker_lines(workers))

    def every(self, seconds: float, workers=None) -> threading.Event:
        """Print a snapshot every ``seconds`` until the returned event is set (``workers``: a callable giving
        the worker labels, or None for those busy)."""
        stop = threading.Event()

        def loop():
            while not stop.wait(seconds):
                try:
                    self.snapshot(workers() if callable(workers) else workers)
                except Exception as err:  # pragma: no cover - a progress line must never stop the runs
                    self._print(f"(progress unavailable: {type(err).__name__}: {err})")

        threading.Thread(target=loop, daemon=True, name="reproduce-progress").start()
        return stop


# -- the three ways ---------------------------------------------------------------------------------------------


def run_local(runs: list[dict], jobs: int, spec: Path, repo: Path, *, retries: int = 2, session: str = "",
              progress_every: float = 60.0) -> list[dict]:
    """Every run as a child process, ``jobs`` at a time; GPUs (if any) assigned round-robin by worker slot."""
    gpus = _gpus()
    progress = _Progress(runs, jobs, repo)
    slots: queue.Queue = queue.Queue()
    for i in range(jobs):
        slots.put(i)
    labels = [f"worker {i + 1}" + (f" (GPU {gpus[i % len(gpus)]})" if gpus else "") for i in range(jobs)]

    def task(run):
        slot = slots.get()
        try:
            progress.started(run["name"], labels[slot])
            return _run_unit(run["name"], str(spec), str(repo), gpus[slot % len(gpus)] if gpus else None,
                             retries, session, progress.retrying)
        finally:
            slots.put(slot)

    results = []
    stop = progress.every(progress_every, labels)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for fut in as_completed([pool.submit(task, run) for run in runs]):
                result = fut.result()
                progress.finished(result)
                results.append(result)
    finally:
        stop.set()
    return results


def _dask_client(scheduler: str | None, cluster_config: str | None, connect_timeout: float = 10.0,
                 retries: int = 2):
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover
        raise SystemExit("--scheduler needs Dask distributed: pip install 'uhop[cluster]'") from err
    if cluster_config:
        import yaml

        cfg = yaml.safe_load(Path(cluster_config).read_text()) or {}
        kind = cfg.pop("kind", "slurm")
        jobs = int(cfg.pop("jobs", 1))
        try:
            import dask_jobqueue
        except ImportError as err:  # pragma: no cover
            raise SystemExit("--cluster-config needs dask-jobqueue: pip install dask-jobqueue") from err
        kinds = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
        if kind not in kinds:
            raise SystemExit(f"{cluster_config}: kind must be one of {sorted(kinds)}, got {kind!r}")
        cluster = kinds[kind](**cfg)
        cluster.scale(jobs=jobs)
        return Client(cluster), cluster
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
            assert n >= 1
        except (ValueError, AssertionError):
            raise SystemExit(f"--scheduler {scheduler}: expected local:N with N >= 1 workers") from None
        # a task whose worker dies is rescheduled this many times before Dask gives up on it (KilledWorker)
        dask.config.set({"distributed.scheduler.allowed-failures": retries})
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=f"{connect_timeout}s"), None
    except Exception as err:  # OSError, TimeoutError, ValueError for a malformed address, ...
        raise SystemExit(f"cannot reach the Dask scheduler at {scheduler} within {connect_timeout:g} s "
                         f"({type(err).__name__}: {err}); is it running, and is the address right? "
                         "(--connect-timeout sets the wait)") from None


def run_dask(runs: list[dict], spec: Path, repo: Path, scheduler: str | None, cluster_config: str | None = None,
             *, retries: int = 2, session: str = "", progress_every: float = 60.0, connect_timeout: float = 10.0
             ) -> list[dict]:
    """Every run as one Dask task.  A task whose worker process dies is rescheduled by Dask (its scheduler's
    ``allowed-failures``, set to ``retries`` for ``local:N``) and resumes from its committed units; a run whose
    child process dies under a living worker is retried by :func:`_run_unit` (``retries``)."""
    from distributed import as_completed as dask_completed

    client, cluster = _dask_client(scheduler, cluster_config, connect_timeout, retries)
    try:
        workers = len(client.scheduler_info().get("workers") or {}) or 1
        progress = _Progress(runs, workers, repo)
        keys = {f"uhop-run-{r['name']}": r["name"] for r in runs}

        def worker_labels():
            # which worker processes which run, as the scheduler sees it
            busy = {}
            for addr, tasks in client.processing().items():
                for key in tasks:
                    # processing includes a task queued on the worker: running when its log has an open attempt
                    if key in keys and _open_attempt(progress.log_dir / f"{keys[key]}.log", session):
                        busy[keys[key]] = f"worker {addr}"
            for name in list(progress.running):
                if name not in busy:
                    progress.running.pop(name, None)
            for name, label in busy.items():
                if progress.running.get(name, {}).get("worker") != label:
                    progress.started(name, label)
            known = {f"worker {addr}" for addr in client.scheduler_info().get("workers") or {}}
            return sorted(known | set(busy.values()))

        futures = {client.submit(_run_unit, r["name"], str(spec), str(repo), None, retries, session,
                                 key=f"uhop-run-{r['name']}", pure=False): r["name"] for r in runs}
        results = []
        stop = progress.every(progress_every, worker_labels)
        try:
            for fut in dask_completed(list(futures)):
                try:
                    result = fut.result()
                except Exception as err:  # KilledWorker: its workers died more than allowed-failures times
                    name = futures[fut]
                    result = {"name": name, "returncode": None, "seconds": 0.0, "host": "?",
                              "reason": f"{type(err).__name__}: {err}",
                              "log": str(repo / "_build" / "reproduce" / "logs" / f"{name}.log"),
                              "attempts": _previous_attempts(repo / "_build" / "reproduce" / "logs" / f"{name}.log",
                                                             session)}
                progress.finished(result)
                results.append(result)
        finally:
            stop.set()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results


def _summary(results: list[dict], elapsed: float) -> list[str]:
    ok = [r for r in results if r["returncode"] == 0]
    lines = [f"finished in {_format_duration(elapsed)}: {len(ok)} run(s) ok, {len(results) - len(ok)} failed"]
    for r in results:
        tries = r.get("attempts") or []
        if r["returncode"] == 0 and len(tries) <= 1:
            continue
        history = "; ".join(f"attempt {a['attempt']}: {a['reason']}" for a in tries[:-1] if a["returncode"] != 0)
        state = "ok" if r["returncode"] == 0 else f"FAILED: {r['reason']}, log {r['log']}"
        lines.append(f"  {r['name']}: {state}" + (f" (after {history}; resumed from its committed units)"
                                                    if history else ""))
    return lines


def _unknown_names(unknown: list[str], known: list[str]) -> str:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        parts.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    listing = ", ".join(known) if len(known) <= 40 else ", ".join(known[:40]) + ", ..."
    return f"unknown run name(s) {'; '.join(parts)}. Known runs: {listing}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uhop.reproduce", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute the full-size runs (sequentially, in a local pool or on Dask)")
    run_p.add_argument("--list", action="store_true", help="a table of the runs (estimate, output, status); run nothing")
    run_p.add_argument("--dry-run", action="store_true", help="print the plan and the commands; run nothing")
    run_p.add_argument("--only", action="append", default=[], metavar="NAME", help="run only NAME (repeatable)")
    run_p.add_argument("--jobs", type=int, default=1, help="runs at a time on this machine (default 1)")
    run_p.add_argument("--scheduler", default=None,
                       help="Dask scheduler address (tcp://host:8786), or local:N for a LocalCluster of N workers")
    run_p.add_argument("--cluster-config", default=None, help="YAML for a dask-jobqueue cluster (kind: slurm|pbs, "
                                                               "jobs: N, and the cluster's keyword arguments)")
    run_p.add_argument("--connect-timeout", type=float, default=10.0,
                       help="seconds to wait for the Dask scheduler before giving up (default 10)")
    run_p.add_argument("--retries", type=int, default=2,
                       help="times a run whose worker died is started again, resuming (default 2)")
    run_p.add_argument("--progress-every", type=float, default=60.0,
                       help="seconds between progress snapshots (overall line and one line per worker; default 60)")
    run_p.add_argument("--spec", default=None, help="the runs file (default notebooks/full_size.yml)")
    run_p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # one unit, in this process
    run_p.add_argument("--lock-wait", type=float, default=0.0, help=argparse.SUPPRESS)  # a retry waits for the lock
    args = parser.parse_args(argv)

    repo = _repo()
    spec = Path(args.spec).resolve() if args.spec else repo / "notebooks" / "full_size.yml"
    runs = load_runs(spec)
    if args.only:
        unknown = [n for n in dict.fromkeys(args.only) if n not in {r["name"] for r in runs}]
        if unknown:
            parser.error(_unknown_names(unknown, [r["name"] for r in runs]))
        runs = [r for r in runs if r["name"] in args.only]
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.retries < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    if args.progress_every <= 0 or args.connect_timeout <= 0:
        parser.error("--progress-every and --connect-timeout must be > 0")
    missing = [f"{r['name']}: {notebook_source(r, spec)}" for r in runs if not notebook_source(r, spec).exists()]
    if missing:
        parser.error("notebook(s) not found: " + "; ".join(missing))
    if not runs:
        print(f"[reproduce] {spec} lists no runs; nothing to do.")
        return 0
    if args.list:
        print(_table(runs))
        return 0
    if args.in_process:
        for run in runs:
            print(f"[reproduce] {run['name']}: executing {notebook_source(run, spec)}", flush=True)
            rc = _execute_reporting(run, repo, spec, args.lock_wait)
            if rc:
                return rc
        return 0
    where = (f"Dask ({args.scheduler or args.cluster_config})" if args.scheduler or args.cluster_config
             else f"{args.jobs} local worker(s)")
    session = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    print(f"[reproduce] {len(runs)} run(s) on {where}; logs in {repo / '_build' / 'reproduce' / 'logs'} "
          f"(session {session})", flush=True)
    for run in runs:
        params = " ".join(f"-p {k} {shlex.quote(str(v))}" for k, v in (run.get("parameters") or {}).items())
        print(f"[reproduce]   {run['name']} (estimate: {run.get('estimate', '?')}): {run['notebook']} "
              f"through papermill with {params}", flush=True)
    if args.dry_run:
        return 0
    # refuse at once, before starting anything, when another process is executing one of these runs or writing
    # one of their output files (the child's own lock is what excludes a second writer; this names the holder)
    from .experiments.notebook import notebook_path
    from .provenance import lock_holder

    busy = []
    for run in runs:
        out = (run.get("parameters") or {}).get("output")
        for path in [_lock_path(run["name"], repo)] + ([notebook_path(out)] if out else []):
            holder = lock_holder(path)
            if holder:
                busy.append(f"{run['name']}: {path} is being written by {holder} (lock {path}.lock)")
    if busy:
        print("[reproduce] refused: another process is executing these runs; wait for it to finish or stop it, "
              "then run again (it resumes from what was committed):\n  " + "\n  ".join(busy), file=sys.stderr,
              flush=True)
        return EXIT_LOCKED
    start = time.perf_counter()
    if args.scheduler or args.cluster_config:
        results = run_dask(runs, spec, repo, args.scheduler, args.cluster_config, retries=args.retries,
                           session=session, progress_every=args.progress_every, connect_timeout=args.connect_timeout)
    else:
        results = run_local(runs, args.jobs, spec, repo, retries=args.retries, session=session,
                            progress_every=args.progress_every)
    for line in _summary(results, time.perf_counter() - start):
        print(f"[reproduce] {line}", flush=True)
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
