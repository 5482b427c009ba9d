"""The memory-retrieval runner (uhop.experiments.retrieval): registries, protocols, grid, resume, refusal."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import uhop
from uhop.experiments import (
    COLUMNS,
    METHODS,
    PROTOCOLS,
    ConfigMismatchError,
    GridConfig,
    evaluate_cell,
    evaluate_group,
    make_queries,
    run_grid,
    stage1_settings,
)
from uhop.experiments import report
from uhop.experiments.retrieval import ImagePool

ALL = list(METHODS)
SMALL = dict(experiment="t", dataset="synthetic", protocol="paper", methods=ALL, sizes=[6, 10],
             epochs=[0, 3, 8], noise=[0.5], seeds=[0, 1])
TIMING = ("wall_s", "stage1_s")


def _rows_by_key(df):
    df = df.drop(columns=list(TIMING)).copy()
    df["N"] = df["N"].fillna(-1)
    return df.sort_values(["method", "M", "N", "noise", "seed", "loss"]).reset_index(drop=True)


# -- registries ---------------------------------------------------------------------------------

def test_registries():
    assert set(PROTOCOLS) == {"paper", "official", "tuned"}
    assert set(METHODS) == {"mhm", "sparse_mhm", "uhop_mhm", "uhop_sparse_mhm", "dam", "dam_official", "l2",
                            "l2_official", "manhattan", "manhattan_official"}
    assert {m for m, s in METHODS.items() if s.uhop} == {"uhop_mhm", "uhop_sparse_mhm"}
    assert {m for m, s in METHODS.items() if s.official} == {"dam_official", "l2_official", "manhattan_official"}
    paper, official, tuned = PROTOCOLS["paper"], PROTOCOLS["official"], PROTOCOLS["tuned"]
    assert (paper.mask_per, paper.mask_rescale, paper.beta_inside, paper.tune_beta) == ("pixel", False, True, False)
    assert (official.mask_per, official.mask_rescale, official.beta_inside) == ("entry", True, False)
    assert tuned.tune_beta and tuned.beta_inside and tuned.mask_per == "pixel"


def test_stage1_settings_per_protocol():
    p = stage1_settings("paper")
    assert (p["init"], p["normalize_rows"], p["loss"], p["lr"], p["train_fraction"], p["lr_schedule"]) == \
        ("identity", True, "avg", 1.0, 1.0, "constant")
    o = stage1_settings("official")
    assert (o["init"], o["normalize_rows"], o["loss"], o["lr"], o["train_fraction"]) == \
        ("official", False, "max", 10.0, 0.5)
    assert stage1_settings("official", "noise", "total_norm")["train_fraction"] == 1.0
    pe = stage1_settings("official", "noise", "per_entry")
    assert (pe["loss"], pe["lr_schedule"], pe["train_fraction"]) == ("avg", "official", 1.0)
    assert stage1_settings("tuned") == p
    assert stage1_settings("paper", loss="max", lr=0.3)["lr"] == 0.3


# -- a tiny grid ----------------------------------------------------------------------------------

def test_tiny_grid_rows(tmp_path):
    cfg = GridConfig(**SMALL)
    out = tmp_path / "g.csv"
    df = run_grid(cfg, out, progress=False, command="pytest")
    n_base = len(cfg.baseline_methods) * 2 * 2            # methods x M x seeds
    n_uhop = len(cfg.uhop_methods) * 2 * 2 * 3             # ... x N
    assert len(df) == n_base + n_uhop
    assert tuple(df.columns) == COLUMNS
    base = df[~df["method"].isin(cfg.uhop_methods)]
    assert base["N"].isna().all() and base["sep_loss"].isna().all()
    uh = df[df["method"].isin(cfg.uhop_methods)]
    assert set(uh["N"]) == {0, 3, 8} and uh["sep_loss"].notna().all() and (uh["n_train"] == uh["M"]).all()
    corrected = df[~df["method"].str.endswith("_official")]
    assert corrected[["sse_mean", "mse_mean", "success", "hit", "eff_support"]].notna().all().all()
    assert ((df["success"] >= 0) & (df["success"] <= 1)).all()
    assert (df["mse_mean"] * df["d"] - df["sse_mean"]).abs().max() < 1e-6 * (1 + df["sse_mean"].max())
    # Stage I makes the learned kernel more separated than the identity (N = 0)
    sep = uh[uh["method"] == "uhop_mhm"].groupby("N")["sep_loss"].mean()
    assert sep[8] < sep[0]
    # side files
    conf = json.loads(out.with_name("g.csv.config.json").read_text())
    assert conf["fingerprint"] == cfg.fingerprint()
    man = json.loads(out.with_name("g.csv.manifest.json").read_text())
    for key in ("command", "parameters", "git", "date", "machine", "versions", "wall_time_s"):
        assert key in man
    assert man["command"] == "pytest" and man["complete"] and man["rows"] == len(df)


@pytest.mark.skipif(not os.environ.get("UHOP_DATA"), reason="needs the MNIST copy ($UHOP_DATA)")
def test_tiny_grid_on_mnist(tmp_path):
    from uhop.data import sample_memories

    cfg = GridConfig(experiment="t", dataset="mnist", protocol="paper", methods=["mhm", "uhop_mhm", "manhattan"],
                     sizes=[8], epochs=[0, 5], seeds=[3])
    df = run_grid(cfg, tmp_path / "m.csv", progress=False)
    assert len(df) == 2 + 2 and set(df["variant"]) == {"torchvision"} and (df["d"] == 784).all()
    pool = ImagePool("mnist")
    assert torch.equal(pool.sample(8, 3).memories, sample_memories("mnist", 8, seed=3).memories)
    mhm = df[df["method"] == "mhm"]["sse_mean"].item()
    u0 = df[(df["method"] == "uhop_mhm") & (df["N"] == 0)]["sse_mean"].item()
    assert abs(mhm - u0) <= 1e-4 * (1 + mhm)


# -- resume / refusal -----------------------------------------------------------------------------

def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    cfg = GridConfig(**dict(SMALL, methods=["mhm", "uhop_mhm", "l2_official", "dam"]))
    full = run_grid(cfg, tmp_path / "full.csv", progress=False)

    part = tmp_path / "part.csv"

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(cfg, part, progress=False, callback=stop)
    first = report.read_results(part) if hasattr(report, "read_results") else None
    import pandas as pd

    first = pd.read_csv(part)
    groups_done = {(int(m), int(s)) for m, s in zip(first["M"], first["seed"])}
    assert groups_done == set(cfg.groups()[:2])                      # exactly two groups saved
    assert not json.loads(part.with_name("part.csv.manifest.json").read_text())["complete"]

    calls = []
    import uhop.experiments.retrieval.grid as grid  # where run_grid looks evaluate_group up

    original = grid.evaluate_group

    def spy(cfg_, M, seed, **kw):
        calls.append((M, seed))
        return original(cfg_, M, seed, **kw)

    grid.evaluate_group = spy
    try:
        resumed = run_grid(cfg, part, progress=False)
    finally:
        grid.evaluate_group = original
    assert calls == cfg.groups()[2:]                                  # the done groups were skipped
    pd.testing.assert_frame_equal(_rows_by_key(resumed), _rows_by_key(full), check_exact=False, rtol=1e-6)
    # a third call has nothing left to do
    again = run_grid(cfg, part, progress=False, max_groups=0)
    assert len(again) == len(full)


def test_refuses_a_different_configuration(tmp_path):
    out = tmp_path / "r.csv"
    cfg = GridConfig(**dict(SMALL, methods=["mhm"], sizes=[6], seeds=[0]))
    run_grid(cfg, out, progress=False)
    before = out.read_text()
    other = GridConfig(**dict(SMALL, methods=["mhm"], sizes=[6], seeds=[0], beta=2.0))
    with pytest.raises(ConfigMismatchError, match=r"different configuration.*beta.*delete"):
        run_grid(other, out, progress=False)
    assert out.read_text() == before                                  # untouched
    out.with_name("r.csv.config.json").unlink()
    with pytest.raises(ConfigMismatchError, match="(?i)delete"):
        run_grid(cfg, out, progress=False)
    assert out.read_text() == before


def test_one_writer_per_csv_and_no_mixed_data_variants(tmp_path):
    import json

    from uhop.provenance import writer_lock

    out = tmp_path / "w.csv"
    cfg = GridConfig(**dict(SMALL, methods=["mhm"], sizes=[6], seeds=[0]))
    with writer_lock(out):  # as if another run_grid were writing this CSV
        with pytest.raises(RuntimeError, match="w.csv.*being written by pid"):
            run_grid(cfg, out, progress=False)
    assert not out.exists()
    run_grid(cfg, out, progress=False)  # the lock is gone with its holder
    before = out.read_text()
    # a resume that resolves another copy of the data set refuses to mix rows
    man_path = tmp_path / "w.csv.manifest.json"
    manifest = json.loads(man_path.read_text())
    manifest["data"]["variant"] = "some_other_copy"
    man_path.write_text(json.dumps(manifest))
    with pytest.raises(ConfigMismatchError, match="'some_other_copy' copy of .*would mix"):
        run_grid(cfg, out, progress=False)
    assert out.read_text() == before


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,match", [
    ("methods", ["mhm", "hopfield9"], r"method 'hopfield9'.*valid method values.*'uhop_mhm'"),
    ("protocol", "papper", r"protocol 'papper'.*valid protocol values.*'official'"),
    ("dataset", "mnits", r"dataset 'mnits'.*valid dataset values.*'cifar10'"),
    ("noise", [-0.1], r"noise levels must be >= 0"),
    ("noise", [1.0], r"masked fractions"),
    ("sizes", [1], r"sizes"),
    ("corruption", "blur", r"corruption 'blur'.*'mask'"),
    ("noise_mode", "l2", r"noise_mode 'l2'.*'total_norm'"),
    ("losses", ["mean"], r"loss 'mean'.*'avg'"),
])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        GridConfig(**dict(SMALL, **{field: value}))


def test_memory_set_larger_than_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"sizes: M=2000 exceeds what the 1000 images of synthetic"):
        run_grid(GridConfig(**dict(SMALL, methods=["mhm"], sizes=[2000])), tmp_path / "x.csv", progress=False)
    with pytest.raises(ValueError, match=r"M=600 .*needs 2 M images"):
        run_grid(GridConfig(**dict(SMALL, methods=["mhm"], sizes=[600], protocol="tuned")), tmp_path / "y.csv",
                 progress=False)
    with pytest.raises(ValueError, match="noise level"):
        make_queries(torch.rand(3, 64), (1, 8, 8), "paper", "noise", -1.0)


# -- protocol semantics ---------------------------------------------------------------------------

@pytest.mark.parametrize("sparse", [False, True])
def test_uhop_with_zero_epochs_is_mhm_under_paper(sparse):
    u = "uhop_sparse_mhm" if sparse else "uhop_mhm"
    b = "sparse_mhm" if sparse else "mhm"
    for seed in (0, 1):
        ru = evaluate_cell("synthetic", "paper", u, 12, 0, 0.5, seed)
        rb = evaluate_cell("synthetic", "paper", b, 12, None, 0.5, seed)
        assert math.isclose(ru["sse_mean"], rb["sse_mean"], rel_tol=1e-5, abs_tol=1e-7)
        assert math.isclose(ru["eff_support"], rb["eff_support"], rel_tol=1e-5)


def test_baselines_match_the_package_functions():
    pool = ImagePool("synthetic")
    mem = pool.sample(15, 4).memories
    for protocol in ("paper", "official"):
        q = make_queries(mem, pool.image_shape, protocol, "mask", 0.5, seed=4)
        ref = {
            "mhm": uhop.mhm(q, mem), "sparse_mhm": uhop.sparse_mhm(q, mem), "dam": uhop.dam(q, mem),
            "l2": uhop.l2(q, mem), "manhattan": uhop.manhattan(q, mem),
            "l2_official": uhop.l2(q, mem, bug_compatible=True),
            "manhattan_official": uhop.manhattan(q, mem, bug_compatible=True),
            "dam_official": uhop.dam(q.double(), mem.double(), bug_compatible=True),
        }
        for method, out in ref.items():
            row = evaluate_cell("synthetic", protocol, method, 15, None, 0.5, 4)
            want = float(uhop.sse(out.float(), mem).double().mean())
            assert math.isclose(row["sse_mean"], want, rel_tol=1e-4, abs_tol=1e-5), (protocol, method)


def test_official_query_is_per_entry_dropout_times_two_and_paper_query_is_per_pixel():
    x = torch.rand(40, 3 * 4 * 4) + 0.01                               # no zero entries
    off = make_queries(x, (3, 4, 4), "official", "mask", 0.5, seed=1)
    kept = off != 0
    assert torch.allclose(off[kept], 2 * x[kept])                     # inverted dropout: x2
    assert 0.4 < (~kept).double().mean() < 0.6
    per_channel = (~kept).reshape(40, 3, 16)
    assert (per_channel.any(1) != per_channel.all(1)).any()           # channels masked separately
    pap = make_queries(x, (3, 4, 4), "paper", "mask", 0.5, seed=1)
    kept = pap != 0
    assert torch.equal(pap[kept], x[kept])                            # no rescaling
    masked = (~kept).reshape(40, 3, 16)
    assert torch.equal(masked.any(1), masked.all(1))                  # whole pixels (all channels)
    assert 0.4 < masked[:, 0].double().mean() < 0.6


def test_official_stage1_trains_on_the_first_half_only():
    pool = ImagePool("synthetic")
    mem = pool.sample(12, 0).memories
    settings = stage1_settings("official")
    k1, h1 = uhop.fit_kernel(mem, epochs=5, seed=7, **settings)
    other = mem.clone()
    other[6:] = torch.rand(6, mem.shape[1])                           # change the second half
    k2, _ = uhop.fit_kernel(other, epochs=5, seed=7, **settings)
    assert h1.n_train == 6 and torch.equal(k1.weight, k2.weight)
    row = evaluate_cell("synthetic", "official", "uhop_mhm", 12, 5, 0.5, 0)
    assert row["n_train"] == 6 and row["beta_placement"] == "after"
    assert evaluate_cell("synthetic", "paper", "uhop_mhm", 12, 5, 0.5, 0)["n_train"] == 12


def test_official_uhop_matches_a_per_memory_loop():
    """The vectorised official U-Hop equals the official script's loop: q = dropout(x) x 2, W ~ N(0, 1)
    fitted with train_kernel_max on Xi[:M/2], x_new = Xi (beta softmax(K(Xi, q)))."""
    from uhop.experiments.retrieval import derive_seed

    M, N, seed = 10, 4, 2
    pool = ImagePool("synthetic")
    mem = pool.sample(M, seed).memories
    kernel, _ = uhop.fit_kernel(mem, epochs=N, seed=derive_seed(seed, f"kernel-M{M}"), **stage1_settings("official"))
    q = make_queries(mem, pool.image_shape, "official", "mask", 0.5, seed=seed)
    W = kernel.weight.detach()
    errs = []
    for m in range(M):                                                # the official per-memory loop
        scores = (mem @ W.T) @ (W @ q[m])
        x_new = mem.T @ (1.0 * torch.softmax(scores, dim=0))
        errs.append(float(((mem[m].clamp(0, 1) - x_new.clamp(0, 1)) ** 2).sum()))
    row = evaluate_cell("synthetic", "official", "uhop_mhm", M, N, 0.5, seed)
    assert math.isclose(row["sse_mean"], sum(errs) / M, rel_tol=1e-4, abs_tol=1e-5)


def test_paper_uhop_row_is_the_core_retrieval_with_the_fitted_kernel():
    """The runner's U-Hop row under "paper" is uhop.retrieve with the kernel fit_kernel returns (beta inside Sep)."""
    from uhop.experiments.retrieval import derive_seed

    M, N, seed, beta = 12, 6, 1, 2.0
    pool = ImagePool("synthetic")
    mem = pool.sample(M, seed).memories
    kernel, _ = uhop.fit_kernel(mem, epochs=N, seed=derive_seed(seed, f"kernel-M{M}"), **stage1_settings("paper"))
    q = make_queries(mem, pool.image_shape, "paper", "mask", 0.5, seed=seed)
    with torch.no_grad():
        out = uhop.retrieve(q, mem, beta=beta, kernel=kernel)
        top = uhop.association(q, mem, beta=beta, kernel=kernel).max(-1).values.double().mean()
    row = evaluate_cell("synthetic", "paper", "uhop_mhm", M, N, 0.5, seed, beta=beta)
    assert row["beta"] == beta and row["beta_placement"] == "inside"
    assert math.isclose(row["sse_mean"], float(uhop.sse(out, mem).double().mean()), rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(row["top_weight"], float(top), rel_tol=1e-6)


def test_tuned_beta_is_chosen_on_heldout_memories_only():
    cfg = GridConfig(**dict(SMALL, protocol="tuned", methods=["mhm", "uhop_mhm", "l2", "dam"], sizes=[10],
                            epochs=[5], seeds=[0]))
    pool = ImagePool("synthetic")
    test = pool.sample(10, 0)
    held = pool.heldout(10, 0, test.indices)
    assert not set(test.indices.tolist()) & set(held.indices.tolist())  # disjoint memory sets

    class OtherTest(ImagePool):
        """Same held-out set, a completely different test set."""

        def sample(self, M, seed):
            return super().sample(M, seed + 100)

        def heldout(self, M, seed, exclude):
            return pool.heldout(M, seed, test.indices)

    rows_a = {r["method"]: r for r in evaluate_group(cfg, 10, 0, pool=pool)}
    rows_b = {r["method"]: r for r in evaluate_group(cfg, 10, 0, pool=OtherTest("synthetic"))}
    for m in ("mhm", "uhop_mhm", "l2"):
        assert rows_a[m]["beta"] == rows_b[m]["beta"]                # test set never changes beta
        assert rows_a[m]["beta_heldout_sse"] == rows_b[m]["beta_heldout_sse"]
        assert rows_a[m]["beta"] in cfg.beta_grid
    assert rows_a["mhm"]["sse_mean"] != rows_b["mhm"]["sse_mean"]
    assert math.isnan(rows_a["dam"]["beta"])                          # DAM is beta-invariant: not tuned
    # the chosen beta is the held-out argmin over the grid
    from uhop.experiments.retrieval.scoring import mean_sse

    qh = make_queries(held.memories, pool.image_shape, "tuned", "mask", 0.5, seed=0, stream="heldout-query")
    errs = [mean_sse(METHODS["mhm"], qh @ held.memories.T, held.memories, b, True) for b in cfg.beta_grid]
    assert rows_a["mhm"]["beta"] == cfg.beta_grid[min(range(len(errs)), key=lambda i: (errs[i], i))]


def test_random_stage1_draws_and_correlation_helpers():
    cfg = GridConfig(**dict(SMALL, methods=["uhop_mhm"], sizes=[8], epochs=[1, 20], seeds=list(range(6)),
                            stage1_sampling="random"))
    draws = [cfg.stage1_draw(s) for s in cfg.seeds]
    assert all(1 <= n <= 20 and lr > 0 for n, lr in draws) and len(set(draws)) == 6
    rows = evaluate_group(cfg, 8, 3)
    assert len(rows) == 1 and rows[0]["N"] == draws[3][0] and rows[0]["lr"] == pytest.approx(draws[3][1])
    assert report.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert report.spearman([1, 2, 2, 3], [3, 2, 2, 1]) == pytest.approx(-1.0)
    assert report.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_groups_in_parallel_write_the_csv_of_a_sequential_run(tmp_path):
    import pandas as pd

    cfg = GridConfig(**dict(SMALL, methods=["mhm", "uhop_mhm", "manhattan"], sizes=[6, 8], seeds=[0, 1]))
    seq = run_grid(cfg, tmp_path / "seq.csv", progress=False)
    par = run_grid(cfg, tmp_path / "par.csv", progress=False, jobs=2)
    timing = [c for c in seq.columns if c.endswith("_s")]
    pd.testing.assert_frame_equal(seq.drop(columns=timing), par.drop(columns=timing))
    with pytest.raises(ValueError, match="jobs"):
        run_grid(cfg, tmp_path / "bad.csv", progress=False, jobs=0)
