"""Tables, plots and file handling shared by the retrieval notebooks and the results chapter.

Every row of a results CSV is one run (one seed) of one cell; its ``sse_mean`` is already the mean
over the M queries of that run.  The plots show the mean over runs with a band of +- one standard
deviation over runs (seaborn ``errorbar="sd"``).  Needs pandas, matplotlib and seaborn (the
``book`` extra).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from .retrieval import METHODS

__all__ = ["LABELS", "ORDER", "PAPER_BASELINES", "UHOP", "label", "at_epochs", "expand_baselines", "summary",
           "lineplot", "winners",
           "prepare_output", "manifest_line", "spearman", "pearson", "t_critical_95", "paired_interval"]

LABELS = {name: spec.label for name, spec in METHODS.items()}
ORDER = list(METHODS)


def label(method: str) -> str:
    return LABELS.get(method, method)


def at_epochs(df, n: int):
    """Rows of U-Hop methods at N = n, plus the baselines (N empty)."""
    return df[(df["N"] == n) | df["N"].isna()]


def expand_baselines(df, epochs):
    """Repeat each baseline row (N empty) at every N in ``epochs``, so that baselines appear as flat
    lines in a plot against N."""
    import pandas as pd

    base = df[df["N"].isna()]
    parts = [df[df["N"].notna()]]
    for n in epochs:
        parts.append(base.assign(N=n))
    return pd.concat(parts, ignore_index=True)


def summary(df, by, value="sse_mean"):
    """Mean, std over runs and number of runs of ``value`` for each combination of ``by``."""
    g = df.groupby(list(by), dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"mean": f"{value} (mean over runs)", "std": "std over runs", "count": "runs"})
    if "method" in out.columns:
        out["method"] = out["method"].map(label)
    return out


def lineplot(df, x, y="sse_mean", hue="method", ax=None, logx=False, logy=False, title=None, ylabel=None,
             style=None):
    """seaborn line plot of ``y`` against ``x``: mean over runs, band = +- 1 std over runs."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    data = df.copy()
    if hue == "method":
        present = [m for m in ORDER if m in set(data["method"])]
        data["method"] = data["method"].map(label)
        hue_order = [label(m) for m in present]
    else:
        hue_order = None
    sns.lineplot(data=data, x=x, y=y, hue=hue, hue_order=hue_order, style=style, errorbar="sd", marker="o",
                 ax=ax, markersize=4, err_kws={"alpha": 0.1})
    if logx:
        ax.set_xscale("log")
    if logy:
        if (data[y] <= 0).any():
            ax.set_yscale("symlog", linthresh=1e-2)  # exact zeros (perfect retrieval) stay visible
            ax.set_ylim(bottom=0)                       # the +-std band must not open a negative axis
        else:
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.5 * float(data[y].min()))
    if title:
        ax.set_title(title)
    ax.set_ylabel(ylabel or {"sse_mean": "SSE per memory", "mse_mean": "per-pixel MSE"}.get(y, y))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def prepare_output(output: str, resume: bool) -> Path:
    """The output path of a notebook run.

    ``resume=False`` starts from scratch: a previous file is removed only when it lies under a
    ``_build`` folder (smoke runs); anywhere else (e.g. committed ``results/``) it is an error, so
    committed results are never deleted by a notebook.
    """
    path = Path(output)
    files = [path, Path(f"{path}.config.json"), Path(f"{path}.manifest.json")]
    if not resume and any(f.exists() for f in files):
        if "_build" not in path.resolve().parts:
            raise FileExistsError(f"{path} exists and resume=False; results outside _build/ are never deleted by a "
                                  f"notebook: delete it yourself or set resume=True")
        for f in files:
            f.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def manifest_line(csv_path) -> dict:
    """The provenance of a results file, read from its manifest: command, commit, date, machine, wall time."""
    path = Path(f"{csv_path}.manifest.json")
    if not path.exists():
        return {"file": str(csv_path), "manifest": "missing"}
    m = json.loads(path.read_text())
    git = m.get("git") or {}
    machine = m.get("machine") or {}
    commit = git.get("commit")
    return {
        "file": str(csv_path),
        "command": m.get("command"),
        "commit": (commit[:10] + ("+dirty" if git.get("dirty") else "")) if commit else "n/a",
        "date": m.get("date"),
        "machine": f"{machine.get('platform', '?')}, {machine.get('cpu_count', '?')} CPUs, "
                   f"{m.get('threads', machine.get('torch_threads', '?'))} torch thread(s)",
        "device": m.get("device"),
        "wall time (s)": m.get("wall_time_total_s", m.get("wall_time_s")),
        "rows": m.get("rows"),
        "complete": m.get("complete"),
        "data": (m.get("data") or {}).get("note"),
        "uhop": (m.get("versions") or {}).get("uhop"),
    }


def _ranks(values):
    """Average ranks (ties get the mean of their positions), 1-based, as a torch float64 tensor."""
    import torch

    x = torch.as_tensor(list(values), dtype=torch.float64)
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    i, n = 0, len(x)
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x, y) -> float:
    """Pearson correlation coefficient (torch, no scipy)."""
    import torch

    a = torch.as_tensor(list(x), dtype=torch.float64)
    b = torch.as_tensor(list(y), dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks (no scipy)."""
    return pearson(_ranks(x), _ranks(y))


def copy_results(src, dst) -> None:  # pragma: no cover - convenience for moving a finished run
    for suffix in ("", ".config.json", ".manifest.json"):
        shutil.copy2(f"{src}{suffix}", f"{dst}{suffix}")


#: The baselines as the official scripts ran them (what the paper's figures compare against).
PAPER_BASELINES = ("mhm", "sparse_mhm", "dam_official", "l2_official", "manhattan_official")
UHOP = ("uhop_mhm", "uhop_sparse_mhm")


def _outcome(u, b, tol):
    if u <= tol and b <= tol:
        return "tie"          # both retrieve essentially perfectly
    return "win" if u < b else "loss"


def winners(df, x="M", value="sse_mean", tol=1e-2):
    """Per value of ``x``: the best U-Hop variant against the best baseline as the official code ran them
    (:data:`PAPER_BASELINES`) and against the best baseline overall (corrected ones included), by mean over
    runs.

    Outcomes: "win" (U-Hop lower), "loss", or "tie" when both means are <= ``tol`` (both retrieve
    essentially perfectly: an SSE of 0.01 is a per-pixel error of about 1e-5 on MNIST).  Ratios are
    baseline / U-Hop with both floored at ``tol`` (so 0 against 1e-11 is not reported as a huge factor).
    """
    import pandas as pd

    means = df.groupby([x, "method"])[value].mean().unstack("method")
    rows = []
    for key, r in means.iterrows():
        u = r[[m for m in UHOP if m in r.index]].dropna()
        pb = r[[m for m in PAPER_BASELINES if m in r.index]].dropna()
        ab = r[[m for m in r.index if m not in UHOP]].dropna()
        if u.empty or ab.empty:
            continue
        row = {x: key, "best U-Hop": label(u.idxmin()), "U-Hop SSE": u.min()}
        if not pb.empty:
            row.update({"best official-style baseline": label(pb.idxmin()), "its SSE": pb.min(),
                        "vs official-style": _outcome(u.min(), pb.min(), tol),
                        "ratio (official-style)": max(pb.min(), tol) / max(u.min(), tol)})
        row.update({"best baseline (incl. corrected)": label(ab.idxmin()), "SSE": ab.min(),
                    "vs all": _outcome(u.min(), ab.min(), tol),
                    "ratio (all)": max(ab.min(), tol) / max(u.min(), tol)})
        rows.append(row)
    return pd.DataFrame(rows)


# -- paired comparisons over seeds ---------------------------------------------------------------------------------

#: Two-sided 95% critical values of Student's t for 1..30 degrees of freedom (3 decimals; standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value of Student's t with ``df`` degrees of freedom (a table up to 30, then the
    Cornish-Fisher expansion around the normal 1.95996, accurate to 1e-3 there)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def paired_interval(differences) -> dict:
    """Mean of paired differences (one per seed) with a two-sided 95% t interval and a sign count.

    Returns ``{"n", "mean", "sd", "low", "high", "positive", "negative", "zero"}``; with one difference the
    interval is undefined (NaN).  An interval that excludes 0 says the sign of the mean difference is
    resolved at this number of seeds; it is not a correction for many comparisons.
    """
    d = [float(v) for v in differences]
    n = len(d)
    if n == 0:
        raise ValueError("paired_interval needs at least one difference")
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1)) if n > 1 else float("nan")
    half = t_critical_95(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half,
            "positive": sum(v > 0 for v in d), "negative": sum(v < 0 for v in d), "zero": sum(v == 0 for v in d)}
