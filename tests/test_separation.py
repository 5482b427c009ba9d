"""Separation functions Sep_alpha and the conjugates Psi_star (Eq (2.3), App D.1)."""

import math

import pytest
import torch
from entmax import entmax_bisect

import uhop
from uhop.separation import SEPARATION_NAMES

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")
ALPHAS = [1.0, 1.2, 1.5, 2.0]
BETAS = [0.3, 1.0, 4.0]


def _z(seed, shape=(7, 9), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=DT)


def test_alpha_one_is_softmax_exactly():
    z = _z(0)
    assert torch.equal(uhop.entmax(z, 1.0), torch.softmax(z, dim=-1))
    assert torch.equal(uhop.softmax(z), torch.softmax(z, dim=-1))
    # the reason for the special case: entmax_bisect at alpha = 1 is uniform, not softmax
    assert torch.allclose(entmax_bisect(z, alpha=1.0), torch.full_like(z, 1 / z.shape[-1]))


def test_sparsemax_has_exact_zeros_and_sums_to_one():
    z = _z(1, scale=3.0)
    p = uhop.sparsemax(z)
    assert (p == 0).any()
    assert torch.all(p >= 0)
    assert torch.allclose(p.sum(-1), torch.ones(z.shape[0], dtype=DT), atol=1e-12)
    assert torch.equal(uhop.entmax(z, 2.0), p)
    assert torch.equal(uhop.support_size(p), (p > 0).sum(-1))


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_entmax_on_simplex_and_matches_bisection(alpha):
    z = _z(2)
    p = uhop.entmax(z, alpha)
    assert torch.all(p >= 0)
    assert torch.allclose(p.sum(-1), torch.ones(z.shape[0], dtype=DT), atol=1e-10)
    ref = entmax_bisect(z, alpha=alpha, n_iter=200)
    assert torch.allclose(p, ref, atol=1e-10)


def test_entmax_dim_argument():
    z = _z(3)
    for alpha in ALPHAS:
        assert torch.allclose(uhop.entmax(z, alpha, dim=0), uhop.entmax(z.T, alpha).T, atol=1e-12)


def test_entmax_dtype_preserved():
    z32 = _z(4).float()
    for alpha in ALPHAS:
        assert uhop.entmax(z32, alpha).dtype == torch.float32


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("beta", BETAS)
def test_grad_Psi_star_is_separation(alpha, beta):
    z = _z(5).requires_grad_(True)
    (grad,) = torch.autograd.grad(uhop.Psi_star(z, beta, alpha).sum(), z)
    assert torch.allclose(grad, uhop.entmax(beta * z.detach(), alpha), atol=1e-10)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_Psi_star_gradient_by_finite_differences(alpha, beta):
    # Independent of autograd (the alpha in (1,2) branch detaches p* by design):
    # the value itself must have Sep_alpha(beta z) as its derivative.
    z = _z(6, shape=(6,))
    p = uhop.entmax(beta * z, alpha)
    h = 1e-6
    fd = torch.empty_like(z)
    for i in range(z.numel()):
        e = torch.zeros_like(z)
        e[i] = h
        fd[i] = (uhop.Psi_star(z + e, beta, alpha) - uhop.Psi_star(z - e, beta, alpha)) / (2 * h)
    assert torch.allclose(fd, p, atol=1e-6)


@pytest.mark.parametrize("beta", BETAS)
def test_Psi_star_alpha1_is_lse(beta):
    z = _z(7)
    expected = torch.logsumexp(beta * z, dim=-1) / beta
    assert torch.equal(uhop.Psi_star(z, beta, 1.0), expected)


@pytest.mark.parametrize("beta", BETAS)
def test_Psi_star_alpha2_closed_form(beta):
    z = _z(8)
    theta = beta * z
    zs = uhop.sparsemax(theta)
    closed = (0.5 * theta.pow(2).sum(-1) - 0.5 * (zs - theta).pow(2).sum(-1) + 0.5) / beta
    assert torch.allclose(uhop.Psi_star(z, beta, 2.0), closed, atol=1e-12)
    # the variational value <p*, theta> + H_2(p*) agrees with the closed form
    variational = ((zs * theta).sum(-1) + uhop.tsallis_entropy(zs, 2.0)) / beta
    assert torch.allclose(variational, closed, atol=1e-12)


def test_paper_second_line_without_inverse_beta_has_scaled_gradient():
    # Eq (2.3), line 2, as printed (no 1/beta) is beta * Psi_star; its gradient is
    # beta * sparsemax(beta z), so it matches Sep(beta z) only at beta = 1.
    beta = 3.0
    z = _z(9).requires_grad_(True)
    theta = beta * z
    printed = 0.5 * theta.pow(2).sum(-1) - 0.5 * (uhop.sparsemax(theta) - theta).pow(2).sum(-1) + 0.5
    assert torch.allclose(printed, beta * uhop.Psi_star(z, beta, 2.0), atol=1e-12)
    (g,) = torch.autograd.grad(printed.sum(), z)
    assert torch.allclose(g, beta * uhop.sparsemax(beta * z.detach()), atol=1e-10)
    z1 = _z(10)
    at_one = 0.5 * z1.pow(2).sum(-1) - 0.5 * (uhop.sparsemax(z1) - z1).pow(2).sum(-1) + 0.5
    assert torch.allclose(uhop.Psi_star(z1, 1.0, 2.0), at_one, atol=1e-12)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_Psi_star_bounds(alpha):
    # max_p <p, theta> + H(p) lies between max(theta) (H >= 0) and max(theta) + H(uniform)
    z = _z(11)
    beta = 1.7
    value = beta * uhop.Psi_star(z, beta, alpha)
    top = (beta * z).max(-1).values
    M = z.shape[-1]
    h_max = math.log(M) if alpha == 1.0 else (1 - M ** (1 - alpha)) / (alpha * (alpha - 1))
    assert torch.all(value >= top - 1e-12)
    assert torch.all(value <= top + h_max + 1e-12)


def test_Psi_star_continuous_in_alpha_near_one():
    z = _z(12)
    assert torch.allclose(uhop.Psi_star(z, 1.0, 1.0 + 1e-4), uhop.Psi_star(z, 1.0, 1.0), atol=1e-3)


def test_separation_factory():
    assert uhop.separation("softmax") == uhop.Separation("softmax", 1.0)
    assert uhop.separation("sparsemax").alpha == 2.0
    assert uhop.separation("entmax15").alpha == 1.5
    assert uhop.separation(1.5).name == "entmax15"
    assert uhop.separation(1).name == "softmax"
    s = uhop.separation(1.3)
    assert s.alpha == 1.3 and s.sparse
    assert not uhop.separation("softmax").sparse
    assert uhop.separation(s) is s
    assert hash(s) == hash(uhop.Separation(s.name, 1.3))
    with pytest.raises(Exception):
        s.alpha = 1.4  # frozen
    z = _z(13)
    for name, alpha in SEPARATION_NAMES.items():
        sep = uhop.separation(name)
        assert torch.equal(sep(z), uhop.entmax(z, alpha))
        assert torch.equal(sep.support_size(sep(z)), uhop.support_size(uhop.entmax(z, alpha)))
        assert torch.equal(sep.Psi_star(z, 2.0), uhop.Psi_star(z, 2.0, alpha))


def test_unknown_separation_lists_valid_names():
    with pytest.raises(ValueError, match="separation") as info:
        uhop.separation("relu")
    for name in SEPARATION_NAMES:
        assert name in str(info.value)


def test_tsallis_entropy_alpha1_is_shannon_and_handles_zeros():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=DT)
    assert torch.allclose(uhop.tsallis_entropy(p, 1.0), torch.tensor(math.log(2), dtype=DT))
    assert torch.allclose(uhop.tsallis_entropy(p, 2.0), torch.tensor(0.25, dtype=DT))


def test_masked_minus_inf_entries_are_allowed_and_get_zero_weight():
    z = torch.tensor([[0.3, float("-inf"), 1.0, -2.0]], dtype=DT)
    for p in (uhop.softmax(z), uhop.sparsemax(z), uhop.entmax(z, 1.5), uhop.entmax(z, 1.3)):
        assert p[0, 1] == 0 and torch.isfinite(p).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(1, dtype=DT))
    # the same weights as with the entry left out
    torch.testing.assert_close(uhop.entmax(z, 1.3)[:, [0, 2, 3]], uhop.entmax(z[:, [0, 2, 3]], 1.3))
