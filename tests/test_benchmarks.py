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
