"""Tables, plots and file handling shared by the retrieval notebooks and the results chapter.

Every row of a results CSV is one run (one seed) of one cell; its ``sse_mean`` is already the mean
over the M queries of that run.  The plots show the mean over runs with a band of +- one standard
deviation over runs (seaborn ``errorbar="sd"``).  Needs pandas, matplotlib and seaborn (the
``book`` extra).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .retrieval import METHODS
from .stats import paired_interval, pearson, sign_test, spearman, t_critical_95

__all__ = ["LABELS", "ORDER", "PAPER_BASELINES", "UHOP", "label", "at_epochs", "expand_baselines", "summary",
           "lineplot", "winners", "book_style", "FIGURE_WIDTH", "FIGURE_DPI", "FONT_PT", "figure", "table",
           "provenance_list", "AXIS_LABELS", "legend_below", "method_figure", "epochs_figure", "mean_table", "outcome_counts",
           "outcomes", "ResultFiles",
           "prepare_output", "manifest_line", "spearman", "pearson", "t_critical_95", "paired_interval",
           "sign_test"]

LABELS = {name: spec.label for name, spec in METHODS.items()}
ORDER = list(METHODS)


def label(method: str) -> str:
    return LABELS.get(method, method)


# -- one figure and table style for the whole book --------------------------------------------------------------

#: Figure width in inches at :data:`FIGURE_DPI`: 6.4 in x 100 dpi = 640 px, which fits the narrowest place a
#: figure is shown in the book's column at a 1280 px window (a code cell's output: 688 px; a tab: 648 px), so
#: figures are shown at their natural size.
FIGURE_WIDTH = 6.4
FIGURE_DPI = 100
#: Text size in points: 11.5 pt at 100 dpi is 16 px, the book's body text.
FONT_PT = 11.5


def book_style() -> None:
    """Set the book's figure style: seaborn's white grid, figures one column wide shown at natural size, every
    text (ticks, legends, labels) at body-text size, PNG at :data:`FIGURE_DPI`. Chapters call it once."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    mpl.rcParams.update({
        "figure.figsize": (FIGURE_WIDTH, 0.62 * FIGURE_WIDTH), "figure.dpi": FIGURE_DPI, "savefig.dpi": FIGURE_DPI,
        "font.size": FONT_PT, "axes.titlesize": FONT_PT, "axes.labelsize": FONT_PT, "xtick.labelsize": FONT_PT,
        "ytick.labelsize": FONT_PT, "legend.fontsize": FONT_PT, "legend.title_fontsize": FONT_PT,
        "figure.titlesize": FONT_PT, "axes.titleweight": "bold", "legend.frameon": False,
        "figure.constrained_layout.use": True,
        # the inline backend trims figures to their contents plus this margin (0.1 in by default: 691 px)
        "savefig.pad_inches": 0.04,
    })
    try:  # the inline backend of a notebook: PNG only, at the figure's own dpi
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - outside Jupyter
        pass


def figure(nrows: int = 1, ncols: int = 1, height: float | None = None, **kwargs):
    """``plt.subplots`` one column wide (:data:`FIGURE_WIDTH`); ``height`` in inches (default: 2.6 in per row
    for two columns, else 0.62 x the width per row)."""
    import matplotlib.pyplot as plt

    if height is None:
        height = nrows * (2.6 if ncols > 1 else 0.62 * FIGURE_WIDTH)
    return plt.subplots(nrows, ncols, figsize=(FIGURE_WIDTH, height), squeeze=False, **kwargs)


def table(frame, fmt="{:.3g}", index: bool = True, caption: str | None = None, scroll: bool = False,
          wrap: bool = False):
    """A table for a chapter: human labels are the caller's, numbers formatted with ``fmt`` (a format string or
    a dict per column), compact cells, empty cells blank. With ``scroll=True`` it sits in its own horizontally
    scrolling box (for genuinely wide data); otherwise it must fit the column (the site test checks it).
    Data cells do not wrap, so numbers stay on one line, unless ``wrap=True`` (for tables of sentences).
    Returns an object the notebook displays."""
    from IPython.display import HTML

    st = frame.style.format(fmt, na_rep="")
    # numbers stay on one line; headers may wrap
    st = st.set_table_styles([{"selector": "td, th", "props": "padding: 2px 8px;"},
                              {"selector": "td", "props": "" if wrap else "white-space: nowrap;"},
                              {"selector": "caption", "props": "caption-side: top; text-align: left;"}])
    if not index:
        st = st.hide(axis="index")
    if caption:
        st = st.set_caption(caption)
    html = st.to_html()
    if scroll:
        html = f'<div class="uhop-scroll" style="overflow-x: auto; max-width: 100%;">{html}</div>'
    return HTML(html)


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
             style=None, legend=True):
    """seaborn line plot of ``y`` against ``x``: the mean over runs, with error bars of +- 1 std over runs
    (bars, not bands: on log axes overlapping bands turn into a grey area that hides the lines)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots()
    data = df.copy()
    if hue == "method":
        present = [m for m in ORDER if m in set(data["method"])]
        data["method"] = data["method"].map(label)
        hue_order = [label(m) for m in present]
    else:
        hue_order = None
    sns.lineplot(data=data, x=x, y=y, hue=hue, hue_order=hue_order, style=style, errorbar="sd", marker="o",
                 ax=ax, markersize=4, err_style="bars", err_kws={"capsize": 2, "elinewidth": 0.8},
                 legend="auto" if legend else False)
    if logx:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, data[x])
    if logy:
        if (data[y] <= 0).any():
            ax.set_yscale("symlog", linthresh=1e-2)  # exact zeros (perfect retrieval) stay visible
            ax.set_ylim(bottom=0)                       # the +-std bars must not open a negative axis
        else:
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.5 * float(data[y].min()))
    if title:
        ax.set_title(title)
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(ylabel or AXIS_LABELS.get(y, y))
    return ax


#: Axis labels for the columns of the results files (a plot never shows a raw column name).
AXIS_LABELS = {"sse_mean": "error (SSE per memory)", "mse_mean": "per-pixel MSE", "M": "memories M",
               "N": "Stage-I epochs N", "noise": "noise level", "sep_loss": "separation loss",
               "min_dist": "min. feature distance", "eff_support": "effective support"}


def _plain_log_ticks(axis, values):
    """Ticks at the values on a log axis, written as plain numbers (10, 20, 50, not 2x10^1)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = sorted({float(v) for v in values.dropna() if v > 0})
    if 1 < len(ticks) <= 10:
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(lambda v, _: f"{v:g}")
        axis.set_minor_locator(NullLocator())


def legend_below(fig, ax, ncol: int = 3):
    """Move the legend of ``ax`` below the figure, in ``ncol`` columns (one legend for all panels)."""
    handles, labels = ax.get_legend_handles_labels()
    for a in fig.axes:
        if a.get_legend() is not None:
            a.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol)


def method_figure(df, x, title=None, logx=False, logy=True, xlabel=None, methods=None, height=None):
    """One column-wide figure of the error of each method against ``x`` (mean over runs, +- 1 std), legend
    below. ``methods`` restricts the lines (default: all methods in the file)."""
    if methods is not None:
        df = df[df["method"].isin(methods)]
    fig, axes = figure(1, 1, height=height or 0.75 * FIGURE_WIDTH)
    ax = axes[0, 0]
    lineplot(df, x=x, ax=ax, logx=logx, logy=logy, title=title)
    if xlabel:
        ax.set_xlabel(xlabel)
    legend_below(fig, ax, ncol=2)   # three columns of long method names stick out of a column-wide figure
    return fig


def epochs_figure(df, values, hue="M", style=None, height=None, ncol=4):
    """Stacked panels, one per column in ``values``, of that column against the Stage-I epochs N (symlog axis,
    N = 0 included) per value of ``hue`` (and ``style``), mean over runs with +- 1 std bars; the error panel
    on a symlog axis so that exact zeros stay visible; one legend below."""
    import seaborn as sns

    fig, axes = figure(len(values), 1, height=height or 3.0 * len(values), sharex=True)
    for ax, value in zip(axes[:, 0], values):
        sns.lineplot(data=df, x="N", y=value, hue=hue, style=style, errorbar="sd", err_style="bars", marker="o",
                     markersize=3, palette="viridis", ax=ax, legend=value == values[0])
        ax.set_xscale("symlog", linthresh=1)
        if value == "sse_mean":
            ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_ylabel(AXIS_LABELS.get(value, value))
    axes[-1, 0].set_xlabel(AXIS_LABELS["N"])
    legend_below(fig, axes[0, 0], ncol=ncol)
    return fig


def mean_table(df, x, value="sse_mean"):
    """Mean of ``value`` over runs, one row per method (in the book's order, human labels), one column per
    value of ``x``."""
    import pandas as pd

    t = df.groupby(["method", x])[value].mean().unstack(x)
    t = t.loc[[m for m in ORDER if m in t.index]]
    t.index = [label(m) for m in t.index]
    t.columns = pd.Index([f"{c:g}" for c in t.columns], name=AXIS_LABELS.get(x, x))
    return t


def outcome_counts(w, against="all") -> dict:
    """Summary of a :func:`winners` table: wins, ties, losses of the best U-Hop variant against the best
    baseline (``against="all"``, corrected baselines included, or ``"official"``), where it lost, and the
    range of the ratios (baseline / U-Hop error) where it won."""
    col, ratio = ("vs all", "ratio (all)") if against == "all" else ("vs official-style", "ratio (official-style)")
    x = w.columns[0]
    won = w[w[col] == "win"]
    return {"n": len(w), "win": int((w[col] == "win").sum()), "tie": int((w[col] == "tie").sum()),
            "loss": int((w[col] == "loss").sum()), "lost_at": [float(v) for v in w.loc[w[col] == "loss", x]],
            "ratio_min": float(won[ratio].min()) if len(won) else float("nan"),
            "ratio_max": float(won[ratio].max()) if len(won) else float("nan")}


def outcomes(w):
    """The outcome (and ratio) of the best U-Hop variant per value of ``x``, against the baselines as the
    official code ran them and against all baselines: a compact table of a :func:`winners` table."""
    import pandas as pd

    x = w.columns[0]
    cols = {}
    for col, ratio, who in [("vs official-style", "ratio (official-style)", "vs baselines as officially run"),
                            ("vs all", "ratio (all)", "vs all baselines (incl. corrected)")]:
        if col in w:
            cols[who] = [f"{o} ({r:.2g}x)" for o, r in zip(w[col], w[ratio])]
    out = pd.DataFrame(cols, index=[f"{v:g}" for v in w[x]])
    out.index.name = x
    return out


class ResultFiles:
    """The committed results files a chapter reads, each with the ``notebooks/full_size.yml`` run that writes
    it. ``load(name)`` returns the file as a DataFrame, or ``None`` after showing how to produce it; the files
    that were missing are kept in :attr:`missing`."""

    def __init__(self, root, runs: dict):
        self.root, self.runs, self.missing = Path(root), dict(runs), []

    @classmethod
    def from_full_size(cls, root, spec=None):
        """Every results file under ``root`` that a run of ``notebooks/full_size.yml`` (or ``spec``) writes, named
        by its path below ``root``, with that run: the file list of a chapter is the spec's, not a copy of it."""
        from ..reproduce import load_runs
        from ..reproduce.runs import repo_root

        root = Path(root).resolve()
        spec = Path(spec) if spec else repo_root() / "notebooks" / "full_size.yml"
        runs = load_runs(spec)
        notebooks = spec.resolve().parent
        found = {}
        for run in runs:
            output = (run.get("parameters") or {}).get("output")
            path = (notebooks / output).resolve() if output else None
            if path is not None and root in path.parents:
                found[str(path.relative_to(root))] = run["name"]
        return cls(root, dict(sorted(found.items())))

    def load(self, name):
        import pandas as pd

        path = self.root / name
        if not path.exists():
            from IPython.display import Markdown, display

            self.missing.append(name)
            display(Markdown(f"**Results file `{name}` is missing**: this part cannot be shown. Produce it with "
                             f"`python -m uhop.reproduce run --only {self.runs.get(name, '?')}`."))
            return None
        return pd.read_csv(path)

    def provenance(self) -> str:
        """Markdown list of the files' provenance (:func:`provenance_list`) and of missing files."""
        text = provenance_list([(self.root / n, r, n) for n, r in self.runs.items() if (self.root / n).exists()])
        gone = sorted(n for n in self.runs if not (self.root / n).exists())
        if gone:
            text += "\n\n**Missing results files:** " + ", ".join(f"`{n}`" for n in gone)
        return text


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


def provenance_list(entries) -> str:
    """Markdown list, one item per results file: ``entries`` are ``(path, run name, shown name)``; each item
    gives the rows, whether the run is complete, its wall time, the commit and date, the machine, the data
    note and the command, read from the file's manifest (see :func:`manifest_line`)."""
    items = []
    for path, run, shown in entries:
        m = manifest_line(path)
        if m.get("manifest") == "missing":
            items.append(f"- `{shown}`: **no manifest** (`python -m uhop.reproduce run --only {run}`)")
            continue
        wall = m.get("wall time (s)")
        wall = f"{float(wall) / 60:.0f} min" if wall not in (None, "") else "wall time not recorded"
        rows = m.get("rows")
        state = "complete" if m.get("complete") in (True, None) else "**incomplete**"
        parts = [f"{rows:,} rows" if isinstance(rows, int) else None, state, wall,
                 f"commit `{m['commit']}`, {str(m.get('date') or '')[:10]}", m.get("machine"),
                 m.get("data")]
        items.append(f"- `{shown}` (run `{run}`): " + "; ".join(p for p in parts if p)
                     + (f"  \n  `{m['command']}`" if m.get("command") else ""))
    return "\n".join(items)


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
