"""One run as a unit of work: a child process ``python -m uhop.reproduce run --only NAME --in-process`` with its
output in ``_build/reproduce/logs/NAME.log``, started again when its worker dies; the log's attempt records
that a rescheduled Dask task reads, and the log's last line for the progress display."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .execute import EXIT_LOCKED, EXIT_WORKER_DIED
from .runs import load_runs, safe_units


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


def previous_attempts(log: Path, session: str) -> list[dict]:
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


def open_attempt(log: Path, session: str) -> bool:
    """Whether the run of ``log`` is executing now in this session (its last attempt started, not ended)."""
    tries = previous_attempts(log, session)
    return bool(tries) and tries[-1]["returncode"] is None


def run_unit(name: str, spec: str, repo: str, gpu: str | None = None, retries: int = 0, session: str = "",
              report=None) -> dict:
    """One run in a child process, its output in ``_build/reproduce/logs/NAME.log``; a run whose worker died is
    started again (it resumes from its committed units), up to ``retries`` more attempts in all.  Returns what
    happened.  ``report(name, attempt, reason, units)`` is told of each retry.  Module-level so that Dask can
    ship it to a worker."""
    log = Path(repo) / "_build" / "reproduce" / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    run = next(r for r in load_runs(Path(spec)) if r["name"] == name)
    attempts = previous_attempts(log, session) if session else []
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
            report(name, attempt, _reason(rc), safe_units(run))
    return {"name": name, "returncode": rc, "reason": reason, "seconds": time.perf_counter() - start,
            "log": str(log), "host": host, "attempts": attempts}


def _tail(log: str | Path, size: int = 4096) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - size, 0))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def last_line(log: str | Path, width: int = 90) -> str:
    """The last non-empty line of a log (a tqdm bar's latest state: the text after its last carriage return)."""
    # the kernel's own warnings (unencrypted TCP, shutting down) say nothing about the run's progress
    lines = [seg.strip() for seg in re.split(r"[\r\n]", _tail(log))
             if seg.strip() and not seg.startswith("[IPKernelApp]")]
    text = lines[-1] if lines else ""
    return text if len(text) <= width else text[: width - 3] + "..."
