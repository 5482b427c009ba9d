"""Baselines (Section 4.1), query corruptions (App F.2-F.3) and error metrics."""

import pytest
import torch

import uhop
from uhop import baselines

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _images(seed=0, M=10, d=64, dtype=DT):
    return torch.rand(M, d, generator=_gen(seed), dtype=dtype)


# -- baselines ----------------------------------------------------------------------

def test_mhm_and_sparse_mhm_are_retrieve():
    Xi = _images(1)
    X = _images(2, M=4)
    assert torch.equal(uhop.mhm(X, Xi, beta=2.0, steps=2),
                       uhop.retrieve(X, Xi, beta=2.0, separation="softmax", steps=2))
    assert torch.equal(uhop.sparse_mhm(X, Xi, beta=2.0),
                       uhop.retrieve(X, Xi, beta=2.0, separation="sparsemax"))


def test_bug_compatible_beta_after_separation():
    Xi = _images(3)
    X = _images(4, M=4)
    official = torch.softmax(X @ Xi.T, dim=-1)
    assert torch.allclose(uhop.mhm(X, Xi, beta=3.0, bug_compatible=True), 3.0 * official @ Xi, atol=1e-12)
    sp = uhop.sparsemax(X @ Xi.T)
    assert torch.allclose(uhop.sparse_mhm(X, Xi, beta=0.5, bug_compatible=True), 0.5 * sp @ Xi, atol=1e-12)
    # at beta = 1 the one-step results coincide with the corrected models
    assert torch.allclose(uhop.mhm(X, Xi, bug_compatible=True), uhop.mhm(X, Xi), atol=1e-12)


def test_dam_normalised_polynomial():
    Xi = _images(5)
    X = _images(6, M=3)
    s = X @ Xi.T  # non-negative for [0, 1] images
    n = 10
    millidge = s.pow(n) / s.pow(n).sum(-1, keepdim=True)  # "x^n, then renormalise"
    assert torch.allclose(uhop.dam(X, Xi, degree=n), millidge @ Xi, atol=1e-12)
    # no overflow even where x^n is inf in float32
    big_Xi, big_X = 100 * Xi.float(), 100 * X.float()
    assert torch.isinf((big_X @ big_Xi.T).pow(n)).any()
    out = uhop.dam(big_X, big_Xi, degree=n)
    assert torch.isfinite(out).all()


def test_polynomial_separation_negative_scores_and_fallback():
    sep = uhop.PolynomialSeparation(3)
    z = torch.tensor([[2.0, -5.0, 1.0], [-1.0, -2.0, 0.0]], dtype=DT)
    p = sep(z)
    assert torch.allclose(p[0], torch.tensor([8 / 9, 0.0, 1 / 9], dtype=DT), atol=1e-12)
    assert torch.allclose(p[1], torch.full((3,), 1 / 3, dtype=DT))  # all <= 0 -> uniform
    # beta-invariance (why dam has no beta)
    assert torch.allclose(sep(7.0 * z[:1]), p[:1], atol=1e-12)


def test_dam_bug_compatible_is_unnormalised():
    Xi = _images(7)
    X = _images(8, M=3)
    expected = (X @ Xi.T).pow(10) @ Xi
    assert torch.allclose(uhop.dam(X, Xi, bug_compatible=True), expected, rtol=1e-12)
    assert uhop.dam(X, Xi, bug_compatible=True).max() > 1e3  # saturates to white after clamping


def test_l2_manhattan_corrected_vs_official_sign():
    Xi = _images(9, M=12)
    X = Xi + 0.01 * torch.randn(Xi.shape, generator=_gen(0), dtype=DT)
    for fn, p in ((uhop.l2, 2.0), (uhop.manhattan, 1.0)):
        D = torch.cdist(X, Xi, p=p)
        corrected = fn(X, Xi, beta=50.0)
        assert torch.allclose(corrected, torch.softmax(-50.0 * D, -1) @ Xi, atol=1e-12)
        assert torch.allclose(corrected, Xi, atol=1e-3)  # the nearest memory wins
        official = fn(X, Xi, beta=1.0, bug_compatible=True)
        assert torch.allclose(official, torch.softmax(D, -1) @ Xi, atol=1e-12)
        # with the official +distance the weight is largest on the farthest memory
        w = torch.softmax(D, -1)
        assert torch.equal(w.argmax(-1), D.argmax(-1))
        assert torch.allclose(fn(X, Xi, beta=2.0, bug_compatible=True), 2.0 * official, atol=1e-12)


def test_baseline_registry():
    assert set(uhop.BASELINES) == {"mhm", "sparse_mhm", "dam", "l2", "manhattan"}
    assert uhop.baseline("dam") is baselines.dam
    Xi = _images(10)
    for name, fn in uhop.BASELINES.items():
        assert fn(Xi[:2], Xi).shape == (2, Xi.shape[1])
    with pytest.raises(ValueError, match="baseline") as info:
        uhop.baseline("hopfield")
    assert "sparse_mhm" in str(info.value)


# -- corruptions --------------------------------------------------------------------

def test_half_mask_images_and_flat_rows():
    x = torch.rand(2, 3, 5, 4, generator=_gen(1), dtype=DT)
    before = x.clone()
    b = uhop.half_mask(x)
    assert torch.equal(b[..., 2:, :], torch.zeros_like(b[..., 2:, :]))
    assert torch.equal(b[..., :2, :], x[..., :2, :])
    t = uhop.half_mask(x, side="top")
    assert torch.equal(t[..., :2, :], torch.zeros_like(t[..., :2, :]))
    assert torch.equal(t[..., 2:, :], x[..., 2:, :])
    flat = x.reshape(2, -1)
    assert torch.equal(uhop.half_mask(flat, shape=(3, 5, 4)), b.reshape(2, -1))
    gray = torch.rand(3, 16, generator=_gen(2), dtype=DT)
    g = uhop.half_mask(gray, shape=(4, 4))
    assert torch.equal(g[:, 8:], torch.zeros(3, 8, dtype=DT)) and torch.equal(g[:, :8], gray[:, :8])
    assert not torch.equal(x, b) and b.data_ptr() != x.data_ptr()  # a new tensor is returned
    assert torch.equal(x, before)  # and the input is untouched (compared with a copy taken before the call)


def test_random_mask_entry_pixel_rescale_and_generator():
    x = torch.rand(50, 3, 8, 8, generator=_gen(3), dtype=DT) + 0.1
    state = torch.get_rng_state()
    m = uhop.random_mask(x, p=0.3, generator=_gen(4))
    assert torch.equal(torch.get_rng_state(), state)
    frac = (m == 0).double().mean().item()
    assert abs(frac - 0.3) < 0.02
    assert torch.equal(m, uhop.random_mask(x, p=0.3, generator=_gen(4)))
    assert torch.equal(m[m != 0], x[m != 0])
    pix = uhop.random_mask(x, p=0.5, per="pixel", generator=_gen(5))
    zero = pix == 0
    assert torch.equal(zero.all(1), zero.any(1))  # channels of a pixel masked together
    flat = uhop.random_mask(x.reshape(50, -1), p=0.5, per="pixel", shape=(3, 8, 8), generator=_gen(5))
    assert torch.equal(flat, pix.reshape(50, -1))
    r = uhop.random_mask(x, p=0.5, rescale=True, generator=_gen(6))
    kept = r != 0
    assert torch.allclose(r[kept], 2 * x[kept])  # official torch.dropout x2
    assert torch.equal(uhop.random_mask(x, p=0.0), x)


def test_gaussian_noise_modes():
    x = torch.full((400, 100), 0.5, dtype=DT)
    n = uhop.gaussian_noise(x, 0.1, clamp=False, generator=_gen(7)) - x
    assert abs(n.std().item() - 0.1) < 0.005
    tn = uhop.gaussian_noise(x, 2.0, mode="total_norm", clamp=False, generator=_gen(8)) - x
    assert torch.allclose(tn.norm(dim=-1), torch.full((400,), 2.0, dtype=DT), atol=1e-12)
    img = torch.full((4, 3, 5, 5), 0.5, dtype=DT)
    ti = uhop.gaussian_noise(img, 1.0, mode="total_norm", clamp=False, sample_ndim=3, generator=_gen(9)) - img
    assert torch.allclose(ti.flatten(1).norm(dim=-1), torch.ones(4, dtype=DT), atol=1e-12)
    c = uhop.gaussian_noise(x, 2.0, generator=_gen(7))
    assert c.min() >= 0 and c.max() <= 1
    raw = uhop.gaussian_noise(x, 2.0, clamp=False, generator=_gen(7))
    assert torch.equal(c, raw.abs().clamp(0, 1))  # clamp(|x + n|, 0, 1)
    assert torch.equal(uhop.gaussian_noise(x, 0.0), x)


# -- metrics ------------------------------------------------------------------------

def test_sse_mse_and_clamping():
    t = torch.rand(5, 20, generator=_gen(10), dtype=DT)
    r = t + 0.1
    r[0, 0] = 3.0  # clamped to 1
    expected = (r.clamp(0, 1) - t).pow(2).sum(-1)
    assert torch.allclose(uhop.sse(r, t), expected, atol=1e-12)
    assert torch.allclose(uhop.sse(r, t, clamp=False), (r - t).pow(2).sum(-1), atol=1e-12)
    assert torch.allclose(uhop.mse(r, t), expected / 20, atol=1e-12)
    assert uhop.sse(r[1], t[1]).shape == ()
    imgs = uhop.sse(r.reshape(5, 4, 5), t.reshape(5, 4, 5))
    assert torch.allclose(imgs, expected)


def test_success_rate_sse_and_cosine():
    t = torch.rand(4, 10, generator=_gen(11), dtype=DT)
    r = t.clone()
    r[0] = 0
    r[1] = 0.5 * t[1]  # same direction: cosine distance 0, SSE > 0
    assert uhop.success_rate(r, t, threshold=1e-9) == 0.5
    assert uhop.success_rate(r, t, threshold=1e-9, metric="cosine") == 0.75
    assert uhop.success_rate(r, t, threshold=100.0) == 1.0
    with pytest.raises(ValueError, match="metric"):
        uhop.success_rate(r, t, 0.1, metric="l1")
