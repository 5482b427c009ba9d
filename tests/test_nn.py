"""uhop.nn layers: pure retrieval equals uhop.retrieve, separations really differ, gradients, errors,
Definition 3.1 and Theorem 3.1's construction."""

from __future__ import annotations

import math

import pytest
import torch
from entmax import entmax_bisect
from torch.func import functional_call

import uhop
from uhop.nn import (FeatureMap, Hopfield, HopfieldLayer, HopfieldPooling, SeparationModule, UHopfield,
                     attention_matrix, hopfield_layers, dl_separation_loss, feature_separation_loss, realize_attention)

torch.set_num_threads(1)
DT = torch.float64
SEPARATIONS = ["softmax", "sparsemax", "entmax15", 1.3, "learnable"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


XI = torch.randn(7, 5, dtype=DT, generator=_gen(0))
Q = torch.randn(3, 5, dtype=DT, generator=_gen(1))


# -- pure retrieval ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", ["softmax", "sparsemax", "entmax15", 1.3, 1.0, 2.0])
@pytest.mark.parametrize("extra_steps", [0, 3])
def test_pure_retrieval_equals_uhop_retrieve(sep, extra_steps):
    layer = Hopfield.retrieval(5, beta=0.7, separation=sep, update_steps_max=extra_steps,
                               update_steps_eps=1e-300).double()
    out = layer((XI, Q, XI))
    ref = uhop.retrieve(Q, XI, beta=0.7, separation=sep, steps=extra_steps + 1)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert layer.last_update_steps == extra_steps
    assert sum(p.numel() for p in layer.parameters()) == 0


@pytest.mark.parametrize("sep", ["softmax", "sparsemax"])
def test_pure_retrieval_with_kernel_equals_uhop_retrieve(sep):
    torch.manual_seed(0)
    layer = Hopfield.retrieval(5, beta=0.3, separation=sep, kernel="linear", d_phi=9, kernel_init="normal",
                               update_steps_max=2, update_steps_eps=1e-300).double()
    kernel = layer.feature_map.to_linear_kernel()
    torch.testing.assert_close(layer((XI, Q, XI)), uhop.retrieve(Q, XI, beta=0.3, separation=sep, kernel=kernel,
                                                                 steps=3), atol=1e-6, rtol=0)
    # The association is Sep(beta K(Xi, x)) (rows on the simplex, one head).
    a = layer.get_association_matrix((XI, Q, XI))
    torch.testing.assert_close(a[0], uhop.association(uhop.retrieve(Q, XI, beta=0.3, separation=sep, kernel=kernel,
                                                                    steps=2), XI, beta=0.3, separation=sep,
                                                      kernel=kernel), atol=1e-6, rtol=0)


def test_batched_unbatched_and_sequence_first_agree():
    torch.manual_seed(0)
    layer = Hopfield(5, num_heads=1, separation="entmax15").double().eval()
    x = torch.randn(2, 6, 5, dtype=DT)
    out = layer(x)
    torch.testing.assert_close(layer(x[1]), out[1])
    layer.batch_first = False
    torch.testing.assert_close(layer(x.transpose(0, 1)).transpose(0, 1), out)


def test_until_convergence_stops_early():
    layer = Hopfield.retrieval(5, beta=8.0, separation="sparsemax", update_steps_max=None)
    layer((XI.float(), Q.float(), XI.float()))
    assert 1 <= layer.last_update_steps < 50


# -- separation really selects the map ----------------------------------------------------------------------------


def test_separation_selects_the_map():
    torch.manual_seed(0)
    x = torch.randn(4, 12, 8) * 3
    weights = {}
    for sep in ["softmax", "sparsemax", "entmax15"]:
        torch.manual_seed(1)
        # init="pytorch": hflayers' N(0, 0.02^2) projections would make every map nearly uniform here
        layer = Hopfield(8, separation=sep, scaling=2.0, init="pytorch")
        a = layer.get_association_matrix(x)
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
        weights[sep] = a
    assert bool((weights["softmax"] > 0).all())
    assert bool((weights["sparsemax"] == 0).any()) and bool((weights["entmax15"] == 0).any())
    assert not torch.allclose(weights["sparsemax"], weights["softmax"])
    # sparsemax is the sparser one on the same scores
    assert (weights["sparsemax"] > 0).sum() <= (weights["entmax15"] > 0).sum()


def test_learnable_alpha_parameterisation_and_gradient():
    sep = SeparationModule("learnable", num_heads=3, alpha_init=1.2)
    torch.testing.assert_close(sep.alpha, torch.full((3,), 1.2))
    assert SeparationModule("learnable", alpha_init=2.0).alpha.item() == pytest.approx(2.0, abs=1e-5)
    z = torch.randn(2, 3, 4, 6, dtype=DT)
    p = sep.double()(z)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, 4, dtype=DT))
    p.pow(2).sum().backward()
    assert sep.alpha_logit.grad is not None and bool(sep.alpha_logit.grad.abs().sum() > 0)
    with torch.no_grad():
        sep.alpha_logit.fill_(50.0)
    assert bool((sep.alpha < 2.0 + 1e-12).all()) and bool((sep.alpha > 1.0).all())
    layer = Hopfield(6, num_heads=3, separation="learnable", alpha_init=1.7)
    torch.testing.assert_close(layer.separation.alpha, torch.full((3,), 1.7))


# -- gradients ----------------------------------------------------------------------------------------------------


# Parameters checked besides the inputs (the ones specific to these layers; nn.Linear/LayerNorm are torch's).
_CHECKED = ("feature_map.weight", "alpha_logit", "q_proj.weight", "pooling_weights", "lookup_weights")


def _gradcheck_layer(layer, inputs, fast=True):
    layer = layer.double().eval()
    params = {n: p.detach().clone().requires_grad_(n.endswith(_CHECKED)) for n, p in layer.named_parameters()}
    names = list(params)

    def f(*args):
        xs, ps = args[:len(inputs)], args[len(inputs):]
        inp = xs[0] if len(xs) == 1 else tuple(xs)
        return functional_call(layer, dict(zip(names, ps)), (inp,))

    args = tuple(x.detach().clone().requires_grad_(True) for x in inputs) + tuple(params.values())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast)


@pytest.mark.parametrize("sep", SEPARATIONS, ids=str)
@pytest.mark.parametrize("kernel", [None, "linear"])
def test_gradcheck_hopfield(sep, kernel):
    torch.manual_seed(0)
    layer = Hopfield(4, num_heads=2, separation=sep, kernel=kernel, kernel_init="normal" if kernel else "identity",
                     update_steps_max=1, update_steps_eps=1e-300)
    stored = torch.randn(2, 5, 4, dtype=DT)
    state = torch.randn(2, 3, 4, dtype=DT)
    _gradcheck_layer(layer, (stored, state, stored.clone()), fast=sep != "sparsemax")


@pytest.mark.parametrize("sep", SEPARATIONS, ids=str)
def test_gradcheck_pooling_lookup_uhop(sep):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, dtype=DT)
    _gradcheck_layer(HopfieldPooling(4, num_heads=2, quantity=2, separation=sep), (x,))
    _gradcheck_layer(HopfieldLayer(4, quantity=6, separation=sep, kernel="linear", kernel_init="normal"), (x,))
    _gradcheck_layer(UHopfield(4, separation=sep, kernel_normalize_rows=True, kernel_init="normal"), (x,))


# -- wrappers and the U-Hop layer ---------------------------------------------------------------------------------


def test_pooling_and_lookup_shapes():
    x = torch.randn(3, 7, 16)
    pool = HopfieldPooling(16, num_heads=4, quantity=2, output_size=10)
    assert pool(x).shape == (3, 20)
    assert pool.get_association_matrix(x).shape == (3, 4, 2, 7)
    assert 0 < pool.pooling_weights.std() < 0.05
    lookup = HopfieldLayer(16, quantity=11, lookup_weights_as_separated=True)
    assert lookup(x).shape == (3, 7, 16)
    assert lookup.get_association_matrix(x).shape == (3, 1, 7, 11)


@pytest.mark.parametrize("make", [
    lambda bf: HopfieldPooling(16, num_heads=4, quantity=2, flatten=False, batch_first=bf),
    lambda bf: HopfieldLayer(16, quantity=5, batch_first=bf),
    lambda bf: HopfieldLayer(16, quantity=5, lookup_weights_as_separated=True, batch_first=bf),
])
def test_learned_pattern_wrappers_agree_across_input_layouts(make):
    # unbatched (M, d), batch-first (B, M, d) and sequence-first (M, B, d) inputs give the same retrieval
    x = torch.randn(3, 7, 16, dtype=DT)
    torch.manual_seed(0)
    first = make(True).double()
    torch.manual_seed(0)
    seq = make(False).double()
    out = first(x)
    seq_out = seq(x.transpose(0, 1))
    if isinstance(seq, HopfieldLayer):  # HopfieldPooling returns (B, quantity, .) in either layout
        seq_out = seq_out.transpose(0, 1)
    torch.testing.assert_close(seq_out, out)
    torch.testing.assert_close(first(x[1]), out[1])
    with pytest.raises(ValueError, match="input_size"):
        first(x[None])
    with pytest.raises(TypeError, match="torch.Tensor"):
        first(x.tolist())


def test_identity_kernel_starts_as_plain_layer():
    x = torch.randn(2, 6, 8)
    torch.manual_seed(3)
    plain = Hopfield(8, num_heads=2, separation="sparsemax")
    torch.manual_seed(3)
    uhop_layer = UHopfield(8, num_heads=2, separation="sparsemax")
    torch.testing.assert_close(uhop_layer(x), plain(x))
    assert uhop_layer.is_uhop and not plain.is_uhop


def test_kernel_row_normalisation():
    fm = FeatureMap(4, 6, init="normal", normalize_rows=True)
    torch.testing.assert_close(fm.effective_weight().norm(dim=1), torch.ones(6))


def test_padding_mask_gives_zero_weight():
    layer = Hopfield(4, separation="softmax")
    x = torch.randn(2, 5, 4)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, -2:] = True
    a = layer.get_association_matrix(x, stored_pattern_padding_mask=mask)
    assert float(a[..., -2:].detach().abs().max()) == 0.0
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 1, 5))


# -- Definition 3.1 -----------------------------------------------------------------------------------------------


def test_dl_loss_matches_definition_and_its_minimum():
    f = torch.randn(6, 4, dtype=DT, generator=_gen(2))
    u = torch.nn.functional.normalize(f, dim=-1)
    K = u @ u.T
    i, j = torch.triu_indices(6, 6, 1)
    manual = torch.log(torch.exp(2 * 2.0 * (K[i, j] ** 2 - 1)).mean())
    torch.testing.assert_close(dl_separation_loss(f, t=2.0), manual)
    manual_all = torch.log(torch.exp(2 * 2.0 * (K ** 2 - 1)).mean())
    torch.testing.assert_close(dl_separation_loss(f, t=2.0, pairs="all"), manual_all)
    # Orthonormal features reach the minimum -2t (the hypothesis of Theorem 3.1).
    ortho = torch.linalg.qr(torch.randn(8, 5, dtype=DT, generator=_gen(3)))[0].T
    torch.testing.assert_close(dl_separation_loss(ortho, t=1.5), torch.tensor(-3.0, dtype=DT))
    assert dl_separation_loss(f, t=1.5) > -3.0
    # Raw (unnormalised) features: the literal loss (u = v included) is minimised by collapsing Phi to 0.
    collapsed = dl_separation_loss(1e-4 * f, t=2.0, normalize=False, pairs="all")
    assert collapsed < dl_separation_loss(ortho, t=2.0, normalize=False, pairs="all")
    torch.testing.assert_close(collapsed, torch.tensor(-4.0, dtype=DT))


def test_def22_loss_matches_package_loss_and_batches():
    f = torch.randn(6, 4, dtype=DT, generator=_gen(4))
    torch.testing.assert_close(feature_separation_loss(f, 2.0, loss="def2.2"),
                               uhop.separation_loss(f, t=2.0, normalize=True))
    batch = torch.randn(3, 6, 4, dtype=DT)
    per = dl_separation_loss(batch, reduction="none")
    assert per.shape == (3,)
    torch.testing.assert_close(per[1], dl_separation_loss(batch[1]))


def test_def22_on_a_batch_of_sets_is_definition_2_2_per_set():
    # Independent float64 reference written here: log of the mean over i < j of exp(-t ||u_i - u_j||^2) on
    # unit-normalised rows, set by set; the batched loss must equal it for every set and for each pair rule.
    batch = torch.randn(4, 7, 3, dtype=DT, generator=_gen(11))
    u = torch.nn.functional.normalize(batch, dim=-1)
    sq = ((u[:, :, None, :] - u[:, None, :, :]) ** 2).sum(-1)
    i, j = torch.triu_indices(7, 7, 1)
    distinct = torch.log(torch.exp(-1.5 * sq[:, i, j]).mean(-1))
    everything = torch.log(torch.exp(-1.5 * sq).mean((-1, -2)))
    torch.testing.assert_close(feature_separation_loss(batch, 1.5, loss="def2.2", reduction="none"), distinct,
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(feature_separation_loss(batch, 1.5, loss="def2.2", pairs="all", reduction="none"),
                               everything, rtol=0, atol=1e-12)
    torch.testing.assert_close(feature_separation_loss(batch, 1.5, loss="def2.2"), distinct.mean(), rtol=0,
                               atol=1e-12)


def test_feature_map_is_the_package_linear_kernel():
    # One feature map: a layer's Phi is a uhop.LinearKernel, so it serves uhop.retrieve directly, with the W the
    # layer applies (row-normalised here); an affine Phi has no W^T W form and is refused by name.
    torch.manual_seed(5)
    fm = FeatureMap(4, 6, init="normal", normalize_rows=True).double()
    assert isinstance(fm, uhop.LinearKernel)
    W = fm.weight.detach() / fm.weight.detach().norm(dim=1, keepdim=True)
    memories = torch.randn(5, 4, dtype=DT, generator=_gen(12))
    queries = torch.randn(3, 4, dtype=DT, generator=_gen(13))
    torch.testing.assert_close(fm.gram(), W.T @ W, rtol=0, atol=1e-12)
    torch.testing.assert_close(fm.similarity(memories, queries), (queries @ W.T) @ (memories @ W.T).T, rtol=0,
                               atol=1e-12)
    plain = fm.to_linear_kernel()
    assert type(plain) is uhop.LinearKernel
    torch.testing.assert_close(uhop.retrieve(memories, queries, beta=2.0, kernel=fm).detach(),
                               uhop.retrieve(memories, queries, beta=2.0, kernel=plain), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="to_linear_kernel"):
        uhop.fit_kernel(memories, epochs=1, kernel=fm)
    affine = FeatureMap(4, bias=True)
    for call in (affine.gram, affine.to_linear_kernel, lambda: affine.precompute(torch.randn(3, 4))):
        with pytest.raises(ValueError, match="affine"):
            call()


def test_layer_separation_loss_uses_mapped_stored_patterns():
    torch.manual_seed(0)
    layer = UHopfield(4, kernel_init="normal", d_phi=6)
    x = torch.randn(2, 5, 4)
    feats = layer.feature_map(layer.norm_stored(x))
    torch.testing.assert_close(layer.separation_loss(x), dl_separation_loss(feats))
    with pytest.raises(ValueError, match="U-Hop layer"):
        Hopfield(4).separation_loss(x)


# -- Theorem 3.1 --------------------------------------------------------------------------------------------------


def _col_attention(W_Q, W_K, X, beta):
    """Independent reference for Theorem 3.1's attention: entry (i, j) = exp(beta <W_K x_i, W_Q x_j>) normalised
    over i, written out element by element (no softmax call, no package code)."""
    M = X.shape[1]
    out = torch.empty(M, M, dtype=X.dtype)
    for j in range(M):
        q = W_Q @ X[:, j]
        e = torch.stack([torch.exp(beta * torch.dot(W_K @ X[:, i], q)) for i in range(M)])
        out[:, j] = e / e.sum()
    return out


def _column_stochastic(M, seed):
    P = torch.rand(M, M, dtype=DT, generator=_gen(seed)) + 0.05
    return P / P.sum(dim=0, keepdim=True)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_realize_attention_orthogonal_features(beta):
    M, D = 5, 8
    X = torch.linalg.qr(torch.randn(D, M, dtype=DT, generator=_gen(5)))[0] * torch.arange(1, M + 1, dtype=DT)
    P = _column_stochastic(M, 6)
    W_Q, W_K = realize_attention(P, X, beta, method="orthogonal")
    torch.testing.assert_close(_col_attention(W_Q, W_K, X, beta), P)
    torch.testing.assert_close(attention_matrix(W_Q, W_K, X, beta), _col_attention(W_Q, W_K, X, beta))
    W_Q2, W_K2 = realize_attention(P, X, beta, D0=torch.rand(M, dtype=DT) + 0.1, head_dim=M)
    assert W_Q2.shape == (M, D)
    torch.testing.assert_close(_col_attention(W_Q2, W_K2, X, beta), P)


def test_realize_attention_with_one_dimension_less():
    M, D = 5, 7
    X = torch.randn(D, M, dtype=DT, generator=_gen(11))
    P = _column_stochastic(M, 12)
    W_Q, W_K = realize_attention(P, X, 1.5, head_dim=M - 1)
    assert W_Q.shape == (M - 1, D)
    torch.testing.assert_close(_col_attention(W_Q, W_K, X, 1.5), P)
    with pytest.raises(ValueError, match="head_dim must be >= M - 1"):
        realize_attention(P, X, 1.5, head_dim=M - 2)


def test_realize_attention_general_full_rank_features():
    X = torch.randn(6, 4, dtype=DT, generator=_gen(7))
    P = _column_stochastic(4, 8)
    W_Q, W_K = realize_attention(P, X, 2.0)          # auto -> pseudo-inverse
    torch.testing.assert_close(_col_attention(W_Q, W_K, X, 2.0), P)
    with pytest.raises(ValueError, match="orthogonal"):
        realize_attention(P, X, 2.0, method="orthogonal")


@pytest.mark.parametrize("case, match", [
    ("M>D", "M <= D"), ("not-stochastic", "column-stochastic"), ("not-positive", "strictly positive"),
    ("rank", "full column rank"), ("head_dim", "head_dim must be >= M - 1"), ("beta", "beta must be > 0"),
])
def test_realize_attention_errors(case, match):
    X = torch.randn(6, 4, dtype=DT, generator=_gen(9))
    P = _column_stochastic(4, 10)
    kwargs = {}
    if case == "M>D":
        X, P = torch.randn(3, 4, dtype=DT), P
    elif case == "not-stochastic":
        P = P * 2
    elif case == "not-positive":
        P = torch.eye(4, dtype=DT)
    elif case == "rank":
        X = torch.cat([X[:, :3], X[:, :1] + X[:, 1:2]], dim=1)
    elif case == "head_dim":
        kwargs["head_dim"] = 2
    beta = -1.0 if case == "beta" else 1.0
    with pytest.raises(ValueError, match=match):
        realize_attention(P, X, beta, **kwargs)


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, exc, match", [
    (lambda: Hopfield(8, separation="softmx"), ValueError, "unknown separation 'softmx'"),
    (lambda: Hopfield(8, separation=2.5), ValueError, r"separation must lie in \[1, 2\]"),
    (lambda: Hopfield(8, separation=0.5), ValueError, r"separation must lie in \[1, 2\]"),
    (lambda: Hopfield(8, separation="learnable", alpha_init=1.0), ValueError, r"alpha_init must lie in \(1, 2\]"),
    (lambda: Hopfield(8, separation="learnable", alpha_init=2.5), ValueError, "alpha_init"),
    (lambda: Hopfield(8, num_heads=3), ValueError, r"input_size \(8\) must be divisible by num_heads \(3\)"),
    (lambda: Hopfield(8, hidden_size=0), ValueError, "hidden_size must be >= 1"),
    (lambda: Hopfield(8, hidden_size=4, state_pattern_as_static=True), ValueError,
     r"hidden_size \(per head\) must be 8 with static state patterns"),
    (lambda: Hopfield(8, pattern_size=3, pattern_projection_as_static=True), ValueError,
     r"pattern_size \(per head\) must be None or 8"),
    (lambda: Hopfield(8, disable_out_projection=True, output_size=5), ValueError, "output_size must be None or"),
    (lambda: Hopfield(8, init="xavier"), ValueError, "init.*'hflayers', 'pytorch'"),
    (lambda: Hopfield(8, kernel="rbf"), ValueError, "unknown kernel 'rbf'"),
    (lambda: Hopfield(8, d_phi=4), ValueError, "d_phi is only used with kernel='linear'"),
    (lambda: Hopfield(8, kernel="linear", d_phi=4), ValueError, "d_phi must be >= d"),
    (lambda: Hopfield(8, kernel="linear", stored_pattern_size=6), ValueError, "stored_pattern_size"),
    (lambda: Hopfield(8, scaling=-1.0), ValueError, "scaling must be > 0"),
    (lambda: Hopfield(8, num_heads=2, scaling=[1.0]), ValueError, "scaling must be one value or num_heads = 2 values"),
    (lambda: Hopfield(8, dropout=1.0), ValueError, "dropout"),
    (lambda: Hopfield(8, update_steps_max=-1), ValueError, "update_steps_max"),
    (lambda: Hopfield(), ValueError, "input_size"),
    (lambda: UHopfield(8, kernel=None), ValueError, "kernel must be 'linear'"),
])
def test_bad_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_forward_inputs_name_expected_and_given():
    layer = Hopfield(8, stored_pattern_size=6, pattern_projection_size=5)
    s, q, p = torch.randn(2, 4, 6), torch.randn(2, 3, 8), torch.randn(2, 4, 5)
    layer((s, q, p))
    with pytest.raises(ValueError, match=r"stored_pattern must have last dimension stored_pattern_size = 6, got 7"):
        layer((torch.randn(2, 4, 7), q, p))
    with pytest.raises(ValueError, match=r"state_pattern must have last dimension input_size = 8, got 6"):
        layer((s, torch.randn(2, 3, 6), p))
    with pytest.raises(ValueError, match=r"pattern_projection must have last dimension pattern_projection_size = 5"):
        layer((s, q, torch.randn(2, 4, 8)))
    with pytest.raises(ValueError, match="batch sizes differ"):
        layer((s, q[:1], p))
    with pytest.raises(ValueError, match="same number of patterns"):
        layer((s, q, p[:, :2]))
    with pytest.raises(ValueError, match="3-D tensor"):
        layer((s[None], q, p))
    with pytest.raises(TypeError, match="tuple"):
        layer([s, q])
    with pytest.raises(TypeError, match="floating-point"):
        Hopfield(4)(torch.ones(2, 3, 4, dtype=torch.long))


def test_scaling_default_is_inverse_sqrt_head_dim():
    layer = Hopfield(16, num_heads=4)                   # hidden_size = 16 // 4 = 4 per head
    assert layer.scaling == 0.5 and layer.hidden_size == 4
    assert math.isclose(Hopfield(16, num_heads=2, scaling=[0.1, 0.2]).scaling[1], 0.2)
    assert Hopfield(16, num_heads=2, hidden_size=9).scaling == 1 / 3


@pytest.mark.parametrize("solver", ["newton", "bisect"])
@pytest.mark.parametrize("alpha_init", [1.02, 1.1, 1.5, 1.9])
def test_learnable_alpha_float32_matches_float64_bisection_reference(alpha_init, solver):
    # Both float32 solvers (Newton by default, 30-step bisection) must give the weights and gradients (scores
    # and alpha) of an independent float64 reference -- entmax_bisect with 100 steps and its closed-form
    # backward -- to float32 rounding: the solver is a speed choice, not an approximation.
    g = torch.Generator().manual_seed(3)
    z64 = (4 * torch.randn(8, 3, 5, 40, generator=g, dtype=torch.float64)).requires_grad_(True)
    sep = SeparationModule("learnable", num_heads=3, alpha_init=alpha_init, solver=solver)
    logit64 = sep.alpha_logit.detach().double().requires_grad_(True)
    alpha64 = (1.0 + torch.sigmoid(logit64)).view(3, 1, 1).expand(8, 3, 5, 1)
    ref = entmax_bisect(z64, alpha64, dim=-1, n_iter=100)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (ref * w).sum().backward()
    z32 = z64.detach().float().requires_grad_(True)
    out = sep(z32)
    (out * w.float()).sum().backward()
    torch.testing.assert_close(out.double(), ref.detach(), atol=2e-6, rtol=0)
    torch.testing.assert_close(z32.grad.double(), z64.grad, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(sep.alpha_logit.grad.double(), logit64.grad, atol=1e-4, rtol=1e-3)


def test_learnable_alpha_bisect_steps_override_is_honoured():
    z = 4 * torch.randn(8, 3, 5, 40, generator=torch.Generator().manual_seed(3))
    sep = SeparationModule("learnable", num_heads=3, alpha_init=1.5, solver="bisect")
    good = sep(z)
    sep.bisect_iters = 3  # visibly too few
    assert (sep(z) - good).abs().max() > 1e-3
    sep.solver = "newton"
    torch.testing.assert_close(sep(z), good, atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="bisect_iters"):
        SeparationModule("learnable", bisect_iters=0)
    with pytest.raises(ValueError, match="solver"):
        SeparationModule("learnable", solver="halley")


# -- hflayers semantics: sizes, init, masks, update steps, appended patterns -------------------------------------


def _plain_forward(layer, x):
    """The layer's computation written out with torch primitives, in the layer's own order of operations."""
    H, hd = layer.num_heads, layer.hidden_size
    y = layer.norm_stored(x)
    r = layer.norm_state(x)
    p = layer.norm_projection(x)
    B, N, _ = x.shape
    q = torch.nn.functional.linear(r, layer.q_proj.weight, layer.q_proj.bias).view(B, N, H, hd).transpose(1, 2)
    k = torch.nn.functional.linear(y, layer.k_proj.weight, layer.k_proj.bias).view(B, N, H, hd).transpose(1, 2)
    v = torch.nn.functional.linear(p, layer.v_proj.weight, layer.v_proj.bias)
    v = v.view(B, N, H, layer.pattern_size).transpose(1, 2)
    beta = torch.tensor((layer.scaling,) * H, dtype=x.dtype).view(1, H, 1, 1)
    a = torch.softmax(beta * (q @ k.transpose(-1, -2)), dim=-1)
    out = (a @ v).transpose(1, 2).reshape(B, N, H * layer.pattern_size)
    return torch.nn.functional.linear(out, layer.out_proj.weight, layer.out_proj.bias)


def test_pytorch_init_is_the_linear_default_drawn_in_construction_order():
    # Pins what the companion's models were trained with (they pass init="pytorch" and explicit per-head sizes):
    # the same random draws as building the four nn.Linear directly, the same LayerNorms, and a forward pass equal
    # bit for bit to the computation written out.
    torch.manual_seed(11)
    layer = Hopfield(12, hidden_size=4, output_size=12, pattern_size=4, num_heads=3, init="pytorch")
    after = torch.get_rng_state()
    torch.manual_seed(11)
    direct = [torch.nn.Linear(12, 12) for _ in range(4)]
    assert torch.equal(torch.get_rng_state(), after)
    for lin, ref in zip((layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj), direct):
        assert torch.equal(lin.weight, ref.weight) and torch.equal(lin.bias, ref.bias)
    assert [n for n, _ in layer.named_parameters()] == [
        f"{m}.{p}" for m in ("norm_stored", "norm_state", "norm_projection", "q_proj", "k_proj", "v_proj", "out_proj")
        for p in ("weight", "bias")]
    x = torch.randn(2, 5, 12)
    assert torch.equal(layer(x), _plain_forward(layer, x))
    # the learned queries of HopfieldPooling: drawn after the inner layer, truncated normal
    torch.manual_seed(5)
    pool = HopfieldPooling(12, hidden_size=4, pattern_size=4, num_heads=3, quantity=2, init="pytorch")
    torch.manual_seed(5)
    Hopfield(12, hidden_size=4, pattern_size=4, num_heads=3, init="pytorch")
    ref = torch.nn.init.trunc_normal_(torch.empty(1, 2, 12), std=0.02)
    assert torch.equal(pool.pooling_weights, ref)


def test_models_build_their_layers_with_explicit_sizes():
    # the layers inside the models are exactly Hopfield(d, hidden_size=d // H, output_size=d, pattern_size=d // H,
    # init="pytorch", ...) as built directly: same parameter names and shapes, same values from the same seed
    from uhop.models.stanhop import STanHopNet, _hopfield_kwargs
    from uhop.models.vision import HopfieldViT, _hopfield

    torch.manual_seed(2)
    layer = _hopfield(16, 4, "sparsemax", True, 0.1, None, False, False)
    torch.manual_seed(2)
    direct = Hopfield(16, hidden_size=4, output_size=16, pattern_size=4, num_heads=4, separation="sparsemax",
                      dropout=0.1, kernel="linear", normalize_stored_pattern=False, normalize_state_pattern=False,
                      normalize_pattern_projection=False, init="pytorch")
    assert list(layer.state_dict()) == list(direct.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(layer.state_dict().values(), direct.state_dict().values()))
    kw = _hopfield_kwargs(16, 4, "learnable", 1.5, True, False)
    assert (kw["hidden_size"], kw["pattern_size"], kw["output_size"], kw["init"]) == (4, 4, 16, "pytorch")
    for model in (HopfieldViT(image_size=16, patch_size=8, dim=16, depth=1, num_heads=4, num_classes=3),
                  STanHopNet(3, 24, 12, d_model=16, n_heads=4, d_ff=8, factor=2)):
        for m in hopfield_layers(model):
            assert m.q_proj.weight.shape == m.k_proj.weight.shape == m.v_proj.weight.shape == (16, 16)
            assert m.out_proj.weight.shape == (16, 16) and m.init == "pytorch"
    with pytest.raises(ValueError, match=r"dim \(10\) must be divisible by num_heads \(4\)"):
        _hopfield(10, 4, "softmax", False, 0.0, None, False, True)


def test_hflayers_init_scheme_and_reset_parameters():
    torch.manual_seed(0)
    layer = Hopfield(64, num_heads=4, kernel="linear")
    for lin in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
        assert abs(float(lin.weight.detach().std()) - 0.02) < 0.002 and float(lin.bias.detach().abs().max()) == 0.0
    before = layer.q_proj.weight.clone()
    with torch.no_grad():
        layer.feature_map.weight.mul_(3.0)
        layer.norm_state.weight.fill_(2.0)
    layer.reset_parameters()
    assert not torch.equal(layer.q_proj.weight, before)
    torch.testing.assert_close(layer.feature_map.weight, torch.eye(64))
    torch.testing.assert_close(layer.norm_state.weight, torch.ones(64))
    pool = HopfieldPooling(64, quantity=200)
    assert abs(float(pool.pooling_weights.detach().std()) - 0.02) < 0.003
    assert (pool.output_size, pool.state_pattern_dim, pool.hidden_size, pool.quantity) == (64, 64, 64, 200)
    lookup = HopfieldLayer(8, quantity=3, trainable=False, stored_pattern_size=6, pattern_projection_size=6)
    assert lookup.lookup_weights.shape == (1, 3, 6) and not lookup.lookup_weights.requires_grad


def test_hidden_and_pattern_size_are_per_head():
    layer = Hopfield(8, hidden_size=8, num_heads=8)            # hflayers: 2,296 parameters
    assert layer.q_proj.weight.shape == (64, 8) and layer.out_proj.weight.shape == (8, 64)
    assert sum(p.numel() for p in layer.parameters()) == 2296
    layer = Hopfield(8, hidden_size=3, pattern_size=5, num_heads=2, output_size=7)
    assert layer.get_association_matrix(torch.randn(2, 4, 8)).shape == (2, 2, 4, 4)
    assert layer.get_projected_pattern_matrix(torch.randn(2, 4, 8)).shape == (2, 2, 4, 5)
    assert layer(torch.randn(2, 4, 8)).shape == (2, 4, 7)


def _scores(layer, x):
    """beta Q K^T of a one-head layer without norms (for checking masks against the definition)."""
    return layer.scaling * layer.q_proj(x) @ layer.k_proj(x).transpose(-1, -2)


def test_float_masks_are_added_and_bool_masks_exclude():
    torch.manual_seed(0)
    layer = Hopfield(4, normalize_stored_pattern=False, normalize_state_pattern=False,
                     normalize_pattern_projection=False, init="pytorch").double()
    x = torch.randn(2, 5, 4, dtype=DT)
    i, j = torch.arange(5)[:, None], torch.arange(5)[None, :]
    bias = -0.3 * (i - j).abs().to(DT)
    torch.testing.assert_close(layer.get_association_matrix(x, association_mask=bias)[:, 0],
                               torch.softmax(_scores(layer, x) + bias, dim=-1))
    causal = j > i
    expected = torch.softmax(_scores(layer, x).masked_fill(causal, float("-inf")), dim=-1)
    torch.testing.assert_close(layer.get_association_matrix(x, association_mask=causal)[:, 0], expected)
    as_float = torch.zeros(5, 5, dtype=DT).masked_fill(causal, float("-inf"))
    torch.testing.assert_close(layer.get_association_matrix(x, association_mask=as_float)[:, 0], expected)
    # 3-D masks are (B * num_heads, Q, M), one per batch item and head
    per_item = torch.stack([causal, causal.T])
    a = layer.get_association_matrix(x, association_mask=per_item).detach()
    assert float(a[0, 0][causal].abs().max()) == 0.0 and float(a[1, 0][causal.T].abs().max()) == 0.0
    assert bool((a[0, 0][~causal] > 0).all()) and bool((a[1, 0][~causal.T] > 0).all())
    with pytest.raises(ValueError, match=r"association_mask must have shape \(Q, M\) = \(5, 5\) or \(B \* num_heads"):
        layer(x, association_mask=torch.zeros(3, 5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="association_mask must be a bool tensor.*torch.uint8.*mask.bool()"):
        layer(x, association_mask=causal.to(torch.uint8))
    with pytest.raises(ValueError, match=r"stored_pattern_padding_mask is a float mask .* NaN or \+inf"):
        layer(x, stored_pattern_padding_mask=torch.full((2, 5), float("nan"), dtype=DT))
    with pytest.raises(ValueError, match="every stored pattern is masked for query 3 of batch item 0"):
        layer(x, association_mask=causal | (i == 3))


def test_empty_memory_is_refused_unless_a_zero_pattern_is_appended():
    x, none = torch.randn(2, 3, 4), torch.randn(2, 0, 4)
    with pytest.raises(ValueError, match=r"stored_pattern holds no patterns \(M = 0\)"):
        Hopfield(4)((none, x, none))
    layer = Hopfield(4, add_zero_association=True, disable_out_projection=True, input_bias=False)
    torch.testing.assert_close(layer((none, x, none)), torch.zeros(2, 3, 4))   # retrieves the zero pattern


def test_appended_patterns_match_torch_multihead_attention():
    # concat_bias_pattern / add_zero_association append after the projections, like add_bias_kv / add_zero_attn
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, add_bias_kv=True, add_zero_attn=True, batch_first=True).double()
    hop = Hopfield(8, num_heads=2, concat_bias_pattern=True, add_zero_association=True,
                   normalize_stored_pattern=False, normalize_state_pattern=False,
                   normalize_pattern_projection=False).double()
    with torch.no_grad():
        for lin, w, b in zip((hop.q_proj, hop.k_proj, hop.v_proj), mha.in_proj_weight.chunk(3),
                             mha.in_proj_bias.chunk(3)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        hop.out_proj.load_state_dict(mha.out_proj.state_dict())
        hop.key_bias_pattern.copy_(mha.bias_k.view(2, 1, 4))
        hop.value_bias_pattern.copy_(mha.bias_v.view(2, 1, 4))
    x = torch.randn(3, 5, 8, dtype=DT)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, :] = True                                  # a fully padded item still has the two appended patterns
    ref, weights = mha(x, x, x, key_padding_mask=pad, average_attn_weights=False)
    torch.testing.assert_close(hop(x, stored_pattern_padding_mask=pad), ref)
    torch.testing.assert_close(hop.get_association_matrix(x, stored_pattern_padding_mask=pad), weights)
    with pytest.raises(ValueError, match="concat_bias_pattern=True .* needs stored_pattern_as_static=False"):
        Hopfield(8, concat_bias_pattern=True, stored_pattern_as_static=True)


def test_update_steps_stop_per_head():
    torch.manual_seed(0)
    xi, q = torch.randn(1, 12, 4, dtype=DT), torch.randn(1, 3, 4, dtype=DT)
    two = Hopfield(4, num_heads=2, scaling=[4.0, 4.0], update_steps_max=[1, 6], update_steps_eps=[1e-300, 1e-300],
                   stored_pattern_as_static=True, state_pattern_as_static=True, pattern_projection_as_static=True,
                   disable_out_projection=True, normalize_stored_pattern=False, normalize_state_pattern=False,
                   normalize_pattern_projection=False).double()
    a = two.get_association_matrix((xi, q, xi))
    assert two.last_update_steps_per_head == (1, 6) and two.update_steps_max == (1, 6)
    # each head is the single-head dynamics with its own number of steps (static patterns are shared by heads)
    for h, steps in enumerate((1, 6)):
        one = Hopfield.retrieval(4, beta=4.0, update_steps_max=steps, update_steps_eps=1e-300).double()
        torch.testing.assert_close(a[:, h], one.get_association_matrix((xi, q, xi))[:, 0])
    with pytest.raises(ValueError, match="update_steps_max must be one value or num_heads = 2 values"):
        Hopfield(4, num_heads=2, update_steps_max=[1, 2, 3])


def test_new_keywords_are_checked():
    with pytest.raises(ValueError, match="association_activation must name a torch function.*'relux'"):
        Hopfield(4, association_activation="relux")
    with pytest.raises(ValueError, match="normalize_stored_pattern_affine=True needs normalize_stored_pattern=True"):
        Hopfield(4, normalize_stored_pattern=False, normalize_stored_pattern_affine=True)
    with pytest.raises(ValueError, match="normalize_state_pattern_eps must be > 0"):
        Hopfield(4, normalize_state_pattern_eps=0.0)
    with pytest.raises(ValueError, match="pattern_projection_size .* must equal stored_pattern_size"):
        Hopfield(4, pattern_projection_as_connected=True, pattern_projection_size=3)
    with pytest.raises(TypeError, match="input_bias must be a bool"):
        Hopfield(4, input_bias=1)
    layer = Hopfield(4, normalize_stored_pattern=False, normalize_state_pattern_affine=False,
                     normalize_pattern_projection_eps=0.1, association_activation="relu")
    assert not layer.normalize_stored_pattern and not layer.normalize_stored_pattern_affine
    assert layer.normalize_state_pattern and not layer.normalize_state_pattern_affine
    assert layer.norm_projection.eps == 0.1 and bool((layer(torch.randn(2, 3, 4)) >= 0).all())


def test_per_head_scaling_multiplies_whole_heads():
    # hflayers applies a per-head scaling tensor to alternating features; here head h uses beta_h throughout
    xi, q = torch.randn(2, 9, 4, dtype=DT), torch.randn(2, 3, 4, dtype=DT)
    two = Hopfield(4, num_heads=2, scaling=torch.tensor([1.0, 3.0]), stored_pattern_as_static=True,
                   state_pattern_as_static=True, pattern_projection_as_static=True, disable_out_projection=True,
                   normalize_stored_pattern=False, normalize_state_pattern=False,
                   normalize_pattern_projection=False).double()
    a = two.get_association_matrix((xi, q, xi))
    assert two.scaling == (1.0, 3.0)
    for h, beta in enumerate((1.0, 3.0)):
        for b in range(2):
            torch.testing.assert_close(a[b, h], uhop.association(q[b], xi[b], beta=beta))
