"""The Gram engine of Stage I (uhop.stage1_gram) gives the autograd engine's W.

Plain gradient descent keeps W_k = W_0 (I + Xi A_k Xi^T); the Gram engine runs the recursion
for A_k on M x M matrices with the loss gradient in closed form (see the Performance chapter).
These tests check the closed-form gradient against autograd of a loss written out here, and
compare the two engines on random and real MNIST memories over several M, d, D_Phi, step sizes,
schedules, losses and epoch counts. The step sizes are kept in the range where gradient descent
on this loss is stable: above it (e.g. lr = 1 on 784-d [0, 1] images) the iteration is chaotic
and any two implementations, however exact, drift apart through rounding alone.
"""

from __future__ import annotations

import os

import math

import pytest
import torch

import uhop
from uhop.stage1_gram import gram_coefficient

DT = torch.float64


def _reference_loss_of_gram(K, t, reduction, pairs, normalize):
    """The separation loss (Definition 2.2; max: App G.2) as a function of K = F F^T, written out."""
    M = K.shape[0]
    n = torch.diagonal(K)
    if normalize:   # ||a/|a| - b/|b|||^2 = 2 - 2 <a, b> / (|a| |b|)
        D = 2 - 2 * K / torch.sqrt(n[:, None] * n[None, :])
    else:           # ||a - b||^2 = |a|^2 + |b|^2 - 2 <a, b>
        D = n[:, None] + n[None, :] - 2 * K
    D = D * (1 - torch.eye(M, dtype=K.dtype))          # d(u, u) = 0 exactly
    i, j = torch.triu_indices(M, M, 1)
    if reduction == "max":
        return -t * D[i, j].min()
    values = D[i, j] if pairs == "distinct" else D.reshape(-1)
    return torch.log(torch.exp(-t * values).sum()) - math.log(values.numel())


VARIANTS = [("avg", "distinct", True), ("avg", "distinct", False), ("avg", "all", True),
            ("avg", "all", False), ("max", "distinct", True), ("max", "distinct", False)]


@pytest.mark.parametrize("reduction,pairs,normalize", VARIANTS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_coefficient_matches_autograd_of_the_loss(reduction, pairs, normalize, seed):
    # grad_W L = W Xi C Xi^T with C = Gamma + Gamma^T, Gamma = dL/dK: the closed form against autograd
    # of the loss written out above, in float64 (measured: <= 8e-16 relative to max |C|).
    F = torch.randn(12, 7, dtype=DT, generator=torch.Generator().manual_seed(seed))
    K = (F @ F.T).requires_grad_(True)
    t = 0.7 + seed
    reference = _reference_loss_of_gram(K, t, reduction, pairs, normalize)
    (gamma,) = torch.autograd.grad(reference, K)
    loss, C, min_sq = gram_coefficient(K.detach(), t, reduction, pairs, normalize)
    expected = gamma + gamma.T
    assert float((C - expected).abs().max() / expected.abs().max()) < 1e-13
    assert math.isclose(float(loss), float(reference.detach()), rel_tol=1e-13)
    U = torch.nn.functional.normalize(F, dim=1) if normalize else F
    assert math.isclose(float(min_sq), float(torch.pdist(U).min() ** 2), rel_tol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_closed_form_coefficient_splits_tied_worst_pairs_evenly(normalize):
    # Orthonormal features: all 15 pairs at distance^2 = 2 tie for the max loss. The subgradient
    # torch.min back-propagates (and the closed form uses) splits -t evenly over them.
    K = torch.eye(6, dtype=DT).requires_grad_(True)
    (gamma,) = torch.autograd.grad(_reference_loss_of_gram(K, 2.0, "max", "distinct", normalize), K)
    _, C, min_sq = gram_coefficient(K.detach(), 2.0, "max", "distinct", normalize)
    torch.testing.assert_close(C, gamma + gamma.T, rtol=0, atol=1e-15)
    assert float(min_sq) == 2.0
    assert torch.count_nonzero(C - torch.diag(torch.diagonal(C))) == 30   # every pair shares the gradient

CASES = [
    # M, d, d_phi, init, loss, pairs, schedule, lr, epochs, tolerance on the relative W difference and on the
    # histories: 3-200x what was measured in float64 (W: 1.2e-7, 3.5e-10, 3.6e-16, 2.7e-14, 5.1e-16, 2.3e-15;
    # histories: 6.5e-7, 2.2e-9, 2.6e-15, 2.2e-13, 2.1e-15, 1.2e-14), the first two being the cases where
    # 40 / 30 identity-start steps amplify rounding
    (8, 5, None, "identity", "avg", "distinct", "constant", 0.1, 40, 2e-6),
    (20, 30, None, "identity", "avg", "distinct", "constant", 1.0, 30, 2e-8),
    (15, 10, 25, "normal", "avg", "all", "official", 1.0, 20, 1e-13),
    (12, 40, None, "official", "max", "distinct", "constant", 10.0, 25, 1e-12),
    (30, 64, 96, "normal", "avg", "distinct", "inv_sqrt", 0.3, 50, 1e-13),
    (50, 20, None, "identity", "max", "distinct", "constant", 0.2, 15, 1e-13),
]


@pytest.mark.parametrize("M,d,d_phi,init,loss,pairs,schedule,lr,epochs,tol", CASES)
def test_gram_engine_matches_autograd_on_random_memories(M, d, d_phi, init, loss, pairs, schedule, lr, epochs, tol):
    memories = torch.rand(M, d, dtype=torch.float64, generator=torch.Generator().manual_seed(M * d))
    kw = dict(epochs=epochs, lr=lr, loss=loss, pairs=pairs, lr_schedule=schedule, init=init, d_phi=d_phi, seed=3)
    k_gram, h_gram = uhop.fit_kernel(memories, engine="gram", **kw)
    k_auto, h_auto = uhop.fit_kernel(memories, engine="autograd", **kw)
    rel = (k_gram.weight - k_auto.weight).norm() / k_auto.weight.norm()
    assert rel < tol, float(rel)
    assert h_gram.lr == h_auto.lr          # one schedule, computed once for either engine
    for key in ("loss", "min_distance", "w_norm"):
        torch.testing.assert_close(torch.tensor(getattr(h_gram, key), dtype=DT), torch.tensor(getattr(h_auto, key), dtype=DT),
                                   rtol=tol, atol=0, msg=key)


@pytest.mark.skipif(not os.environ.get("UHOP_DATA"), reason="UHOP_DATA is not set to the data folder")
@pytest.mark.parametrize("M,lr,epochs", [(20, 0.1, 60), (60, 0.05, 30)])
def test_gram_engine_matches_autograd_on_mnist(M, lr, epochs):
    from uhop.data import sample_memories

    memories = sample_memories("mnist", M, seed=M).memories.double()
    k_gram, _ = uhop.fit_kernel(memories, epochs=epochs, lr=lr, engine="gram")
    k_auto, _ = uhop.fit_kernel(memories, epochs=epochs, lr=lr, engine="autograd")
    rel = (k_gram.weight - k_auto.weight).norm() / k_auto.weight.norm()
    assert rel < 1e-13, float(rel)   # measured 1.1e-16 and 4.7e-17


def test_gram_engine_float32_as_accurate_as_autograd_float32():
    # Both engines run in the memories' dtype; in float32 the Gram recursion must stay as close to
    # the float64 reference as float32 autograd does (stable step size, see the module docstring).
    memories = torch.rand(25, 40, generator=torch.Generator().manual_seed(0))
    reference, _ = uhop.fit_kernel(memories.double(), epochs=30, lr=0.1, engine="autograd")
    errors = {}
    for engine in ("gram", "autograd"):
        k32, _ = uhop.fit_kernel(memories, epochs=30, lr=0.1, engine=engine)
        assert k32.weight.dtype == torch.float32
        errors[engine] = float((k32.weight.detach().double() - reference.weight.detach()).abs().max())
    assert errors["gram"] < 1e-5, errors
    assert errors["gram"] <= 10 * errors["autograd"], errors


@pytest.mark.parametrize("engine", ["gram", "autograd"])
def test_checkpoints_equal_separate_runs(engine):
    memories = torch.rand(10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, history = uhop.fit_kernel(memories, epochs=8, lr=0.5, engine=engine, checkpoints=[0, 3, 8])
    assert sorted(history.checkpoints) == [0, 3, 8]
    for n, snapshot in history.checkpoints.items():
        alone, _ = uhop.fit_kernel(memories, epochs=n, lr=0.5, engine=engine)
        torch.testing.assert_close(snapshot.weight, alone.weight, rtol=1e-10, atol=1e-12)
        rows = snapshot.weight.norm(dim=1)
        torch.testing.assert_close(rows, torch.ones_like(rows))   # row-normalised like the final kernel


def test_gram_engine_zero_epochs_is_the_initial_kernel():
    memories = torch.rand(6, 9, dtype=torch.float64)
    kernel, history = uhop.fit_kernel(memories, epochs=0, engine="gram", normalize_rows=False)
    torch.testing.assert_close(kernel.weight, torch.eye(9, dtype=torch.float64))
    assert len(history.loss) == 1 and history.lr == []


@pytest.mark.parametrize("engine", ["gram", "autograd"])
def test_record_every_k_keeps_w_and_the_recorded_entries(engine):
    memories = torch.rand(14, 20, dtype=DT, generator=torch.Generator().manual_seed(2))
    kw = dict(epochs=11, lr=0.4, engine=engine, checkpoints=[5])
    k1, h1 = uhop.fit_kernel(memories, **kw)
    k4, h4 = uhop.fit_kernel(memories, record_every=4, **kw)
    assert torch.equal(k4.weight, k1.weight)             # W does not depend on what is recorded
    assert h1.steps == list(range(12)) and len(h1.loss) == 12
    assert h4.steps == [0, 4, 5, 8, 11]                  # multiples of k, the checkpoint, the last step
    for key in ("loss", "min_distance", "w_norm"):
        assert getattr(h4, key) == [getattr(h1, key)[n] for n in h4.steps], key
    assert h4.lr == h1.lr and h4.final_loss == h1.final_loss
    assert torch.equal(h4.checkpoints[5].weight, h1.checkpoints[5].weight)


def test_final_diagnostics_describe_the_row_normalised_kernel():
    # Computed from the features in Gram form (no M x d x D product); checked against the kernel itself.
    memories = torch.rand(16, 24, dtype=DT, generator=torch.Generator().manual_seed(3))
    for kw in (dict(), dict(init="normal", d_phi=30, seed=1, engine="autograd"), dict(init="identity", d_phi=30)):
        kernel, h = uhop.fit_kernel(memories, epochs=7, lr=0.5, **kw)
        feats = torch.nn.functional.normalize(memories @ kernel.weight.detach().T, dim=1)
        i, j = torch.triu_indices(16, 16, 1)
        sq = ((feats[:, None] - feats[None]) ** 2).sum(-1)[i, j]
        # measured: <= 3.3e-16, 2.2e-16, 0
        assert math.isclose(h.final_loss, math.log(torch.exp(-2.0 * sq).mean()), rel_tol=1e-14), kw
        assert math.isclose(h.final_min_distance, float(sq.min().sqrt()), rel_tol=1e-14), kw
        assert math.isclose(h.final_w_norm, float(kernel.weight.detach().norm()), rel_tol=1e-15), kw
