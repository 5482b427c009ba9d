"""The Newton alpha-entmax solver (uhop.entmax_solver) against independent references: entmax's float64
bisection, the exact sort-based solvers at alpha = 1.5 and 2, softmax in the limit alpha -> 1, and finite
differences for both gradients."""

import math

import pytest
import torch
from entmax import entmax15, entmax_bisect, sparsemax

import uhop
from uhop.entmax_solver import EntmaxNewtonFunction, entmax_newton
from uhop.nn import SeparationModule


def _ref(z, alpha):
    """float64 bisection with 200 halvings (far below float64 resolution)."""
    return entmax_bisect(z.double(), alpha=alpha, dim=-1, n_iter=200)


@pytest.mark.parametrize("alpha", [1.001, 1.05, 1.2, 1.5, 1.7, 1.95, 2.0])
@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0, 1000.0])
def test_matches_float64_bisection(alpha, scale):
    g = torch.Generator().manual_seed(int(alpha * 1000 + scale))
    for M in (2, 7, 64):
        z = scale * torch.randn(50, M, generator=g, dtype=torch.float64)
        ref = _ref(z, alpha)
        # measured worst 3e-12 (alpha = 1.001, where the reference's power 1/(alpha - 1) = 1000 amplifies rounding)
        torch.testing.assert_close(entmax_newton(z, alpha), ref, atol=1e-11, rtol=0)
        torch.testing.assert_close(entmax_newton(z.float(), alpha).double(), _ref(z.float(), alpha), atol=1e-5,
                                   rtol=0)


def test_exact_at_sort_based_alphas_and_same_support():
    z = 3 * torch.randn(200, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(entmax_newton(z, 1.5), entmax15(z, dim=-1), atol=1e-13, rtol=0)
    sp = sparsemax(z, dim=-1)
    out = entmax_newton(z, 2.0)
    torch.testing.assert_close(out, sp, atol=1e-13, rtol=0)
    assert torch.equal(out > 0, sp > 0)  # exact zeros outside the support


def test_converges_in_few_newton_steps():
    # the step count is a property of the method, not a tolerance: 8 steps give the 60-step answer
    z = 5 * torch.randn(500, 40, generator=torch.Generator().manual_seed(1))
    for alpha in (1.01, 1.3, 1.5, 1.8, 2.0):
        torch.testing.assert_close(entmax_newton(z, alpha, max_steps=8), entmax_newton(z, alpha), atol=0, rtol=0)


@pytest.mark.parametrize("offset", [1e4, 1e8, 1e20])
def test_common_offset_is_harmless_in_float32(offset):
    z = torch.randn(32, 10, generator=torch.Generator().manual_seed(2)) + offset
    out = entmax_newton(z, 1.3)
    assert torch.isfinite(out).all()
    # the reference solves the same (rounded) float32 scores in float64
    torch.testing.assert_close(out.double(), _ref(z.double() - z.double().amax(-1, keepdim=True), 1.3), atol=1e-5,
                               rtol=0)


def test_alpha_to_one_tends_to_softmax_in_float32():
    z = 3 * torch.randn(16, 12, generator=torch.Generator().manual_seed(4))
    soft = torch.softmax(z, -1)
    for eps in (1e-3, 1e-6, 1e-9, 1e-30):
        out = entmax_newton(z, alpha_minus_one=eps)
        assert (out - soft).abs().max() < max(10 * eps, 1e-6), eps
    # through the public function, alpha given as a float close to 1
    torch.testing.assert_close(uhop.entmax(z, 1 + 1e-9), soft, atol=1e-6, rtol=0)
    # and through a learnable alpha whose sigmoid is far below float32's resolution around 1
    sep = SeparationModule("learnable", num_heads=1, alpha_init=1.5)
    with torch.no_grad():
        sep.alpha_logit.fill_(-40.0)  # alpha - 1 = 4e-18: 1 + that is exactly 1.0 in float32
    torch.testing.assert_close(sep(z[None]), soft[None], atol=1e-6, rtol=0)


def test_gradients_against_finite_differences():
    g = torch.Generator().manual_seed(5)
    z = (2 * torch.randn(3, 4, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    eps = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64).view(3, 1, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z, e: EntmaxNewtonFunction.apply(z, e, 60), (z, eps))
    # a scalar alpha given as a tensor: its gradient has the scalar's shape
    a = torch.tensor(1.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, a: entmax_newton(z, a), (z, a))


def test_gradients_match_entmax_bisect_closed_form():
    g = torch.Generator().manual_seed(6)
    z = (3 * torch.randn(20, 9, generator=g, dtype=torch.float64)).requires_grad_(True)
    a = torch.full((20, 1), 1.35, dtype=torch.float64, requires_grad=True)
    w = torch.randn(20, 9, generator=g, dtype=torch.float64)
    (entmax_newton(z, a) * w).sum().backward()
    gz, ga = z.grad.clone(), a.grad.clone()
    z.grad = a.grad = None
    (entmax_bisect(z, a, dim=-1, n_iter=200) * w).sum().backward()
    torch.testing.assert_close(gz, z.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(ga, a.grad, atol=1e-9, rtol=0)


def test_dim_half_precision_and_bad_input():
    z = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(entmax_newton(z, 1.3, dim=1), entmax_newton(z.transpose(1, 2), 1.3).transpose(1, 2))
    h = entmax_newton(z.half(), 1.3)
    assert h.dtype == torch.float16 and math.isclose(float(h.float().sum(-1).mean()), 1.0, abs_tol=2e-3)
    with pytest.raises(TypeError, match="exactly one"):
        entmax_newton(z, 1.3, alpha_minus_one=0.3)
    with pytest.raises(TypeError, match="exactly one"):
        entmax_newton(z)
    with pytest.raises(ValueError, match="alpha must lie in"):
        entmax_newton(z, 2.5)
    with pytest.raises(ValueError, match="alpha must lie in"):
        entmax_newton(z, 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        entmax_newton(torch.ones(3, 4, dtype=torch.long), 1.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exp_without_the_slow_path_is_torch_exp_bit_for_bit(dtype):
    # arguments giving normal, subnormal and zero results, and the special values; _exp clamps the
    # underflowing ones for the vectorised pass and redoes them on their own
    from uhop.entmax_solver import _exp

    lo = math.log(torch.finfo(dtype).tiny)
    x = torch.cat([torch.linspace(lo - 40, 5, 5001, dtype=dtype),
                   torch.tensor([-math.inf, math.inf, 0.0, lo, lo + 1.0], dtype=dtype)])
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(8))].reshape(-1, 2)
    out = _exp(x)
    assert torch.equal(out, torch.exp(x))
    zero_below = lo + math.log(torch.finfo(dtype).eps) - 1.0  # under the log of the smallest subnormal
    assert ((out[x < lo] < torch.finfo(dtype).tiny).all() and (out[x < zero_below] == 0).all()
            and (out[x < lo] > 0).any())  # subnormal and zero results, from the clamped-and-redone path
    assert torch.equal(_exp(x.clamp_min(0)), torch.exp(x.clamp_min(0)))  # nothing underflows
    x[3, 1] = math.nan  # NaN anywhere: the plain exp of everything
    assert torch.equal(_exp(x).nan_to_num(), torch.exp(x).nan_to_num()) and _exp(x)[3, 1].isnan()


@pytest.mark.parametrize("eps", [0.06, 0.1, 0.3, 1.0])
def test_weights_keep_inactive_entries_out_of_log_and_exp_exactly(eps):
    # the solver's unnormalised weights equal the plain formula exp(log(u) / eps), bit for bit: zeros off the
    # support, and for u down to 2^-24 (float32's smallest above a threshold near -1) results that underflow
    # to subnormals or zero once eps < 0.19
    from uhop.entmax_solver import _weights

    g = torch.Generator().manual_seed(9)
    tiny_u = -1 + 2.0 ** -torch.arange(1, 25).expand(40, 24)
    ey = torch.cat([-3 * torch.rand(40, 30, generator=g), tiny_u], 1)
    eps_t, theta = torch.tensor(eps), torch.zeros(40, 1)
    p, u, logp = _weights(ey.clone(), theta, eps_t, exact_log1p=False)
    plain_u = (ey - theta + 1.0).clamp_min(0.0)
    assert torch.equal(u, plain_u) and (u == 0).any() and (u == 2.0 ** -24).any()
    assert torch.equal(p, torch.exp(torch.log(plain_u) / eps_t))
    on = u > 0
    assert torch.equal(logp[on], (torch.log(plain_u) / eps_t)[on])
    assert bool((p[on] < torch.finfo(p.dtype).tiny).any()) == (eps < 0.19)


def test_no_grad_forward_is_the_same():
    z = 2 * torch.randn(6, 3, 5, 11, generator=torch.Generator().manual_seed(10))
    eps = torch.tensor([0.3, 0.5, 0.8]).view(3, 1, 1).requires_grad_(True)
    with torch.no_grad():
        quiet = EntmaxNewtonFunction.apply(z, eps, 60, False)
    assert torch.equal(quiet, EntmaxNewtonFunction.apply(z, eps, 60, True))
    assert torch.equal(quiet, EntmaxNewtonFunction.apply(z, eps, 60))  # three inputs, as before
    with torch.no_grad():
        assert torch.equal(quiet, entmax_newton(z, alpha_minus_one=eps))


def test_accelerator_path_without_host_syncs_matches_the_references(monkeypatch):
    # on a GPU the solver tests convergence every few steps and always takes log1p (each bool() of a device
    # tensor waits for the device); its answers must still be entmax's.  Forced here on CPU tensors.
    import uhop.entmax_solver as solver

    monkeypatch.setattr(solver, "_on_cpu", lambda z: False)
    g = torch.Generator().manual_seed(11)
    for alpha in (1.001, 1.2, 1.5, 2.0):
        for scale in (0.1, 1.0, 30.0, 1000.0):
            z = scale * torch.randn(40, 23, generator=g, dtype=torch.float64)
            torch.testing.assert_close(entmax_newton(z, alpha), _ref(z, alpha), atol=1e-11, rtol=0)
            torch.testing.assert_close(entmax_newton(z.float(), alpha).double(), _ref(z.float(), alpha), atol=1e-5,
                                       rtol=0)
    soft = torch.softmax(z.float() / 1000, -1)
    assert (entmax_newton(z.float() / 1000, alpha_minus_one=1e-9) - soft).abs().max() < 1e-6
    zz = (2 * torch.randn(3, 4, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    eps = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64).view(3, 1, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z, e: EntmaxNewtonFunction.apply(z, e, 60, True), (zz, eps))
