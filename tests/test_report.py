"""Paired comparisons over seeds (uhop.experiments.stats, re-exported by uhop.experiments.report) against
hand-computed values."""

import math

import pytest

from uhop.experiments import report, stats
from uhop.experiments.report import paired_interval, sign_test, t_critical_95


def test_paired_interval_by_hand():
    d = [0.1, 0.3, 0.2, 0.4, 0.0]
    r = paired_interval(d)
    sd = math.sqrt(0.1 / 4)  # squared deviations 0.01 + 0.01 + 0 + 0.04 + 0.04
    half = 2.776 * sd / math.sqrt(5)
    assert r["n"] == 5 and r["mean"] == pytest.approx(0.2) and r["sd"] == pytest.approx(sd)
    assert (r["low"], r["high"]) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert (r["positive"], r["negative"], r["zero"]) == (4, 0, 1)
    one = paired_interval([-0.5])
    assert one["mean"] == -0.5 and math.isnan(one["low"]) and one["negative"] == 1
    with pytest.raises(ValueError, match="at least one"):
        paired_interval([])


def test_t_critical_values_against_tables():
    # standard two-sided 95% table values; beyond the table the expansion must stay within 1e-3 of them
    for df, value in ((1, 12.706), (4, 2.776), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980)):
        assert t_critical_95(df) == pytest.approx(value, abs=1.1e-3)
    with pytest.raises(ValueError, match="df"):
        t_critical_95(0)


def test_sign_test_by_hand():
    # 5 of 5 one way: 2 * (1/2)^5; 1 against 4: 2 * (1 + 5) / 32; an even split is as likely as it gets
    assert sign_test(5, 0) == pytest.approx(2 / 32) and sign_test(0, 5) == pytest.approx(2 / 32)
    assert sign_test(1, 4) == pytest.approx(12 / 32)
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(10, 6) == pytest.approx(2 * sum(math.comb(16, i) for i in range(7)) / 2 ** 16)


def test_statistics_have_one_home():
    for name in stats.__all__:
        assert getattr(report, name) is getattr(stats, name)


# -- the book's figure and table helpers ---------------------------------------------------------------------------

def test_book_style_sizes_figures_for_the_column_and_text_for_reading():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uhop.experiments import report

    report.book_style()
    rc = matplotlib.rcParams
    for key in ("font.size", "xtick.labelsize", "ytick.labelsize", "legend.fontsize", "axes.labelsize"):
        assert float(rc[key]) == report.FONT_PT, key
    fig, axes = report.figure(2, 2)
    try:
        width_px = fig.get_figwidth() * fig.dpi
        assert axes.shape == (2, 2) and width_px == pytest.approx(640)   # a 648 px tab, no shrinking
        assert report.FONT_PT * fig.dpi / 72 == pytest.approx(16, abs=0.1)  # 16 px: the book's body text
    finally:
        plt.close(fig)


def test_method_figure_labels_axes_in_words_and_puts_one_legend_below():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from uhop.experiments import report

    df = pd.DataFrame({"method": ["mhm", "mhm", "uhop_mhm", "uhop_mhm"] * 2, "M": [10, 20, 10, 20] * 2,
                       "seed": [0] * 4 + [1] * 4, "sse_mean": [1.0, 2.0, 0.1, 0.2, 1.2, 2.2, 0.0, 0.3]})
    fig = report.method_figure(df, "M", logx=True)
    try:
        ax = fig.axes[0]
        assert ax.get_xlabel() == "memories M" and ax.get_ylabel() == "error (SSE per memory)"
        assert ax.get_legend() is None and len(fig.legends) == 1
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["MHM", report.label("uhop_mhm")]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "20"]   # not 1x10^1, 2x10^1
        assert ax.get_yscale() == "symlog"                                     # an exact zero stays visible
    finally:
        plt.close(fig)


def test_table_fits_unless_asked_to_scroll():
    import pandas as pd

    from uhop.experiments import report

    frame = pd.DataFrame({"a": [1.23456, float("nan")]}, index=["x", "y"])
    plain = report.table(frame).data
    assert "uhop-scroll" not in plain and "1.23" in plain and "1.23456" not in plain and "nan" not in plain
    assert "white-space: nowrap" in plain
    assert 'class="uhop-scroll"' in report.table(frame, scroll=True).data
    assert "nowrap" not in report.table(frame, wrap=True).data


def test_outcome_counts_and_outcomes_by_hand():
    import pandas as pd

    from uhop.experiments import report

    w = pd.DataFrame({"M": [10, 20, 50], "vs official-style": ["win", "win", "win"],
                      "ratio (official-style)": [2.0, 3.0, 4.0], "vs all": ["loss", "tie", "win"],
                      "ratio (all)": [0.5, 1.0, 6.0]})
    c = report.outcome_counts(w)
    assert (c["n"], c["win"], c["tie"], c["loss"], c["lost_at"]) == (3, 1, 1, 1, [10.0])
    assert (c["ratio_min"], c["ratio_max"]) == (6.0, 6.0)
    o = report.outcome_counts(w, "official")
    assert (o["win"], o["ratio_min"], o["ratio_max"]) == (3, 2.0, 4.0)
    t = report.outcomes(w)
    assert list(t.index) == ["10", "20", "50"] and t.iloc[0, 1] == "loss (0.5x)"


def test_provenance_list_and_missing_files(tmp_path):
    import json

    from uhop.experiments import report

    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "a.csv.manifest.json").write_text(json.dumps({
        "command": "python -m uhop.reproduce run --only run_a", "git": {"commit": "0123456789abcdef", "dirty": False},
        "date": "2026-11-30T10:00:00", "machine": {"platform": "Linux", "cpu_count": 2}, "threads": 1,
        "wall_time_s": 600, "rows": 1200, "complete": True, "data": {"note": "mnist (torchvision)"}}))
    files = report.ResultFiles(tmp_path, {"a.csv": "run_a", "b.csv": "run_b"})
    text = files.provenance()
    assert "`a.csv` (run `run_a`): 1,200 rows; complete; 10 min; commit `0123456789`, 2026-11-30" in text
    assert "`python -m uhop.reproduce run --only run_a`" in text and "mnist (torchvision)" in text
    assert "**Missing results files:** `b.csv`" in text
    assert files.load("a.csv")["x"].tolist() == [1] and files.missing == []


def test_result_files_come_from_the_full_size_spec(tmp_path):
    from uhop.experiments import report

    (tmp_path / "notebooks").mkdir()
    spec = tmp_path / "notebooks" / "full_size.yml"
    spec.write_text("runs:\n"
                    "  - {name: a, notebook: nb, parameters: {output: ../results/x/a.csv}}\n"
                    "  - {name: b, notebook: nb, parameters: {output: ../results/y/b.csv}}\n"
                    "  - {name: c, notebook: nb, parameters: {seed: 1}}\n"
                    "  - {name: d, notebook: nb, parameters: {output: ../results/x/sub/d.csv}}\n")
    files = report.ResultFiles.from_full_size(tmp_path / "results" / "x", spec)
    assert files.runs == {"a.csv": "a", "sub/d.csv": "d"}
    # the repository's own spec: every retrieval results file the book reads is declared there
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    repo = report.ResultFiles.from_full_size(root / "results" / "retrieval", root / "notebooks" / "full_size.yml")
    assert "capacity/mnist_paper.csv" in repo.runs and repo.runs["capacity/mnist_paper.csv"] == "mnist_grid_paper"


def test_epochs_figure_stacks_one_panel_per_value_with_one_legend():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from uhop.experiments import report

    df = pd.DataFrame({"N": [0, 1, 10] * 4, "M": ["10"] * 6 + ["20"] * 6, "seed": ([0] * 3 + [1] * 3) * 2,
                       "sse_mean": [1.0, 0.5, 0.0, 1.2, 0.4, 0.1] * 2, "sep_loss": [0.9, 0.5, 0.2] * 4})
    fig = report.epochs_figure(df, ["sse_mean", "sep_loss"])
    try:
        top, bottom = fig.axes
        assert top.get_yscale() == "symlog" and bottom.get_yscale() == "linear"   # zeros of the error stay visible
        assert top.get_xscale() == bottom.get_xscale() == "symlog"                # N = 0 on a log-like axis
        assert (top.get_ylabel(), bottom.get_ylabel()) == ("error (SSE per memory)", "separation loss")
        assert bottom.get_xlabel() == "Stage-I epochs N"
        assert top.get_legend() is None and len(fig.legends) == 1
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["10", "20"]
        assert fig.get_figwidth() == report.FIGURE_WIDTH
    finally:
        plt.close(fig)


def test_symlog_from_zero_keeps_zero_and_writes_plain_ticks():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uhop.experiments.plots import symlog_from_zero

    fig, ax = plt.subplots()
    try:
        ax.plot([0, 1, 10, 100], [0.0, 0.005, 3.0, 400.0])
        symlog_from_zero(ax, "x", linthresh=1)
        symlog_from_zero(ax, "y", linthresh=0.01)
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            assert axis.get_scale() == "symlog" and lim[0] == 0
        assert ax.xaxis.get_transform().linthresh == 1 and ax.yaxis.get_transform().linthresh == 0.01
        assert ax.get_xlim()[1] >= 100 and ax.get_ylim()[1] >= 400    # the data stay in view
        assert ax.xaxis.get_major_formatter()(100, 0) == "100"        # not 10^2
        assert ax.yaxis.get_major_formatter()(0.01, 0) == "0.01"
        with pytest.raises(ValueError, match="which"):
            symlog_from_zero(ax, "z")
    finally:
        plt.close(fig)


def test_git_commit_names_the_dirty_files(tmp_path):
    import subprocess

    from uhop.provenance import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    git("add", "a.py", "b.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    clean = git_commit(tmp_path)
    assert clean["dirty"] is False and "dirty_files" not in clean and len(clean["commit"]) == 40
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / "new.py").write_text("untracked\n")  # untracked files do not make a tree dirty
    dirty = git_commit(tmp_path)
    assert dirty["dirty"] is True and dirty["dirty_files"] == ["b.py"] and dirty["commit"] == clean["commit"]
    # a rewritten result file is not a change to the code that made it
    assert git_commit(tmp_path, ignore=[tmp_path / "b.py"]) == clean


def test_manifest_does_not_count_its_own_result_as_a_dirty_checkout(tmp_path, monkeypatch):
    import uhop.provenance as prov

    seen = {}
    monkeypatch.setattr(prov, "git_commit", lambda ignore=(): seen.setdefault("ignore", tuple(ignore)) and {})
    prov.write_manifest(tmp_path / "r.json.manifest.json", command="x", parameters={})
    assert set(seen["ignore"]) == {tmp_path / "r.json.manifest.json", tmp_path / "r.json"}
