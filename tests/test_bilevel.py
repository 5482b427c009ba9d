"""Algorithm 2 (uhop.nn.bilevel): inner steps touch only Phi and lower the separation loss; checkpoints and
resume reproduce an uninterrupted run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uhop.nn import BilevelTrainer, FeatureMap, Hopfield, kernel_parameters, separation_step
from uhop.nn.bilevel import save_checkpoint

torch.set_num_threads(1)


class TinyModel(nn.Module):
    """Tokens -> one Hopfield layer (CLS-like learned query) -> linear head."""

    def __init__(self, uhop=True, sep="softmax", dim=8, classes=3):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.hopfield = Hopfield(dim, separation=sep, kernel="linear" if uhop else None)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.embed(x)
        q = self.query.expand(len(x), -1, -1)
        return self.head(self.hopfield((tokens, q, tokens))[:, 0])


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, 4, generator=g)
    y = (X[:, 0, 0] > 0).long() + (X[:, 1, 1] > 0.5).long()
    return X, y


def test_kernel_parameters_found_by_type():
    model = TinyModel()
    params = kernel_parameters(model)
    assert params == [model.hopfield.feature_map.weight]
    assert kernel_parameters(TinyModel(uhop=False)) == []
    fm = FeatureMap(3, bias=True)
    assert len(kernel_parameters(nn.Sequential(fm, fm))) == 2


def test_inner_step_changes_only_kernel_parameters_and_loss_falls():
    torch.manual_seed(0)
    model = TinyModel()
    X, _ = _data()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(kernel_parameters(model), lr=0.1)
    losses = [separation_step(model, X[:32], opt) for _ in range(30)]
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed == {"hopfield.feature_map.weight"}
    assert losses[-1] < losses[0] - 0.05
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:]))
    # no gradient left behind on any parameter
    assert all(p.grad is None for p in model.parameters())


def test_trainer_inner_loop_changes_only_kernel_during_inner_steps():
    torch.manual_seed(0)
    model = TinyModel()
    trainer = BilevelTrainer(model, inner_steps=3, progress=False)
    X, _ = _data()
    snap = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        trainer.inner_step(X[:16])
    diff = {n for n, p in model.named_parameters() if not torch.equal(snap[n], p.detach())}
    assert diff == {"hopfield.feature_map.weight"}


def test_fit_records_history_and_sep_loss_falls():
    torch.manual_seed(0)
    model = TinyModel()
    trainer = BilevelTrainer(model, lr=1e-2, inner_steps=2, progress=True, seed=1)
    hist = trainer.fit(_data(), 3, batch_size=32, evaluate=lambda m: {"probe": 1.0})
    assert [r.epoch for r in hist] == [1, 2, 3]
    assert hist[-1].sep_loss_last < hist[0].sep_loss_first
    assert hist[0].images == 96 and hist[0].inner_seconds > 0 and hist[0].extra == {"probe": 1.0}
    assert all(r.eval_seconds > 0 for r in hist)  # the evaluate call is timed apart from the training pass
    assert 0.0 <= hist[-1].train_acc <= 1.0


def test_plain_model_has_no_inner_steps():
    model = TinyModel(uhop=False)
    trainer = BilevelTrainer(model, inner_steps=5, progress=False)
    hist = trainer.fit(_data(), 1, batch_size=32)
    assert not trainer.uhop and hist[0].sep_loss_first is None and hist[0].inner_seconds == 0.0
    assert hist[0].eval_seconds is None  # no evaluate, nothing timed


def test_outer_step_can_exclude_kernel():
    torch.manual_seed(0)
    model = TinyModel()
    trainer = BilevelTrainer(model, inner_steps=0, outer_includes_kernel=False, progress=False)
    w = model.hopfield.feature_map.weight.detach().clone()
    trainer.fit(_data(), 1, batch_size=32)
    assert torch.equal(w, model.hopfield.feature_map.weight.detach())


def test_checkpoint_resume_reproduces_uninterrupted_run(tmp_path):
    data = _data()
    torch.manual_seed(0)
    ref = TinyModel(sep="sparsemax")
    init = {k: v.clone() for k, v in ref.state_dict().items()}
    BilevelTrainer(ref, inner_steps=2, scheduler="cosine", progress=False, seed=3).fit(data, 3, batch_size=32)

    path = tmp_path / "ckpt.pt"
    first = TinyModel(sep="sparsemax")
    first.load_state_dict(init)
    t1 = BilevelTrainer(first, inner_steps=2, scheduler="cosine", progress=False, seed=3, checkpoint_path=path)
    # Interrupt after epoch 2 of 3 (the checkpoint of epoch 2 is written before the callback runs).

    class Stop(Exception):
        pass

    def stop_after_two(record):
        if record.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        t1.fit(data, 3, batch_size=32, callback=stop_after_two)
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2   # 0-based index of the last finished epoch
    assert set(ckpt) >= {"model", "outer_optimizer", "kernel_optimizer", "scheduler", "epoch", "rng", "history"}

    resumed = TinyModel(sep="sparsemax")
    t2 = BilevelTrainer(resumed, inner_steps=2, scheduler="cosine", progress=False, seed=3, checkpoint_path=path)
    hist = t2.fit(data, 3, batch_size=32)
    assert [r.epoch for r in hist] == [1, 2, 3]
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)


def test_atomic_checkpoint_leaves_no_temporary(tmp_path):
    save_checkpoint(tmp_path / "a" / "c.pt", {"x": torch.ones(2)})
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["c.pt"]


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0.0}, "lr must be > 0"), ({"kernel_lr": -1.0}, "kernel_lr"), ({"inner_steps": -1}, "inner_steps"),
    ({"sep_loss": "max"}, "unknown sep_loss"), ({"scheduler": "step"}, "unknown scheduler"), ({"t": 0}, "t must be"),
])
def test_trainer_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BilevelTrainer(TinyModel(), **kwargs)


class _Evil:
    """Unpickling this would create a file: what a crafted checkpoint could do with a full unpickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    from uhop.nn.bilevel import load_checkpoint

    marker = tmp_path / "was_run"
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "payload": _Evil(marker)}, path)
    with pytest.raises(ValueError, match="last.pt.*other than tensors"):
        load_checkpoint(path)
    assert not marker.exists()


def test_trainer_checkpoints_load_with_weights_only(tmp_path):
    # the trainer's own checkpoint (model, optimizers, scheduler, history, every RNG state) passes the safe loader
    from uhop.nn.bilevel import BilevelTrainer, load_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    trainer = BilevelTrainer(model, scheduler="cosine", checkpoint_path=tmp_path / "c.pt", progress=False)
    trainer.fit((X, y), 1, batch_size=8)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["epoch"] == 0 and len(ckpt["history"]) == 1 and ckpt["rng"]["numpy"][0] == "MT19937"


def test_fit_with_numpy_arrays_is_a_clear_error():
    import numpy as np

    trainer = BilevelTrainer(nn.Sequential(nn.Linear(4, 3)), progress=False)
    with pytest.raises(TypeError, match="X must be a torch.Tensor, got ndarray"):
        trainer.fit((np.zeros((8, 4), dtype=np.float32), torch.zeros(8, dtype=torch.long)), 1)
    with pytest.raises(TypeError, match="pair"):
        trainer.fit(torch.zeros(8, 4), 1)


# -- early stopping, lr schedules, batch sources ----------------------------------------------------------------

def _scripted_evaluate(values):
    """``evaluate`` returning ``values`` one epoch after the other (the weights do not matter)."""
    it = iter(values)
    return lambda model: {"val": next(it)}


@pytest.mark.parametrize("on_disk", [False, True])
def test_early_stopping_stops_and_restores_the_best_weights(tmp_path, on_disk):
    torch.manual_seed(0)
    model = TinyModel()
    kwargs = {"checkpoint_path": tmp_path / "last.pt"} if on_disk else {}
    trainer = BilevelTrainer(model, lr=1e-2, inner_steps=1, progress=False, monitor="val", patience=2, **kwargs)
    weights = {}

    def snapshot(record):
        weights[record.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    hist = trainer.fit(_data(), 10, batch_size=32, evaluate=_scripted_evaluate([3.0, 1.0, 2.0, 1.5, 0.5, 0.1]),
                       callback=snapshot)
    # epoch 2 is the best; epochs 3 and 4 do not improve on it, so epoch 5 never starts
    assert [r.epoch for r in hist] == [1, 2, 3, 4] and trainer.stopped_early and trainer.best_epoch == 2
    assert trainer.best_value == 1.0 and trainer.bad_epochs == 2
    assert not torch.equal(weights[2]["head.weight"], weights[4]["head.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[2][k]), k
    assert (tmp_path / "last.best.pt").exists() == on_disk
    if on_disk:  # a second call resumes, finds patience exhausted and trains nothing more
        again = BilevelTrainer(TinyModel(), progress=False, monitor="val", patience=2,
                               checkpoint_path=tmp_path / "last.pt")
        assert len(again.fit(_data(), 10, batch_size=32, evaluate=_scripted_evaluate([]))) == 4
        assert again.stopped_early and all(torch.equal(v, weights[2][k]) for k, v in again.model.state_dict().items())


def test_monitor_must_be_a_metric_and_patience_needs_it():
    with pytest.raises(ValueError, match="patience needs monitor"):
        BilevelTrainer(TinyModel(), patience=3)
    trainer = BilevelTrainer(TinyModel(), monitor="val_loss", progress=False)
    with pytest.raises(KeyError, match="val_loss"):
        trainer.fit(_data(), 1, batch_size=32, evaluate=lambda m: {"val_mae": 1.0})


def test_lr_schedules_per_epoch():
    def lrs(**kwargs):
        trainer = BilevelTrainer(TinyModel(), lr=0.1, inner_steps=0, progress=False, **kwargs)
        return [r.lr for r in trainer.fit(_data(), 3, batch_size=48)], trainer

    assert lrs()[0] == [0.1, 0.1, 0.1]
    assert lrs(scheduler="exponential", lr_decay=0.5)[0] == [0.1, 0.05, 0.025]
    assert lrs(scheduler=lambda epoch: 0.1 / (epoch + 1))[0] == [0.1, 0.05, 0.1 / 3]
    cosine = lrs(scheduler="cosine")[0]
    assert cosine[0] == 0.1 and 0.0 < cosine[2] < cosine[1] < 0.1
    values, trainer = lrs(fused=True)
    assert trainer.outer_optimizer.defaults["fused"] is True


class _CountingSource:
    """A minimal batch source: ``epoch()`` is rows 0..n in order, ``sample(b)`` the next ``b`` rows of a counter."""

    def __init__(self, X, y, batch_size):
        self.X, self.y, self.batch_size, self.drawn = X, y, batch_size, 0

    def __len__(self):
        return -(-len(self.X) // self.batch_size)

    def epoch(self):
        for i in range(0, len(self.X), self.batch_size):
            yield self.X[i:i + self.batch_size], self.y[i:i + self.batch_size]

    def sample(self, b):
        idx = torch.arange(self.drawn, self.drawn + b) % len(self.X)
        self.drawn += b
        return self.X[idx], self.y[idx]

    def get_state(self):
        return {"drawn": self.drawn}

    def set_state(self, state):
        self.drawn = state["drawn"]


def test_fit_takes_a_batch_source_and_resumes_it_exactly(tmp_path):
    X, y = _data()
    torch.manual_seed(0)
    init = TinyModel(sep="sparsemax").state_dict()

    def trainer(path=None):
        model = TinyModel(sep="sparsemax")
        model.load_state_dict(init)
        return BilevelTrainer(model, inner_steps=2, progress=False, checkpoint_path=path)

    full = trainer()  # 36 rows a batch: the counter does not come back to 0 after an epoch
    source = _CountingSource(X, y, 36)
    hist = full.fit(source, 3)
    assert source.drawn == 3 * 3 * 2 * 36 and [r.images for r in hist] == [96] * 3  # inner: B_1 = batch_size
    with pytest.raises(ValueError, match="transform"):
        full.fit(_CountingSource(X, y, 36), 1, transform=lambda x: x)
    part = trainer(tmp_path / "c.pt")
    part.fit(_CountingSource(X, y, 36), 3, stop_after_epochs=2)
    assert part.interrupted and len(part.history) == 2
    resumed = trainer(tmp_path / "c.pt")
    resumed.fit(_CountingSource(X, y, 36), 3)
    assert not resumed.interrupted and [r.train_loss for r in resumed.history] == [r.train_loss for r in hist]
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_checkpoint_of_another_kind_or_configuration_is_refused_by_name(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "optimizer": {}, "history": [], "config": {"lr": 1.0}})
    trainer = BilevelTrainer(TinyModel(), progress=False, checkpoint_path=path)
    with pytest.raises(ValueError, match=r"last.pt is not a checkpoint of uhop.nn.BilevelTrainer"):
        trainer.fit(_data(), 1, batch_size=32)
    BilevelTrainer(TinyModel(), progress=False, checkpoint_path=path, metadata={"config": {"lr": 1.0}}).fit(
        _data(), 1, batch_size=32, resume=False)
    with pytest.raises(ValueError, match=r"last.pt was written by a different configuration"):
        BilevelTrainer(TinyModel(), progress=False, checkpoint_path=path,
                       metadata={"config": {"lr": 2.0}}).fit(_data(), 2, batch_size=32)
    with pytest.raises(ValueError, match="metadata keys"):
        BilevelTrainer(TinyModel(), metadata={"model": 1})


def test_checkpoint_without_early_stopping_state_still_resumes(tmp_path):
    # checkpoints written before the trainer had early stopping and per-epoch lr (running classification jobs)
    path = tmp_path / "c.pt"
    BilevelTrainer(TinyModel(), progress=False, checkpoint_path=path).fit(_data(), 1, batch_size=32)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["best"]
    for d in ckpt["history"]:
        del d["lr"]
    save_checkpoint(path, ckpt)
    trainer = BilevelTrainer(TinyModel(), progress=False, checkpoint_path=path)
    hist = trainer.fit(_data(), 2, batch_size=32)
    assert [r.epoch for r in hist] == [1, 2] and hist[0].lr is None and hist[1].lr == 1e-3


def test_elapsed_time_adds_up_over_resumes_and_older_checkpoints_fall_back_to_epoch_timings(tmp_path):
    path = tmp_path / "c.pt"
    first = BilevelTrainer(TinyModel(), progress=False, checkpoint_path=path)
    first.fit(_data(), 1, batch_size=32)
    saved = torch.load(path, weights_only=True)["elapsed"]
    assert saved["processes"] == 1 and 0 < saved["cpu_s"] and saved["wall_s"] >= first.history[0].seconds
    second = BilevelTrainer(TinyModel(), progress=False, checkpoint_path=path)
    second.fit(_data(), 2, batch_size=32)
    now = second.elapsed()
    assert now["processes"] == 2 and now["wall_s"] > saved["wall_s"] + second.history[1].seconds
    assert now["cpu_s"] > saved["cpu_s"]
    # a checkpoint without the entry (older versions): its epochs' timings stand in for the wall time, the CPU time
    # is unknown from then on
    ckpt = torch.load(path, weights_only=True)
    del ckpt["elapsed"]
    save_checkpoint(path, ckpt)
    third = BilevelTrainer(TinyModel(), progress=False, checkpoint_path=path)
    third.fit(_data(), 3, batch_size=32)
    assert third.elapsed_before == {"wall_s": sum(r.seconds for r in third.history[:2]), "cpu_s": None, "processes": 1}
    assert third.elapsed()["cpu_s"] is None and third.elapsed()["processes"] == 2
    assert torch.load(path, weights_only=True)["elapsed"]["cpu_s"] is None
