"""Results of the classification runs: the Table-1-style summary (:func:`summarize`), the paper's Table 1, the
U-Hop-minus-base differences paired by seed, the expressiveness table (Fig 6 / G.4), the G.5 convergence
measure, and which runs of a ``notebooks/full_size.yml`` entry are finished (:func:`tier_status`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ...models.vision import VARIANT_LABELS
from .config import config_from_parameters
from .store import read_curves


#: Table 1 of the paper (percent): (max train acc, test acc) per dataset and variant.
PAPER_TABLE1 = {
    "cifar10": {"mhm": (56.0, 52.2), "mhm_uhop": (64.6, 55.2), "sparse": (55.9, 52.0), "sparse_uhop": (66.4, 55.4)},
    "cifar100": {"mhm": (32.3, 26.3), "mhm_uhop": (44.1, 28.7), "sparse": (49.6, 26.0),
                 "sparse_uhop": (45.4, 29.0)},
    "tiny_imagenet": {"mhm": (48.9, 12.2), "mhm_uhop": (61.4, 12.7), "sparse": (17.2, 12.3),
                      "sparse_uhop": (60.6, 12.5)},
}


def epochs_to_accuracy(curve, threshold: float, column: str = "train_acc") -> float:
    """First epoch at which ``column`` reaches ``threshold`` (NaN if never): the G.5 convergence measure."""
    hit = curve[curve[column] >= threshold]
    return float(hit["epoch"].min()) if len(hit) else math.nan


def summarize(curves, thresholds: Sequence[float] = (0.4, 0.5)):
    """Table-1-style summary per (dataset, variant, train size): mean and std over run seeds of the maximal
    training accuracy over epochs, the final and the best test accuracy, and the mean first epoch reaching each
    training-accuracy threshold (NaN-aware; ``reached`` counts the seeds that got there)."""
    import pandas as pd

    rows = []
    if not len(curves):
        return pd.DataFrame()
    for (dataset, variant, size), g in curves.groupby(["dataset", "variant", "train_size"], sort=False):
        per_seed = []
        for seed, c in g.groupby("run_seed"):
            c = c.sort_values("epoch")
            item = {"max_train_acc": c.train_acc.max(), "final_test_acc": c.test_acc.iloc[-1],
                    "best_test_acc": c.test_acc.max(), "final_train_loss": c.train_loss.iloc[-1],
                    "final_test_loss": c.test_loss.iloc[-1], "epochs": int(c.epoch.max()),
                    "images_per_s": c.images_per_s.median(),
                    "inner_fraction": (c.inner_seconds.sum() / c.seconds.sum()) if c.seconds.sum() > 0 else 0.0}
            for th in thresholds:
                item[f"epochs_to_train_acc_{th:g}"] = epochs_to_accuracy(c, th)
            per_seed.append(item)
        ps = pd.DataFrame(per_seed)
        row = {"dataset": dataset, "variant": variant, "label": VARIANT_LABELS.get(variant, variant),
               "train_size": int(size), "seeds": len(ps), "epochs": int(ps.epochs.max())}
        for col in ("max_train_acc", "final_test_acc", "best_test_acc", "final_train_loss", "final_test_loss"):
            row[col] = ps[col].mean()
            row[col + "_std"] = ps[col].std(ddof=1) if len(ps) > 1 else 0.0
        row["images_per_s"] = ps.images_per_s.mean()
        row["inner_fraction"] = ps.inner_fraction.mean()
        for th in thresholds:
            col = f"epochs_to_train_acc_{th:g}"
            row[col] = ps[col].mean()
            row[col.replace("epochs_to", "reached")] = int(ps[col].notna().sum())
        paper = PAPER_TABLE1.get(dataset, {}).get(variant)
        row["paper_max_train_acc"] = paper[0] / 100 if paper else np.nan
        row["paper_test_acc"] = paper[1] / 100 if paper else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def convergence_table(curves, thresholds: Sequence[float]):
    """App G.5 per variant (rows: labels): the mean first epoch reaching each training accuracy in ``thresholds``
    ("—" unless every seed got there), the mean wall time of a run (minutes) and of an epoch (seconds), and the share
    of training time spent in Algorithm 2's inner loop; on the largest training set of ``curves``."""
    import pandas as pd

    c = curves[curves.train_size == curves.train_size.max()]
    out = {}
    for label, g in c.groupby("label", sort=False):
        row = {}
        for th in thresholds:
            firsts = [epochs_to_accuracy(run, th) for _, run in g.groupby("run_seed")]
            row[f"epochs to {100 * th:.0f}% train acc"] = ("—" if any(math.isnan(f) for f in firsts)
                                                          else f"{np.mean(firsts):.1f}")
        row["minutes per run"] = f"{g.groupby('run_seed').seconds.sum().mean() / 60:.1f}"
        row["s / epoch"] = f"{g.seconds.mean():.1f}"
        row["inner loop share"] = f"{100 * g.inner_seconds.sum() / g.seconds.sum():.0f}%"
        out[label] = row
    return pd.DataFrame(out).T


#: The U-Hop variant of each base model (Table 1's pairs).
UHOP_PAIRS = {"mhm": "mhm_uhop", "sparse": "sparse_uhop"}


def per_seed_metrics(curves):
    """One row per (variant, run seed, train size): max training accuracy over epochs, final and best test
    accuracy, final training and test loss."""
    import pandas as pd

    rows = []
    for (variant, seed, size), c in curves.groupby(["variant", "run_seed", "train_size"]):
        c = c.sort_values("epoch")
        rows.append({"variant": variant, "run_seed": int(seed), "train_size": int(size), "epochs": int(c.epoch.max()),
                     "max_train_acc": c.train_acc.max(), "final_test_acc": c.test_acc.iloc[-1],
                     "best_test_acc": c.test_acc.max(), "final_train_loss": c.train_loss.iloc[-1],
                     "final_test_loss": c.test_loss.iloc[-1]})
    return pd.DataFrame(rows)


def paired_differences(curves, dataset: str = "cifar10"):
    """U-Hop minus its base model (MHM, Sparse MHM), paired by run seed (same initial weights, data, batch order
    and augmentation), for the max training accuracy and the final and best test accuracy: the mean over seeds
    with a 95% t interval, how many seeds U-Hop was higher in, and the paper's Table 1 difference.  Accuracies are
    fractions; the paper's are converted from percent."""
    import pandas as pd

    from ..stats import paired_interval

    per = per_seed_metrics(curves)
    per = per[per.train_size == per.train_size.max()] if len(per) else per
    paper = PAPER_TABLE1.get(dataset, {})
    metrics = (("max_train_acc", 0), ("final_test_acc", 1), ("best_test_acc", 1))
    pairs = {metric: _uhop_pairs(per, metric) for metric, _ in metrics}
    rows = []
    for base, uhop in UHOP_PAIRS.items():
        for metric, paper_idx in metrics:
            if base not in pairs[metric]:
                continue
            seeds, diffs = pairs[metric][base]
            r = paired_interval(diffs)
            if r["n"] < 2:
                verdict = "one seed"
            else:
                verdict = ("U-Hop higher" if r["low"] > 0 else "U-Hop lower" if r["high"] < 0
                           else "no resolved difference")
            paper_diff = ((paper[uhop][paper_idx] - paper[base][paper_idx]) / 100
                          if base in paper and uhop in paper else float("nan"))
            means = {v: per[per.variant == v].set_index("run_seed").loc[seeds, metric].mean() for v in (base, uhop)}
            rows.append({"pair": f"{VARIANT_LABELS[uhop]} vs {VARIANT_LABELS[base]}", "metric": metric,
                         "seeds": r["n"], "base": means[base], "U-Hop": means[uhop],
                         "diff": r["mean"], "low": r["low"], "high": r["high"],
                         "U-Hop higher in": f"{r['positive']} of {r['n']}", "paper diff": paper_diff,
                         "verdict": verdict})
    return pd.DataFrame(rows)


def _uhop_pairs(per, metric):
    """``{base: (seeds, [U-Hop - base per seed])}`` from per-seed metrics, for each base model with a paired seed."""
    out = {}
    for base, uhop in UHOP_PAIRS.items():
        a = per[per.variant == base].set_index("run_seed")
        b = per[per.variant == uhop].set_index("run_seed")
        seeds = sorted(set(a.index) & set(b.index))
        if seeds:
            out[base] = (seeds, [b.loc[s, metric] - a.loc[s, metric] for s in seeds])
    return out


def claim_verdicts(curves, dataset: str = "cifar10", threshold: float = 0.5):
    """The paper's classification claims checked on paired runs, one row per claim and base model.

    Claims: U-Hop raises the maximal training accuracy (Table 1, read by the paper as a validation of Theorem 3.1)
    and the test accuracy (Table 1, final epoch), and reaches a training accuracy in fewer epochs (App G.5; here the
    first epoch with training accuracy >= ``threshold``; a seed that never gets there counts as one epoch past the
    run).  Columns: ``claim``, ``model``, ``paper`` (its Table 1 difference in points, or its wording), ``ours``
    (mean paired difference, 95% t interval, sign count; accuracy in points, epochs saved by U-Hop), ``seeds`` and
    ``verdict``: "holds" when the interval lies on the paper's side of 0, "does not hold" when it lies on the other
    side, "not resolved" when it contains 0 ("no difference" when every seed gives 0), "one seed" before a second
    seed exists.
    """
    import pandas as pd

    from ..stats import paired_interval

    per = per_seed_metrics(curves)
    if not len(per):
        return pd.DataFrame(columns=["claim", "model", "paper", "ours", "seeds", "verdict"])
    per = per[per.train_size == per.train_size.max()].copy()
    firsts = {(v, s, n): epochs_to_accuracy(c, threshold)
              for (v, s, n), c in curves.groupby(["variant", "run_seed", "train_size"])}
    per["epochs_to"] = [firsts[(v, s, n)] if not math.isnan(firsts[(v, s, n)]) else e + 1
                        for v, s, n, e in zip(per.variant, per.run_seed, per.train_size, per.epochs)]
    paper = PAPER_TABLE1.get(dataset, {})
    claims = (("higher maximal training accuracy (Table 1)", "max_train_acc", 0, 100.0, "points"),
              ("higher test accuracy (Table 1)", "final_test_acc", 1, 100.0, "points"),
              (f"fewer epochs to {100 * threshold:.0f}% training accuracy (App G.5)", "epochs_to", None, -1.0,
               "epochs saved"))
    rows = []
    for claim, metric, paper_idx, scale, unit in claims:
        for base, (seeds, diffs) in _uhop_pairs(per, metric).items():
            r = paired_interval([scale * d for d in diffs])
            if r["n"] < 2:
                ours, verdict = f"{r['mean']:+.2f} {unit} (one seed)", "one seed"
            else:
                ours = (f"{r['mean']:+.2f} {unit} [{r['low']:+.2f}, {r['high']:+.2f}], U-Hop better in "
                        f"{r['positive']} of {r['n']}" + (f", equal in {r['zero']}" if r["zero"] else ""))
                verdict = ("holds" if r["low"] > 0 else "does not hold" if r["high"] < 0
                           else "no difference" if r["zero"] == r["n"] else "not resolved")
            if paper_idx is None:
                stated = "fewer (curves only, no number)"
            elif base in paper:
                stated = f"{paper[UHOP_PAIRS[base]][paper_idx] - paper[base][paper_idx]:+.1f} points"
            else:
                stated = "—"
            rows.append({"claim": claim, "model": VARIANT_LABELS[base], "paper": stated, "ours": ours,
                         "seeds": r["n"], "verdict": verdict})
    return pd.DataFrame(rows)


def tier_status(run_name: str, output_dir) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """``(finished, pending)`` ``(variant, run seed)`` pairs of one ``notebooks/full_size.yml`` classification
    entry: finished when ``output_dir/curves.csv`` holds all of the entry's epochs for that run."""
    from ...reproduce import load_runs as load_full_size

    entry = next((r for r in load_full_size() if r["name"] == run_name), None)
    if entry is None:
        raise ValueError(f"unknown run {run_name!r} in notebooks/full_size.yml")
    cfg = config_from_parameters(entry.get("parameters") or {})
    curves = read_curves(Path(output_dir) / "curves.csv")
    done = set()
    if len(curves):
        last = curves.groupby(["variant", "run_seed"])["epoch"].max()
        done = {(v, int(s)) for (v, s), e in last.items() if e >= cfg.epochs}
    wanted = [(v, s) for s in cfg.run_seeds for v in cfg.variants]
    return [w for w in wanted if w in done], [w for w in wanted if w not in done]


def expressiveness_table(curves):
    """Fig 6 / App G.4: max training accuracy (mean, std over seeds) per variant and training-set size."""
    import pandas as pd

    if not len(curves):
        return pd.DataFrame()
    per = curves.groupby(["dataset", "variant", "train_size", "run_seed"]).train_acc.max().reset_index()
    out = per.groupby(["dataset", "variant", "train_size"]).train_acc.agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"mean": "max_train_acc", "std": "max_train_acc_std", "count": "seeds"})
    out["label"] = out.variant.map(VARIANT_LABELS)
    return out
