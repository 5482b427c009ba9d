"""Retrieval dynamics T_K (Eq (2.4)): batching, dtypes, determinism, similarities."""

import pytest
import torch

import uhop

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(seed=0, M=12, d=10, Q=7, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    Xi = torch.rand(M, d, generator=g, dtype=dtype)
    X = torch.rand(Q, d, generator=g, dtype=dtype)
    return Xi, X


def _kernel(d, d_phi=None, seed=0, dtype=DT):
    return uhop.LinearKernel(d, d_phi, init="normal", seed=seed, dtype=dtype)


SETTINGS = [
    dict(separation="softmax"),
    dict(separation="sparsemax", beta=2.0),
    dict(separation=1.3, beta=0.7),
    dict(separation="softmax", similarity="l2", beta=3.0),
    dict(separation="entmax15", similarity="manhattan"),
    dict(separation="softmax", kernel="tall", beta=2.0),
    dict(separation="sparsemax", kernel="square", similarity="l2"),
]


def _resolve(setting, d, dtype=DT):
    s = dict(setting)
    if "kernel" in s:
        s["kernel"] = _kernel(d, 2 * d if s["kernel"] == "tall" else None, dtype=dtype)
    return s


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_batched_equals_per_query_loop(setting, dtype, atol):
    Xi, X = _data(1, dtype=dtype)
    kw = _resolve(setting, Xi.shape[1], dtype)
    with torch.no_grad():
        batched = uhop.retrieve(X, Xi, steps=3, **kw)
        looped = torch.stack([uhop.retrieve(x, Xi, steps=3, **kw) for x in X])
    assert batched.dtype == dtype and batched.shape == X.shape
    assert torch.allclose(batched, looped, atol=atol, rtol=0)


def test_single_query_shapes():
    Xi, X = _data(2)
    x = uhop.retrieve(X[0], Xi, steps=2)
    assert x.shape == X[0].shape
    x, E = uhop.retrieve(X[0], Xi, steps=2, return_energies=True)
    assert E.shape == (3,)
    x, E = uhop.retrieve(X, Xi, steps=4, return_energies=True)
    assert E.shape == (5, X.shape[0])
    p = uhop.association(X[0], Xi)
    assert p.shape == (Xi.shape[0],)
    assert uhop.similarity_scores(X, Xi).shape == (X.shape[0], Xi.shape[0])


def test_step_is_eq_2_4_with_beta_inside():
    Xi, X = _data(3)
    beta = 2.5
    expected = torch.softmax(beta * X @ Xi.T, dim=-1) @ Xi
    assert torch.allclose(uhop.retrieve(X, Xi, beta=beta), expected, atol=1e-12)
    assert torch.allclose(uhop.retrieval_step(X, Xi, beta=beta), expected, atol=1e-12)
    assert torch.allclose(uhop.baselines.mhm(X, Xi, beta=beta), expected, atol=1e-12)


@pytest.mark.parametrize("sep", ["softmax", "sparsemax", 1.4])
def test_kernelized_precompute_equals_direct_formula(sep):
    Xi, X = _data(4)
    k = _kernel(Xi.shape[1], 15, seed=2)
    W = k.weight.detach()
    beta = 1.7
    # T_K(x) = Xi Sep(beta (W Xi)^T (W x)), written out with column vectors
    direct = torch.stack([
        Xi.T @ uhop.entmax(beta * (W @ Xi.T).T @ (W @ x), uhop.separation(sep).alpha) for x in X
    ])
    with torch.no_grad():
        got = uhop.retrieve(X, Xi, beta=beta, separation=sep, kernel=k)
        keys = k.precompute(Xi)
        got_keys = uhop.retrieve(X, Xi, beta=beta, separation=sep, kernel=k, keys=keys)
    assert torch.allclose(got, direct, atol=1e-12)
    assert torch.equal(got, got_keys)


def test_deterministic_across_runs_with_same_seed():
    Xi, X = _data(5, M=20, d=16, Q=9, dtype=torch.float32)
    outs = []
    for _ in range(2):
        model = uhop.UHop(separation="sparsemax", beta=4.0, epochs=5, lr=0.1, init="normal", seed=11)
        model.fit(Xi)
        outs.append((model.retrieve(X, steps=3), model.kernel_.weight.detach().clone()))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])


def test_float32_and_float64_agree():
    Xi, X = _data(6)
    k64 = _kernel(Xi.shape[1], seed=3)
    k32 = uhop.LinearKernel.from_weight(k64.weight.detach().float())
    with torch.no_grad():
        a = uhop.retrieve(X, Xi, kernel=k64, separation="entmax15", steps=2)
        b = uhop.retrieve(X.float(), Xi.float(), kernel=k32, separation="entmax15", steps=2)
    assert b.dtype == torch.float32
    assert torch.allclose(a.float(), b, atol=1e-5)


def test_negative_distance_similarities_prefer_the_nearest_memory():
    Xi, _ = _data(7, M=15, d=20)
    g = torch.Generator().manual_seed(0)
    q = Xi + 0.01 * torch.randn(Xi.shape, generator=g, dtype=DT)
    for sim in ("l2", "manhattan"):
        S = uhop.similarity_scores(q, Xi, similarity=sim)
        assert torch.all(S <= 0)
        assert torch.equal(S.argmax(-1), torch.arange(15))
        out = uhop.retrieve(q, Xi, similarity=sim, beta=200.0)
        assert torch.allclose(out, Xi, atol=1e-6)
    D2 = torch.cdist(q, Xi)
    assert torch.allclose(uhop.similarity_scores(q, Xi, similarity="l2"), -D2, atol=1e-12)
    D1 = (q[:, None, :] - Xi[None]).abs().sum(-1)
    assert torch.allclose(uhop.similarity_scores(q, Xi, similarity="manhattan"), -D1, atol=1e-12)


def test_large_beta_tends_to_argmax_memory():
    Xi, X = _data(8)
    out = uhop.retrieve(X, Xi, beta=1e4)
    best = (X @ Xi.T).argmax(-1)
    assert torch.allclose(out, Xi[best], atol=1e-8)


def test_tol_stops_early_and_energies_track_steps():
    Xi, X = _data(9)
    x, E = uhop.retrieve(X, Xi, beta=5.0, separation="sparsemax", steps=500, tol=1e-12,
                         return_energies=True)
    assert E.shape[0] < 501
    x_more = uhop.retrieve(x, Xi, beta=5.0, separation="sparsemax")
    assert torch.allclose(x_more, x, atol=1e-10)


def test_association_rows_on_simplex_and_sparse():
    Xi, X = _data(10, M=30)
    p = uhop.association(X, Xi, beta=20.0, separation="sparsemax")
    assert torch.allclose(p.sum(-1), torch.ones(X.shape[0], dtype=DT), atol=1e-12)
    assert torch.all(p >= 0)
    assert torch.all(uhop.support_size(p) < Xi.shape[0])
    q = uhop.association(X, Xi, beta=20.0)
    assert torch.all(uhop.support_size(q) == Xi.shape[0])


def test_energies_need_dot_similarity():
    Xi, X = _data(11)
    with pytest.raises(ValueError, match="similarity"):
        uhop.retrieve(X, Xi, similarity="l2", return_energies=True)
    with pytest.raises(ValueError, match="separation"):
        uhop.retrieve(X, Xi, separation=uhop.PolynomialSeparation(3), return_energies=True)


def test_gradients_flow_through_retrieval():
    Xi, X = _data(12)
    k = _kernel(Xi.shape[1], seed=1)
    out = uhop.retrieve(X, Xi, kernel=k, steps=2)
    out.sum().backward()
    assert k.weight.grad is not None and torch.isfinite(k.weight.grad).all()


def test_uhop_model_matches_functional_api():
    Xi, X = _data(13)
    model = uhop.UHop(separation=1.5, beta=2.0, epochs=3, lr=0.05, init="normal", seed=4, steps=2).fit(Xi)
    with torch.no_grad():
        expected, E = uhop.retrieve(X, Xi, beta=2.0, separation=1.5, kernel=model.kernel_, steps=2,
                                    return_energies=True)
    got, E2 = model.retrieve(X, return_energies=True)
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.allclose(E, E2, atol=1e-12)
    assert torch.allclose(model.energy(X), E[0], atol=1e-12)
    assert model.association(X).shape == (X.shape[0], Xi.shape[0])
    assert "fitted on M=12" in repr(model)
    with pytest.raises(RuntimeError, match="fit"):
        uhop.UHop().retrieve(X)


def test_retrieval_weights_have_no_subnormal_floats():
    # a sharp softmax underflows into subnormals (slow on many CPUs); the library flushes them to 0, which
    # moves the result by less than the smallest normal float times the memories
    g = torch.Generator().manual_seed(0)
    memories, queries = torch.rand(200, 64, generator=g), torch.rand(50, 64, generator=g)
    beta = 12.0  # about 1% of the weights are subnormal
    raw = torch.softmax(beta * uhop.similarity_scores(queries, memories), dim=-1)  # the same scores, unflushed
    tiny = torch.finfo(raw.dtype).tiny
    assert ((raw > 0) & (raw < tiny)).any(), "the test case must produce subnormal weights"
    w = uhop.association(queries, memories, beta=beta)
    assert not ((w > 0) & (w < tiny)).any()
    assert torch.equal(w, torch.where(raw <= tiny, torch.zeros_like(raw), raw))
    out = uhop.retrieve(queries, memories, beta=beta)
    assert (out - raw @ memories).abs().max() <= 1e-6


# -- score-level entry points (the experiment runner reuses one score matrix for many betas and methods) ---------

def test_separate_and_read_out_from_precomputed_scores():
    Xi, X = _data(3)
    S = uhop.similarity_scores(X, Xi)
    # softmax written out in float64, independently of the package
    z = 2.5 * (X @ Xi.T)
    expected = torch.exp(z - z.max(-1, keepdim=True).values)
    expected = expected / expected.sum(-1, keepdim=True)
    w = uhop.retrieval.separate(S, beta=2.5)
    assert torch.allclose(w, expected, atol=1e-14, rtol=0)
    assert torch.allclose(uhop.retrieval.read_out(w, Xi), expected @ Xi, atol=1e-13, rtol=0)
    for sep in ("sparsemax", "entmax15", 1.3):
        assert torch.allclose(uhop.retrieval.separate(S, beta=0.7, separation=sep),
                              uhop.association(X, Xi, beta=0.7, separation=sep), atol=1e-13, rtol=0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        uhop.retrieval.separate(S, beta=0.0)
    with pytest.raises(FloatingPointError, match="not finite"):
        uhop.retrieval.separate(S.float() * 1e30, beta=1e10)
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        uhop.retrieval.separate(S.tolist())


def test_read_out_flushes_subnormal_weights_of_either_sign():
    tiny = torch.finfo(torch.float32).tiny
    w = torch.tensor([[0.5, tiny / 4, -tiny / 8, -0.25, 2 * tiny, float("nan")]])
    memories = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    flushed = uhop.retrieval.flush_subnormal(w)
    assert torch.equal(flushed[:, :5], torch.tensor([[0.5, 0.0, 0.0, -0.25, 2 * tiny]])) and flushed[0, 5].isnan()
    assert torch.equal(uhop.retrieval.read_out(w[:, :4], memories[:4]), torch.tensor([[0.5 - 2.0]]))


def test_make_scorer_precomputes_the_kernel_keys():
    Xi, X = _data(4, M=9, d=6, Q=5)
    kernel = _kernel(6, 8, seed=1)
    W = kernel.weight.detach()
    with torch.no_grad():
        dot = uhop.retrieval.make_scorer(Xi, kernel=kernel)
        assert torch.equal(dot.keys, kernel.precompute(Xi))
        # K(Xi, x) = (W xi)^T (W x), Theorem 2.1's kernel, summed out by hand
        expected = torch.einsum("qd,ed,ef,mf->qm", X, W, W, Xi)
        assert torch.allclose(dot(X), expected, atol=1e-12, rtol=0)
        dist = uhop.retrieval.make_scorer(Xi, kernel=kernel, similarity="manhattan")
        diff = (X @ W.T)[:, None, :] - (Xi @ W.T)[None, :, :]
        assert torch.allclose(dist(X), -diff.abs().sum(-1), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="keys .* require the kernel"):
        uhop.retrieval.make_scorer(Xi, keys=Xi.clone())


def test_kernel_check_is_shared():
    Xi, X = _data(5, d=10)
    for fn in (lambda k: uhop.retrieve(X, Xi, kernel=k), lambda k: uhop.energy(X, Xi, kernel=k),
               lambda k: uhop.retrieval.make_scorer(Xi, kernel=k)):
        with pytest.raises(ValueError, match="kernel has input dimension d = 7 but memories have d = 10"):
            fn(_kernel(7))
        with pytest.raises(TypeError, match="kernel weight has dtype torch.float32"):
            fn(_kernel(10, dtype=torch.float32))
        with pytest.raises(TypeError, match="kernel must be a uhop.LinearKernel"):
            fn(torch.eye(10, dtype=DT))


def test_official_weights_put_beta_after_sep_and_use_the_positive_distance():
    from uhop.baselines import PolynomialSeparation, official_weights

    Xi, X = _data(6)
    dist = torch.stack([torch.stack([((x - xi) ** 2).sum().sqrt() for xi in Xi]) for x in X])  # +||x - xi||_2
    e = torch.exp(dist - dist.max(-1, keepdim=True).values)
    expected = 3.0 * e / e.sum(-1, keepdim=True)              # rows sum to beta = 3: beta is no temperature
    S = uhop.similarity_scores(X, Xi, similarity="l2")        # S = -distance
    assert torch.allclose(official_weights(S, beta=3.0, similarity="l2"), expected, atol=1e-12, rtol=0)
    dots = X @ Xi.T
    assert torch.allclose(official_weights(dots, separation=PolynomialSeparation(3, normalize=False)),
                          dots ** 3, atol=1e-12, rtol=0)
    # the bug-compatible baselines iterate exactly this: x <- Xi (beta Sep(s(x)))
    x1 = official_weights(S, beta=0.5, similarity="l2") @ Xi
    x2 = official_weights(uhop.similarity_scores(x1, Xi, similarity="l2"), beta=0.5, similarity="l2") @ Xi
    assert torch.allclose(uhop.l2(X, Xi, beta=0.5, steps=2, bug_compatible=True), x2, atol=1e-12, rtol=0)
