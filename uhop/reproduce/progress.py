"""The progress display of a session: one overall line (runs and units done, time left) and one line per
worker, printed after each finished run and every ``--progress-every`` seconds."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from .runs import estimate_seconds, format_duration, safe_units
from .unit import last_line


class Progress:
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
        units = safe_units(self.runs[name])
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
        self._print(f"{result['name']}: {state} in {format_duration(result['seconds'])} on "
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
                units = safe_units(self.runs[name])
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
            units = safe_units(run)
            if units:
                done_units, total_units = done_units + units[0], total_units + units[1]
        failed = sum(1 for d in self.done.values() if d["returncode"] != 0)
        if len(self.done) < len(self.runs):
            secs, basis = self.remaining()
            left = f"about {format_duration(secs)} left ({basis})"
        else:
            left = "nothing left"
        units = f"units {done_units}/{total_units} committed" if total_units else "units not known yet"
        return (f"runs {len(self.done)}/{len(self.runs)} done ({len(self.running)} running"
                + (f", {failed} failed" if failed else "")
                + f"), {units} | elapsed {format_duration(elapsed)} | {left}")

    def worker_lines(self, workers: list[str] | None = None) -> list[str]:
        busy = {info["worker"]: name for name, info in list(self.running.items())}
        lines = []
        for worker in workers if workers is not None else sorted(busy):
            name = busy.get(worker)
            if name is None:
                lines.append(f"  {worker}: idle")
                continue
            info = self.running[name]
            units = safe_units(self.runs[name])
            done = f"{units[0]}/{units[1]} units" if units else "units not known yet"
            last = last_line(self.log_dir / f"{name}.log")
            lines.append(f"  {worker}: {name}, {done}, {format_duration(time.perf_counter() - info['since'])}"
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
