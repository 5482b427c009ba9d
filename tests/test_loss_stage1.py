"""Separation loss (Definition 2.2, Eq (2.5)) and Stage I (Algorithm 1, lines 1-4)."""

import math

import pytest
import torch

import uhop
from uhop.stage1 import fit_kernel

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _feats(seed=0, M=9, D=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, D, generator=g, dtype=DT)


def _memories(seed=0, M=16, d=12):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(M, d, generator=g, dtype=DT)


# -- loss ---------------------------------------------------------------------------

def test_pairwise_sq_distances_and_min_distance():
    F = _feats(1)
    D = uhop.pairwise_sq_distances(F)
    assert torch.allclose(D, torch.cdist(F, F) ** 2, atol=1e-12)
    assert torch.equal(torch.diagonal(D), torch.zeros(F.shape[0], dtype=DT))
    ref = min((F[i] - F[j]).norm() for i in range(9) for j in range(i + 1, 9))
    assert torch.allclose(uhop.min_pairwise_distance(F), ref, atol=1e-12)


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_avg_loss_matches_brute_force(t):
    F = _feats(2)
    M = F.shape[0]
    pairs = [(i, j) for i in range(M) for j in range(i + 1, M)]
    distinct = math.log(sum(math.exp(-t * (F[i] - F[j]).pow(2).sum().item()) for i, j in pairs) / len(pairs))
    all_ = math.log(sum(math.exp(-t * (F[i] - F[j]).pow(2).sum().item())
                        for i in range(M) for j in range(M)) / M**2)
    assert math.isclose(uhop.separation_loss(F, t=t).item(), distinct, rel_tol=1e-12)
    assert math.isclose(uhop.separation_loss(F, t=t, pairs="all").item(), all_, rel_tol=1e-12)


def test_relation_between_all_and_distinct_pairs():
    # mean_all = (M + 2 S) / M^2 with S = sum_{i<j} exp(-t d_ij^2) (diagonal terms are 1)
    F = _feats(3, M=11)
    M, t = F.shape[0], 2.0
    mean_distinct = torch.exp(uhop.separation_loss(F, t=t))
    S = mean_distinct * M * (M - 1) / 2
    mean_all = torch.exp(uhop.separation_loss(F, t=t, pairs="all"))
    assert torch.allclose(mean_all, (M + 2 * S) / M**2, rtol=1e-12)
    assert uhop.separation_loss(F, t=t, pairs="all") >= math.log(1 / M)


def test_max_loss_is_worst_pair():
    F = _feats(4)
    t = 2.0
    dmin = uhop.min_pairwise_distance(F)
    assert torch.allclose(uhop.separation_loss(F, t=t, reduction="max"), -t * dmin**2, atol=1e-12)
    # the worst pair bounds the average from above: max >= log mean
    assert uhop.separation_loss(F, reduction="max") >= uhop.separation_loss(F)


def test_eq_2_5_upper_bound_and_normalised_features():
    F = _feats(5)
    assert uhop.separation_loss(F) <= 0  # l_Phi <= 0, Eq (2.5)
    # normalize=True: invariant to per-row rescaling, and D.4: ||a - b||^2 = 2 - 2 <a, b>
    scaled = F * torch.linspace(0.1, 10, F.shape[0], dtype=DT)[:, None]
    assert torch.allclose(uhop.separation_loss(F, normalize=True),
                          uhop.separation_loss(scaled, normalize=True), atol=1e-12)
    U = torch.nn.functional.normalize(F, dim=-1)
    assert torch.allclose(uhop.pairwise_sq_distances(U), (2 - 2 * U @ U.T).fill_diagonal_(0), atol=1e-12)
    # raw features: scaling everything up lowers the loss without bound
    assert uhop.separation_loss(10 * F) < uhop.separation_loss(F) - 1


@pytest.mark.parametrize("reduction,pairs,normalize", [
    ("avg", "distinct", False), ("avg", "distinct", True), ("avg", "all", True), ("max", "distinct", True),
])
def test_loss_gradient_matches_finite_differences(reduction, pairs, normalize):
    Xi = _memories(6, M=6, d=4)
    W = uhop.LinearKernel(4, 5, init="normal", seed=0, dtype=DT).weight.detach().clone()

    def L(w):
        return uhop.separation_loss(Xi @ w.T, t=2.0, reduction=reduction, pairs=pairs, normalize=normalize)

    w = W.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(L(w), w)
    h = 1e-6
    fd = torch.zeros_like(W)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            e = torch.zeros_like(W)
            e[i, j] = h
            fd[i, j] = (L(W + e) - L(W - e)) / (2 * h)
    assert torch.allclose(g, fd, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("reduction,pairs", [("avg", "distinct"), ("avg", "all"), ("max", "distinct")])
def test_closed_form_loss_gradient_in_the_distances(reduction, pairs):
    # loss_grad_from_sq_distances (used by Stage I in Gram form) against autograd of the loss
    # written out on the entries it reads; float64, measured <= 4.2e-16 relative.
    from uhop.loss import loss_grad_from_sq_distances

    F = _feats(8, M=10)
    D = torch.cdist(F, F).pow(2).fill_diagonal_(0).requires_grad_(True)
    i, j = torch.triu_indices(10, 10, 1)
    t = 0.3
    if reduction == "max":
        reference = -t * D[i, j].min()
    else:
        values = D[i, j] if pairs == "distinct" else D.reshape(-1)
        reference = torch.log(torch.exp(-t * values).mean())
    (expected,) = torch.autograd.grad(reference, D)
    loss, G, min_sq = loss_grad_from_sq_distances(D.detach(), t, reduction, pairs)
    assert float((G - expected).abs().max() / expected.abs().max()) < 1e-14
    assert math.isclose(float(loss), float(reference.detach()), rel_tol=1e-14)
    assert float(min_sq) == float(D.detach()[i, j].min())


# -- Stage I settings -----------------------------------------------------------------

def test_settings_object_presets_and_keywords_are_one_configuration():
    import dataclasses

    from uhop.stage1 import FIT_DEFAULTS, PRESETS, Stage1Settings

    Xi = _memories(21, M=14, d=9)
    assert all(isinstance(p, Stage1Settings) for p in PRESETS.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["official"].lr = 1.0
    # a preset, its fields as keywords (dict(preset) is what the retrieval protocols start from),
    # and the object itself give the same W
    k_preset, h_preset = fit_kernel(Xi, preset="official_avg", epochs=5, seed=0)
    k_kw, h_kw = fit_kernel(Xi, epochs=5, seed=0, **dict(PRESETS["official_avg"]))
    k_obj, _ = fit_kernel(Xi, settings=PRESETS["official_avg"], epochs=5, seed=0)
    assert torch.equal(k_preset.weight, k_kw.weight) and torch.equal(k_preset.weight, k_obj.weight)
    assert h_kw.lr == h_preset.lr == PRESETS["official_avg"].learning_rates(5)
    # keywords replace the fields of settings=; a preset refuses contradictions
    custom = Stage1Settings(lr=0.3, loss="max")
    k1, h1 = fit_kernel(Xi, settings=custom, epochs=4, t=1.5)
    k2, _ = fit_kernel(Xi, lr=0.3, loss="max", t=1.5, epochs=4)
    assert torch.equal(k1.weight, k2.weight) and h1.settings["t"] == 1.5 and h1.settings["loss"] == "max"
    assert custom.replace(t=1.5) == Stage1Settings(lr=0.3, loss="max", t=1.5)
    assert FIT_DEFAULTS == dict(Stage1Settings(), epochs=100)
    with pytest.raises(ValueError, match="settings= or preset="):
        fit_kernel(Xi, settings=custom, preset="official", epochs=1)
    with pytest.raises(TypeError, match="unknown Stage I setting.*'?momentum"):
        fit_kernel(Xi, momentum=0.9, epochs=1)
    with pytest.raises(ValueError, match="pairs must be 'distinct' for loss='max'"):
        Stage1Settings(loss="max", pairs="all")
    with pytest.raises(TypeError, match="normalize_features must be a bool"):
        Stage1Settings(normalize_features=1)


def test_learning_rate_schedules_written_out():
    from uhop.stage1 import Stage1Settings

    assert Stage1Settings(lr=3.0).learning_rates(3) == [3.0, 3.0, 3.0]
    assert Stage1Settings(lr=3.0, lr_schedule="inv_sqrt").learning_rates(3) == [3.0, 3.0 / math.sqrt(2), 3.0 / math.sqrt(3)]
    official = Stage1Settings(lr=3.0, lr_schedule="official").learning_rates(5)
    assert all(math.isclose(a, 3.0 / math.sqrt(math.factorial(i)), rel_tol=1e-15) for i, a in enumerate(official))
    assert Stage1Settings().learning_rates(0) == []


# -- Stage I ------------------------------------------------------------------------

def test_sgd_decreases_the_loss_monotonically_with_small_steps():
    Xi = _memories(7)
    k, h = fit_kernel(Xi, epochs=40, lr=0.01, init="normal", seed=0, normalize_rows=False)
    loss = torch.tensor(h.loss, dtype=DT)
    assert len(h.loss) == len(h.min_distance) == len(h.w_norm) == 41
    assert h.lr == [0.01] * 40
    assert torch.all(loss[1:] <= loss[:-1] + 1e-12)
    assert loss[-1] < loss[0] - 1.0
    assert math.isclose(h.final_loss, h.loss[-1], rel_tol=1e-12)  # no row normalisation
    # the returned kernel has the loss recorded last
    feats = Xi @ k.weight.detach().T
    assert math.isclose(uhop.separation_loss(feats, normalize=True).item(), h.final_loss, rel_tol=1e-12)


def test_paper_default_lr_still_improves_separation():
    Xi = _memories(8)
    _, h = fit_kernel(Xi, epochs=50, seed=0)  # lr = 1 (Table 4), identity init
    assert min(h.loss) < h.loss[0]
    assert h.min_distance[-1] > h.min_distance[0]


def test_adam_decreases_the_loss():
    Xi = _memories(9)
    _, h = fit_kernel(Xi, epochs=30, lr=0.01, optimizer="adam", init="normal", seed=1)
    assert h.loss[-1] < h.loss[0]


def test_max_loss_increases_min_distance():
    Xi = _memories(10)
    _, h = fit_kernel(Xi, epochs=30, lr=0.5, loss="max", init="normal", seed=2, normalize_rows=False)
    assert h.min_distance[-1] > h.min_distance[0]
    # loss = -t min d^2 of the normalised features
    assert all(math.isclose(l, -2.0 * m**2, rel_tol=1e-9, abs_tol=1e-12) for l, m in zip(h.loss, h.min_distance))


def test_row_normalisation_gives_unit_rows():
    Xi = _memories(11)
    k, h = fit_kernel(Xi, epochs=5, lr=0.5, init="normal", d_phi=20, seed=3)
    assert k.weight.shape == (20, 12)
    assert torch.allclose(k.weight.detach().norm(dim=1), torch.ones(20, dtype=DT), atol=1e-12)
    assert math.isclose(h.final_w_norm, math.sqrt(20), rel_tol=1e-12)


def test_raw_feature_loss_unbounded_motivates_normalisation():
    Xi = _memories(12)
    _, h = fit_kernel(Xi, epochs=20, lr=1.0, normalize_features=False, normalize_rows=False)
    assert h.w_norm[-1] > h.w_norm[0]  # descent on raw features just inflates W


def test_identity_init_zero_epochs_is_mhm_exactly():
    Xi = _memories(13)
    g = torch.Generator().manual_seed(0)
    X = torch.rand(5, 12, generator=g, dtype=DT)
    for sep in ("softmax", "sparsemax"):
        model = uhop.UHop(separation=sep, beta=3.0, epochs=0, init="identity").fit(Xi)
        assert torch.equal(model.kernel_.weight, torch.eye(12, dtype=DT))
        assert torch.equal(model.keys_, Xi)
        assert torch.equal(model.retrieve(X), uhop.retrieve(X, Xi, beta=3.0, separation=sep))
        assert torch.equal(model.energy(X), uhop.energy(X, Xi, beta=3.0, separation=sep))


def test_seeded_fits_are_reproducible_and_leave_global_rng_alone():
    Xi = _memories(14)
    state = torch.get_rng_state()
    k1, h1 = fit_kernel(Xi, epochs=5, init="normal", seed=5, lr=0.3)
    k2, h2 = fit_kernel(Xi, epochs=5, init="normal", seed=5, lr=0.3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(k1.weight, k2.weight) and h1.loss == h2.loss
    k3, _ = fit_kernel(Xi, epochs=5, init="normal", seed=6, lr=0.3)
    assert not torch.equal(k1.weight, k3.weight)


def test_manual_sgd_equals_explicit_gradient_step():
    Xi = _memories(15, M=8, d=6)
    k0 = uhop.LinearKernel(6, init="normal", seed=0, dtype=DT)
    k1, _ = fit_kernel(Xi, epochs=1, lr=0.7, kernel=k0, normalize_rows=False)
    w = k0.weight.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(uhop.separation_loss(Xi @ w.T, normalize=True), w)
    assert torch.allclose(k1.weight.detach(), w.detach() - 0.7 * g, atol=1e-14)
    assert not torch.equal(k0.weight.detach(), k1.weight.detach())  # input kernel not modified


def test_official_max_preset():
    Xi = _memories(16, M=20, d=10)
    k, h = fit_kernel(Xi, preset="official", epochs=6, seed=0)
    s = h.settings
    assert (s["init"], s["loss"], s["lr"], s["lr_schedule"], s["normalize_rows"], s["train_fraction"]) == \
        ("official", "max", 10.0, "constant", False, 0.5)
    assert h.lr == [10.0] * 6
    assert h.n_train == 10
    assert k.weight.shape == (10, 10)
    assert not torch.allclose(k.weight.detach().norm(dim=1), torch.ones(10, dtype=DT))  # no row norm
    # Stage I sees only Xi[:int(0.5 M)]: changing the second half changes nothing
    Xi2 = Xi.clone()
    Xi2[10:] = torch.rand(10, 10, dtype=DT, generator=torch.Generator().manual_seed(99))
    k2, _ = fit_kernel(Xi2, preset="official", epochs=6, seed=0)
    assert torch.equal(k.weight, k2.weight)
    Xi3 = Xi.clone()
    Xi3[:10] = Xi3[:10].flip(1)
    k3, _ = fit_kernel(Xi3, preset="official", epochs=6, seed=0)
    assert not torch.equal(k.weight, k3.weight)
    ka, _ = fit_kernel(Xi, preset="official_max", epochs=6, seed=0)
    assert torch.equal(ka.weight, k.weight)


def test_official_avg_preset_compounding_lr():
    Xi = _memories(17, M=20, d=10)
    _, h = fit_kernel(Xi, preset="official_avg", epochs=12, seed=0)
    expected = [1.0 / math.sqrt(math.factorial(i)) for i in range(12)]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(h.lr, expected))
    assert h.settings["loss"] == "avg" and h.settings["pairs"] == "distinct" and h.n_train == 10
    # the official decay lr <- lr / sqrt(i + 1) after each step, replayed literally
    lr, replay = 1.0, []
    for i in range(12):
        replay.append(lr)
        lr = lr / math.sqrt(i + 1)
    assert h.lr == replay


def test_preset_conflicts_and_agreements():
    Xi = _memories(18)
    with pytest.raises(ValueError, match="lr"):
        fit_kernel(Xi, preset="official", lr=1.0, epochs=1)
    with pytest.raises(ValueError, match="normalize_rows"):
        fit_kernel(Xi, preset="official_avg", normalize_rows=True, epochs=1)
    _, h = fit_kernel(Xi, preset="official", lr=10, epochs=1, seed=0)  # same value: fine
    assert h.settings["lr"] == 10
    model = uhop.UHop(preset="official", epochs=2, seed=0).fit(Xi)
    assert model.history_.settings["loss"] == "max"
    with pytest.raises(ValueError, match="lr"):
        uhop.UHop(preset="official", lr=0.5).fit(Xi)


def test_inv_sqrt_schedule_and_train_fraction():
    Xi = _memories(19)
    _, h = fit_kernel(Xi, epochs=4, lr=2.0, lr_schedule="inv_sqrt", train_fraction=0.25)
    assert h.lr == [2.0 / math.sqrt(i + 1) for i in range(4)]
    assert h.n_train == 4


def test_engine_argument():
    Xi = _memories(20)
    _, h_auto = fit_kernel(Xi, epochs=1)
    assert h_auto.settings["engine"] == "gram"          # plain SGD -> the Gram engine
    _, h_adam = fit_kernel(Xi, epochs=1, optimizer="adam")
    assert h_adam.settings["engine"] == "autograd"      # Adam is not linear in the gradient
    _, h = fit_kernel(Xi, epochs=1, engine="autograd")
    assert h.settings["engine"] == "autograd"
