"""Vision models and the classification runner (App F.4): variants, patch sizes, presets, summaries."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from uhop.data import DatasetNotFoundError, data_root
from uhop.experiments import classification as cls
from uhop.experiments.classification.data import make_transform
from uhop.experiments.classification.store import RESUME_FREE, add_run
from uhop.models import VARIANTS, HopfieldClassifier, HopfieldViT, build_model
from uhop.nn import hopfield_layers

torch.set_num_threads(1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_models_build_and_run_for_every_variant(variant):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    model = build_model("cifar10", variant, image_size=32, num_classes=10, patch_size=8, dim=16)
    assert isinstance(model, HopfieldClassifier) and model(x).shape == (3, 10)
    sep, uhop = VARIANTS[variant]
    layer = model.hopfield
    assert layer.is_uhop == uhop and layer.separation.name == sep
    vit = build_model("tiny_imagenet", variant, image_size=64, num_classes=200, patch_size=16, dim=16, num_heads=4)
    assert isinstance(vit, HopfieldViT) and vit(torch.randn(2, 3, 64, 64)).shape == (2, 200)
    assert len(hopfield_layers(vit, uhop_only=True)) == (3 if uhop else 0)


def test_uhop_and_plain_models_start_identical():
    x = torch.randn(4, 3, 32, 32)
    outs = {}
    for variant in ("sparse", "sparse_uhop"):
        torch.manual_seed(7)
        outs[variant] = build_model("cifar10", variant, image_size=32, num_classes=10, patch_size=4, dim=16).eval()(x)
    torch.testing.assert_close(outs["sparse"], outs["sparse_uhop"])


def test_sparse_variant_really_is_sparse():
    torch.manual_seed(0)
    model = HopfieldClassifier(patch_size=4, dim=16, variant="sparse").eval()
    x = torch.randn(2, 3, 32, 32) * 3
    patches = model.embed(x)
    query = model.cls.expand(2, -1, -1)
    a = model.hopfield.get_association_matrix((patches, query, patches))
    assert a.shape == (2, 1, 1, 64) and bool((a == 0).any())


def test_paper_patch_size_gives_a_single_memory():
    model = HopfieldClassifier(patch_size=32, dim=16, variant="sparse")
    assert model.num_memories == 1
    x = torch.randn(2, 3, 32, 32)
    patches = model.embed(x)
    a = model.hopfield.get_association_matrix((patches, model.cls.expand(2, -1, -1), patches))
    torch.testing.assert_close(a, torch.ones_like(a))       # one memory: Sep = 1 for every separation


@pytest.mark.parametrize("patch", [3, 5, 48])
def test_patch_size_must_divide_image(patch):
    with pytest.raises(ValueError, match=r"patch_size \(\d+\) must divide"):
        HopfieldClassifier(patch_size=patch)
    with pytest.raises(ValueError, match="patch_size"):
        cls.make_config("cifar10", "smoke", patch_size=patch)


def test_presets_follow_tables_5_and_6():
    paper = cls.make_config("cifar100", "paper")
    assert (paper.lr, paper.dim, paper.epochs, paper.batch_size, paper.kernel_lr, paper.patch_size) == (
        1e-3, 512, 25, 128, 0.1, 32)
    tiny = cls.make_config("tiny_imagenet", "paper")
    assert (tiny.lr, tiny.dim, tiny.epochs, tiny.batch_size, tiny.kernel_lr, tiny.patch_size) == (
        1e-4, 512, 25, 128, 0.1, 64)
    assert cls.make_config("cifar10", "companion").patch_size == 4
    assert cls.make_config("cifar10", "smoke", epochs=None).epochs == cls.PRESETS["smoke"]["cifar"]["epochs"]
    with pytest.raises(ValueError, match="unknown preset"):
        cls.make_config("cifar10", "huge")
    with pytest.raises(ValueError, match="unknown variant"):
        cls.make_config("cifar10", "smoke", variants=("mhm", "uhop"))
    with pytest.raises(ValueError, match="unknown dataset"):
        cls.make_config("mnist", "smoke")


def _fake_curves():
    rows = []
    for variant, accs in {"mhm": [0.3, 0.45, 0.5], "mhm_uhop": [0.35, 0.52, 0.6]}.items():
        for seed in (0, 1):
            for e, a in enumerate(accs, 1):
                rows.append(dict(dataset="cifar10", variant=variant, label=variant, run_seed=seed, train_size=100,
                                 epoch=e, train_loss=1 - a, train_acc=a + 0.01 * seed, test_loss=1.2 - a,
                                 test_acc=a - 0.1, seconds=1.0, inner_seconds=0.5 if "uhop" in variant else 0.0,
                                 outer_seconds=0.5, images_per_s=100.0))
    return pd.DataFrame(rows)


def test_summary_and_convergence_measures():
    curves = _fake_curves()
    c = curves[(curves.variant == "mhm") & (curves.run_seed == 0)]
    assert cls.epochs_to_accuracy(c, 0.45) == 2.0 and math.isnan(cls.epochs_to_accuracy(c, 0.9))
    summary = cls.summarize(curves).set_index("variant")
    assert summary.loc["mhm_uhop", "max_train_acc"] == pytest.approx(0.605)
    assert summary.loc["mhm", "final_test_acc"] == pytest.approx(0.4)
    assert summary.loc["mhm_uhop", "epochs_to_train_acc_0.5"] == 2.0
    assert summary.loc["mhm", "reached_train_acc_0.5"] == 2
    assert summary.loc["mhm_uhop", "inner_fraction"] == pytest.approx(0.5)
    assert summary.loc["mhm", "paper_test_acc"] == pytest.approx(0.522)
    expr = cls.expressiveness_table(curves)
    assert set(expr.columns) >= {"variant", "train_size", "max_train_acc", "max_train_acc_std", "seeds"}


def test_run_end_to_end_and_resume(tmp_path):
    cfg = cls.make_config("cifar10", "smoke", train_sizes=(64,), test_size=64, epochs=1, run_seeds=(0,),
                          variants=("mhm", "sparse_uhop"), dim=8, batch_size=32, inner_batch_size=8)
    logs = []
    curves = cls.run(cfg, tmp_path, log=logs.append)
    assert len(curves) == 2 and set(curves.variant) == {"mhm", "sparse_uhop"}
    for name in ("curves.csv", "summary.csv", "summary.json", "expressiveness.csv", "manifest.json"):
        assert (tmp_path / name).exists(), name
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["parameters"]["dataset"] == "cifar10" and "exact" in manifest["data"]
    uh = curves[curves.variant == "sparse_uhop"].iloc[0]
    assert math.isfinite(uh.sep_loss_first) and -4.0 <= uh.sep_loss_first <= 0.0 and uh.inner_seconds > 0
    logs.clear()
    cls.run(cfg, tmp_path, log=logs.append)
    assert sum("skip" in s for s in logs) == 2


def test_subsets_are_seeded_and_nested():
    data = cls.ClassificationData(torch.arange(100).view(100, 1, 1, 1).to(torch.uint8).expand(100, 3, 2, 2),
                                  torch.arange(100), torch.zeros(1, 3, 2, 2, dtype=torch.uint8),
                                  torch.zeros(1, dtype=torch.long), 100, 2, torch.zeros(3), torch.ones(3), "x", True,
                                  "fake", torch.arange(100))
    a, b, c = data.subset(10, 0), data.subset(10, 0), data.subset(30, 0)
    assert torch.equal(a.train_index, b.train_index)
    assert torch.equal(c.train_index[:10], a.train_index)
    assert not torch.equal(data.subset(10, 1).train_index, a.train_index)


def test_cifar100_without_torchvision_files_raises_clear_error():
    if (data_root() / "cifar100" / "cifar-100-python").exists():
        pytest.skip("canonical CIFAR-100 present")
    with pytest.raises(DatasetNotFoundError, match="cifar100"):
        cls.load_data("cifar100")


def test_random_crop_flip_matches_a_per_image_reference():
    # the batched gather against padding, cropping and flipping each image by hand with the same draws
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 8, generator=g)
    out = cls.random_crop_flip(x, 2, torch.Generator().manual_seed(5))
    g2 = torch.Generator().manual_seed(5)
    dy = torch.randint(0, 5, (6,), generator=g2)
    dx = torch.randint(0, 5, (6,), generator=g2)
    flip = torch.rand(6, generator=g2) < 0.5
    for i in range(6):
        padded = torch.zeros(3, 12, 12)
        padded[:, 2:10, 2:10] = x[i]
        crop = padded[:, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        ref = crop.flip(-1) if flip[i] else crop
        # a flipped crop takes columns dx .. dx+7 in reverse order: the flip happens inside the crop window
        torch.testing.assert_close(out[i], ref)
    assert flip.any() and (~flip).any() and (dy != 2).any()


def test_augmentation_is_paired_and_resumes_per_epoch():
    data = cls.ClassificationData(torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8), torch.zeros(10),
                                  None, None, 10, 32, torch.full((3,), 0.5), torch.full((3,), 0.25), "x", True, "")
    a, b = make_transform(data, "cpu", augment=True, seed=3), make_transform(data, "cpu", augment=True, seed=3)
    a.set_epoch(2)
    first = a(data.train_X)
    a(data.train_X)  # a second batch of the same epoch draws new crops
    b.set_epoch(2)
    torch.testing.assert_close(b(data.train_X), first)  # same seed and epoch: same augmentation
    b.set_epoch(3)
    assert not torch.equal(b(data.train_X), first)
    plain = make_transform(data, "cpu")
    torch.testing.assert_close(plain(data.train_X), (data.train_X / 255.0 - 0.5) / 0.25)
    with pytest.raises(ValueError, match="architecture"):
        cls.make_config("cifar10", "smoke", architecture="resnet")


def test_paired_differences_by_hand():
    curves = _fake_curves()
    # make seed 1 of U-Hop a little worse on the test set so that the two differences differ
    curves.loc[(curves.variant == "mhm_uhop") & (curves.run_seed == 1), "test_acc"] -= 0.02
    d = cls.paired_differences(curves).set_index("metric")
    assert list(d["pair"].unique()) == ["MHM + U-Hop vs MHM"]
    # max train acc: 0.60 - 0.50 in both seeds (seed offsets cancel): no spread, interval collapses to the mean
    assert d.loc["max_train_acc", "diff"] == pytest.approx(0.10) and d.loc["max_train_acc", "seeds"] == 2
    assert d.loc["max_train_acc", "low"] == pytest.approx(0.10) and d.loc["max_train_acc", "verdict"] == "U-Hop higher"
    # final test acc: differences 0.10 and 0.08 -> mean 0.09, sd 0.01414, t(1) = 12.706
    half = 12.706 * (0.02 / math.sqrt(2)) / math.sqrt(2)
    assert d.loc["final_test_acc", "diff"] == pytest.approx(0.09)
    assert d.loc["final_test_acc", "low"] == pytest.approx(0.09 - half)
    assert d.loc["final_test_acc", "verdict"] == "no resolved difference"  # 0.09 - 0.127 < 0
    assert d.loc["max_train_acc", "paper diff"] == pytest.approx(0.086)
    per = cls.per_seed_metrics(curves)
    assert len(per) == 4 and per.epochs.eq(3).all()


def test_claim_verdicts_by_hand():
    curves = _fake_curves()
    # MHM + U-Hop: max train acc +0.10 in both seeds (holds); final test acc +0.10 and +0.08 -> interval
    # 0.09 -/+ 12.706 * 0.01414 / sqrt(2) contains 0 (not resolved); 50% train acc reached at epoch 3 (MHM) and
    # epoch 2 (U-Hop) in both seeds: one epoch saved, no spread (holds).
    curves.loc[(curves.variant == "mhm_uhop") & (curves.run_seed == 1), "test_acc"] -= 0.02
    v = cls.claim_verdicts(curves, threshold=0.5).set_index("claim")
    assert list(v.model.unique()) == ["MHM"] and v.seeds.eq(2).all()
    train = v.loc["higher maximal training accuracy (Table 1)"]
    assert train.verdict == "holds" and train.paper == "+8.6 points"
    assert train.ours.startswith("+10.00 points [+10.00, +10.00], U-Hop better in 2 of 2")
    test = v.loc["higher test accuracy (Table 1)"]
    half = 12.706 * (0.02 / math.sqrt(2)) / math.sqrt(2) * 100
    assert test.verdict == "not resolved" and f"[{9 - half:+.2f}, {9 + half:+.2f}]" in test.ours
    fast = v.loc["fewer epochs to 50% training accuracy (App G.5)"]
    assert fast.verdict == "holds" and fast.ours.startswith("+1.00 epochs saved")
    # a run that never reaches the threshold counts as one epoch past its end: 59% is reached by U-Hop at epoch 3
    # and never by MHM (4): one epoch saved; with the roles swapped, one epoch lost
    late = cls.claim_verdicts(curves, threshold=0.59).set_index("claim")
    assert late.loc["fewer epochs to 59% training accuracy (App G.5)"].ours.startswith("+1.00 epochs saved")
    flipped = curves.assign(variant=curves.variant.map({"mhm": "mhm_uhop", "mhm_uhop": "mhm"}))
    slow = cls.claim_verdicts(flipped, threshold=0.59).set_index("claim")
    assert slow.loc["fewer epochs to 59% training accuracy (App G.5)"].ours.startswith("-1.00 epochs saved")
    # U-Hop lower in every seed with no spread: the claim does not hold; equal everywhere: no difference
    assert cls.claim_verdicts(flipped).set_index("claim").loc[
        "higher maximal training accuracy (Table 1)", "verdict"] == "does not hold"
    same = curves[curves.variant == "mhm"]
    same = pd.concat([same, same.assign(variant="mhm_uhop")])
    assert cls.claim_verdicts(same).verdict.eq("no difference").all()
    one = cls.claim_verdicts(curves[curves.run_seed == 0])
    assert one.verdict.eq("one seed").all()


def test_convergence_table_and_load_folder(tmp_path):
    table = cls.convergence_table(_fake_curves(), (0.45, 0.6))
    assert table.loc["mhm", "epochs to 45% train acc"] == "2.0"           # epoch 2 in both seeds
    assert table.loc["mhm", "epochs to 60% train acc"] == "—"             # never reached
    assert table.loc["mhm_uhop", "epochs to 60% train acc"] == "3.0"      # seed 0 (0.60) and seed 1 (0.61)
    assert table.loc["mhm_uhop", "minutes per run"] == "0.1" and table.loc["mhm", "s / epoch"] == "1.0"
    assert table.loc["mhm_uhop", "inner loop share"] == "50%"
    with pytest.raises(FileNotFoundError, match="summary.csv.*manifest.json"):
        cls.load_folder(tmp_path)


def test_gpu_slice_declares_table5_scale_and_runs_at_smoke_size(tmp_path):
    from uhop.reproduce import load_runs

    entry = next(r for r in load_runs() if r["name"] == "classification_gpu_slice")
    cfg = cls.config_from_parameters(entry["parameters"])
    assert (cfg.dim, cfg.epochs, cfg.batch_size, cfg.lr, cfg.kernel_lr) == (512, 25, 128, 1e-3, 0.1)
    assert cfg.variants == ("mhm", "mhm_uhop") and cfg.run_seeds == (0,) and cfg.device == "cuda"
    assert cfg.train_sizes == (None,) and cfg.test_size is None
    smoke = cls.config_from_parameters({**entry["parameters"], "dim": 16, "epochs": 1, "train_sizes": "256",
                                        "test_size": 128, "device": "cpu", "batch_size": 64})
    curves = cls.run(smoke, tmp_path, log=lambda *_: None)
    assert set(curves.variant) == {"mhm", "mhm_uhop"} and (tmp_path / "manifest.json").exists()


def test_committed_converged_runs_match_their_entry():
    # Every committed run of the converged tier was made with the settings its full_size.yml entry declares
    # (the manifest's parameters, apart from which variants and seeds that call ran), ran all its epochs on the
    # whole training and test splits, and plain MHM clears the tier's 60% gate.
    from pathlib import Path

    from uhop.reproduce import load_runs

    out = Path(__file__).resolve().parents[1] / "results" / "classification" / "converged"
    if not (out / "curves.csv").exists():
        pytest.skip("no converged classification run is committed yet")
    entry = next(r for r in load_runs() if r["name"] == "classification_converged_cifar10")
    cfg = cls.config_from_parameters(entry["parameters"])
    manifest = json.loads((out / "manifest.json").read_text())
    expected = json.loads(json.dumps(cfg.as_dict()))
    for key, value in manifest["parameters"].items():
        if key not in RESUME_FREE:
            assert value == expected[key], f"{key}: {value!r} committed, {expected[key]!r} declared"
    assert manifest["data"]["train_images"] == 50_000 and manifest["data"]["test_images"] == 10_000
    curves = pd.read_csv(out / "curves.csv")
    for (variant, seed), c in curves.groupby(["variant", "run_seed"]):
        assert sorted(c.epoch) == list(range(1, cfg.epochs + 1)), (variant, seed)
        assert (c.train_size == 50_000).all()
    mhm = curves[curves.variant == "mhm"]
    if len(mhm):
        final = mhm[mhm.epoch == cfg.epochs].test_acc
        assert final.mean() >= 0.60, f"plain MHM final test accuracy {final.mean():.3f} < 0.60"


def _add_runs(path, seed_offset, n):
    from uhop.experiments import classification as cls

    for i in range(n):
        row = dict.fromkeys(cls.CURVE_COLUMNS, 0.0) | {"variant": "mhm", "run_seed": seed_offset + i,
                                                       "train_size": 8, "epoch": 1}
        add_run(path, [row], "mhm", seed_offset + i, 8)


def test_processes_training_into_one_folder_keep_each_others_runs(tmp_path):
    # Two trainers writing the converged tier's folder at once once dropped a finished run: each wrote back the
    # copy of curves.csv it had read when it started. Each run's rows are now merged into the file on disk,
    # under its lock, so two processes adding runs as fast as they can lose nothing.
    import multiprocessing as mp

    import pandas as pd

    path = tmp_path / "curves.csv"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_runs, args=(path, offset, 12)) for offset in (0, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    seeds = sorted(pd.read_csv(path)["run_seed"])
    assert seeds == list(range(12)) + list(range(100, 112))
