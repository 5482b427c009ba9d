"""Paired comparisons over seeds (uhop.experiments.report) against hand-computed values."""

import math

import pytest

from uhop.experiments.report import paired_interval, t_critical_95


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
