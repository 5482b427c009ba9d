"""Run the full-size experiments: ``python -m uhop.reproduce run`` (what ``make results`` calls).

The runs are listed in ``notebooks/full_size.yml`` of the repository: each names an experiment
notebook and the papermill parameters of its full-size configuration. The executed notebooks are
written under ``_build/papermill/full/``; the notebooks themselves write their results and
manifests under ``results/``. This module needs the ``book`` extra (jupytext, papermill, PyYAML)
and a checkout of the repository, not just the installed package.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

__all__ = ["load_runs", "main"]


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def load_runs(spec: Path | None = None) -> list[dict]:
    """The list of full-size runs declared in ``notebooks/full_size.yml``."""
    import yaml

    spec = spec or _repo() / "notebooks" / "full_size.yml"
    if not spec.exists():
        raise FileNotFoundError(f"{spec} not found: run from a checkout of the repository")
    runs = (yaml.safe_load(spec.read_text()) or {}).get("runs") or []
    for run in runs:
        for key in ("name", "notebook"):
            if key not in run:
                raise ValueError(f"{spec}: a run lacks the key {key!r}: {run}")
    return runs


def _papermill_command(run: dict) -> str:
    params = " ".join(f"-p {k} {shlex.quote(str(v))}" for k, v in (run.get("parameters") or {}).items())
    return f"papermill notebooks/{run['notebook']}.ipynb _build/papermill/full/{run['name']}.ipynb {params}".strip()


def _execute(run: dict, repo: Path) -> float:
    import jupytext
    import papermill as pm

    source = repo / "notebooks" / f"{run['notebook']}.py"
    out = repo / "_build" / "papermill" / "full" / f"{run['name']}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pm.execute_notebook(
        jupytext.read(source),
        str(out),
        parameters=run.get("parameters") or {},
        cwd=str(source.parent),
        kernel_name="python3",
        progress_bar=True,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uhop.reproduce", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute the full-size runs")
    run_p.add_argument("--list", action="store_true", help="list the runs and their commands, run nothing")
    run_p.add_argument("--only", action="append", default=[], metavar="NAME", help="run only NAME (repeatable)")
    args = parser.parse_args(argv)

    repo = _repo()
    runs = load_runs()
    if args.only:
        unknown = sorted(set(args.only) - {r["name"] for r in runs})
        if unknown:
            parser.error(f"unknown run name(s) {unknown}; known: {[r['name'] for r in runs]}")
        runs = [r for r in runs if r["name"] in args.only]
    if not runs:
        print("[reproduce] notebooks/full_size.yml lists no full-size runs yet; nothing to do.")
        return 0
    for run in runs:
        line = f"[reproduce] {run['name']}: {_papermill_command(run)}"
        if run.get("estimate"):
            line += f"  (estimate: {run['estimate']})"
        print(line, flush=True)
        if not args.list:
            seconds = _execute(run, repo)
            print(f"[reproduce] {run['name']} finished in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
