"""The runs file and the state of each run on disk: :func:`load_runs` reads ``notebooks/full_size.yml``,
:func:`run_units` and :func:`run_status` tell what a run has committed, :func:`status_table` is the listing of
``python -m uhop.reproduce run --list``."""

from __future__ import annotations

import json
import re
from pathlib import Path


def repo_root() -> Path:
    """The checkout: the folder that holds ``uhop/`` and ``notebooks/``."""
    return Path(__file__).resolve().parents[2]


def load_runs(spec: Path | None = None) -> list[dict]:
    """The list of full-size runs declared in ``notebooks/full_size.yml`` (or ``spec``)."""
    import yaml

    spec = Path(spec) if spec else repo_root() / "notebooks" / "full_size.yml"
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
        return path if path.is_absolute() else (Path(spec or repo_root() / "notebooks" / "x").parent / path).resolve()
    return repo_root() / "notebooks" / f"{name}.py"


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
    from ..experiments.notebook import notebook_path

    params = run.get("parameters") or {}
    if run["notebook"] == "forecasting" and params.get("out_dir"):
        from ..experiments.forecasting import tier_status

        done, pending = tier_status(run["name"], notebook_path(params["out_dir"]), exact=True)
        return len(done), len(done) + len(pending)
    if run["notebook"] == "classification" and params.get("output_dir"):
        from ..experiments.classification import tier_status

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
    from ..experiments.notebook import notebook_path

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


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_table(runs: list[dict]) -> str:
    rows = [("name", "notebook", "estimate", "output", "status")]
    total = 0.0
    for run in runs:
        params = run.get("parameters") or {}
        out = params.get("output") or params.get("out_dir") or params.get("output_dir") or "-"
        est = estimate_seconds(run.get("estimate"))
        total += est or 0.0
        rows.append((run["name"], run["notebook"], format_duration(est), str(out).replace("../", ""),
                     run_status(run)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(runs)} runs, estimated {format_duration(total)} in all when run one after another")
    return "\n".join(lines)


def safe_units(run: dict) -> tuple[int, int] | None:
    try:
        return run_units(run)
    except Exception:  # progress is for reading, never a reason to stop
        return None
