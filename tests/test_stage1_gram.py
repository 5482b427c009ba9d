"""The Gram engine of Stage I (uhop.stage1_gram) gives the autograd engine's W.

Plain gradient descent keeps W_k = W_0 (I + Xi A_k Xi^T); the Gram engine runs the recursion
for A_k on M x M matrices (see the Performance chapter). These tests compare the two engines on
random and real MNIST memories over several M, d, D_Phi, step sizes, schedules, losses and
epoch counts. The step sizes are kept in the range where gradient descent on this loss is
stable: above it (e.g. lr = 1 on 784-d [0, 1] images) the iteration is chaotic and any two
implementations, however exact, drift apart through rounding alone.
"""

from __future__ import annotations

import os

import pytest
import torch

import uhop

CASES = [
    # M, d, d_phi, init, loss, pairs, schedule, lr, epochs, tolerance on the relative W difference: about 10x
    # what was measured in float64 (1.4e-7, 1.6e-9, 3e-16, 5e-14, 4e-16, 2e-15), the first two being the cases
    # where 40 / 30 identity-start steps amplify rounding
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
    for key in ("loss", "min_distance", "w_norm", "lr"):
        torch.testing.assert_close(torch.tensor(getattr(h_gram, key)), torch.tensor(getattr(h_auto, key)),
                                   rtol=1e-6, atol=1e-9, msg=key)


@pytest.mark.skipif(not os.environ.get("UHOP_DATA"), reason="UHOP_DATA is not set to the data folder")
@pytest.mark.parametrize("M,lr,epochs", [(20, 0.1, 60), (60, 0.05, 30)])
def test_gram_engine_matches_autograd_on_mnist(M, lr, epochs):
    from uhop.data import sample_memories

    memories = sample_memories("mnist", M, seed=M).memories.double()
    k_gram, _ = uhop.fit_kernel(memories, epochs=epochs, lr=lr, engine="gram")
    k_auto, _ = uhop.fit_kernel(memories, epochs=epochs, lr=lr, engine="autograd")
    rel = (k_gram.weight - k_auto.weight).norm() / k_auto.weight.norm()
    assert rel < 1e-5, float(rel)


def test_gram_engine_float32_as_accurate_as_autograd_float32():
    # Both engines run in the memories' dtype; in float32 the Gram recursion must stay as close to
    # the float64 reference as float32 autograd does (stable step size, see the module docstring).
    memories = torch.rand(25, 40, generator=torch.Generator().manual_seed(0))
    reference, _ = uhop.fit_kernel(memories.double(), epochs=30, lr=0.1, engine="autograd")
    errors = {}
    for engine in ("gram", "autograd"):
        k32, _ = uhop.fit_kernel(memories, epochs=30, lr=0.1, engine=engine)
        assert k32.weight.dtype == torch.float32
        errors[engine] = float((k32.weight.detach().double() - reference.weight).abs().max())
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
