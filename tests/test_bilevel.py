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
    assert 0.0 <= hist[-1].train_acc <= 1.0


def test_plain_model_has_no_inner_steps():
    model = TinyModel(uhop=False)
    trainer = BilevelTrainer(model, inner_steps=5, progress=False)
    hist = trainer.fit(_data(), 1, batch_size=32)
    assert not trainer.uhop and hist[0].sep_loss_first is None and hist[0].inner_seconds == 0.0


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
