"""Feature map (Eq (2.1)), energies (Eq (1.1), (2.2)), Theorem 2.1, Lemma 2.1, Theorem 2.2."""

import math

import pytest
import torch

import uhop

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _problem(seed, M=7, d=5, Q=4, d_phi=None):
    g = _gen(seed)
    Xi = torch.randn(M, d, generator=g, dtype=DT)
    X = torch.randn(Q, d, generator=g, dtype=DT)
    kernel = uhop.LinearKernel(d, d_phi, init="normal", generator=g, dtype=DT)
    return Xi, X, kernel


# -- LinearKernel -------------------------------------------------------------------

def test_identity_init_square_and_tall():
    k = uhop.LinearKernel(4, dtype=DT)
    assert torch.equal(k.weight.detach(), torch.eye(4, dtype=DT))
    tall = uhop.LinearKernel(3, 5, init="identity", dtype=DT)
    expected = torch.cat([torch.eye(3, dtype=DT), torch.zeros(2, 3, dtype=DT)])
    assert torch.equal(tall.weight.detach(), expected)
    assert torch.linalg.matrix_rank(tall.weight.detach()) == 3  # full column rank
    Xi, X, _ = _problem(0, d=3)
    assert torch.allclose(tall.similarity(Xi, X), X @ Xi.T, atol=1e-12)
    assert torch.equal(tall.gram().detach(), torch.eye(3, dtype=DT))


def test_normal_init_scale_and_seed():
    d = 256
    k = uhop.LinearKernel(d, init="normal", seed=3, dtype=DT)
    row_sq = k.weight.detach().pow(2).sum(1)
    assert abs(row_sq.mean().item() - 1.0) < 0.05  # N(0, 1/d): rows of unit expected norm
    k2 = uhop.LinearKernel(d, init="normal", seed=3, dtype=DT)
    assert torch.equal(k.weight, k2.weight)
    k3 = uhop.LinearKernel(d, init="normal", seed=4, dtype=DT)
    assert not torch.equal(k.weight, k3.weight)


def test_official_init_is_standard_normal_square():
    k = uhop.LinearKernel(64, init="official", seed=0, dtype=DT)
    w = k.weight.detach()
    assert w.shape == (64, 64)
    assert abs(w.std().item() - 1.0) < 0.05
    with pytest.raises(ValueError, match="d_phi"):
        uhop.LinearKernel(64, 128, init="official")


def test_kernel_init_leaves_global_rng_alone():
    state = torch.get_rng_state()
    uhop.LinearKernel(10, 20, init="normal", seed=1)
    uhop.LinearKernel(10, init="official")
    assert torch.equal(torch.get_rng_state(), state)


def test_phi_similarity_gram_shapes_and_values():
    Xi, X, k = _problem(1, d_phi=9)
    W = k.weight.detach()
    assert torch.allclose(k.phi(X), X @ W.T)
    assert torch.allclose(k(X), k.phi(X))
    S = k.similarity(Xi, X)
    assert S.shape == (X.shape[0], Xi.shape[0])
    # K(xi, x) = x^T W^T W xi
    assert torch.allclose(S, X @ W.T @ W @ Xi.T, atol=1e-12)
    assert torch.allclose(k.gram(), W.T @ W)
    s1 = k.similarity(Xi, X[0])
    assert s1.shape == (Xi.shape[0],)
    assert torch.allclose(s1, S[0], atol=1e-12)


def test_normalize_rows_unit_and_zero_rows_kept():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]], dtype=DT)
    k = uhop.LinearKernel.from_weight(w)
    k.normalize_rows_()
    norms = k.weight.detach().norm(dim=1)
    assert torch.allclose(norms[[0, 2]], torch.ones(2, dtype=DT), atol=1e-15)
    assert torch.equal(k.weight.detach()[1], torch.zeros(2, dtype=DT))


def test_precompute_gives_kernel_scores():
    Xi, X, k = _problem(2, d_phi=8)
    B = k.precompute(Xi)
    assert B.shape == Xi.shape
    assert torch.allclose(X @ B.T, k.similarity(Xi, X), atol=1e-12)


# -- energies -----------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_mhm_energy_is_eq_1_1(beta):
    Xi, X, _ = _problem(3)
    expected = -torch.logsumexp(beta * X @ Xi.T, dim=-1) / beta + 0.5 * (X * X).sum(-1)
    assert torch.allclose(uhop.energy(X, Xi, beta=beta), expected, atol=1e-12)
    assert torch.allclose(uhop.energy(X[1], Xi, beta=beta), expected[1], atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_kernel_energy_is_eq_2_2(alpha):
    Xi, X, k = _problem(4, d_phi=7)
    W = k.weight.detach()
    fx = X @ W.T
    theta = 1.3 * fx @ (Xi @ W.T).T
    # Psi*_alpha written out independently of uhop: the Tsallis-regularised max over the simplex at the
    # maximiser from the entmax package (alpha = 1: log-sum-exp), scaled by 1/beta (Eq (2.3))
    if alpha == 1.0:
        conj = torch.logsumexp(theta, dim=-1)
    else:
        from entmax import entmax15, sparsemax

        p = entmax15(theta, dim=-1) if alpha == 1.5 else sparsemax(theta, dim=-1)
        tsallis = (p - p.pow(alpha)).sum(-1) / (alpha * (alpha - 1.0))
        conj = (p * theta).sum(-1) + tsallis
    expected = 0.5 * (fx * fx).sum(-1) - conj / 1.3
    assert torch.allclose(uhop.energy(X, Xi, beta=1.3, separation=alpha, kernel=k), expected, atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 1.2, 1.5, 2.0])
def test_energy_gradient_is_A_times_x_minus_T(alpha):
    # grad E_K(x) = A x - A Xi Sep(beta K(Xi, x)) = A (x - T_K(x)): the CCCP
    # structure behind Theorem 2.1 and why fixed points are stationary (Lemma 2.1).
    Xi, X, k = _problem(5, d_phi=8)
    beta = 0.8
    x = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(uhop.energy(x, Xi, beta=beta, separation=alpha, kernel=k).sum(), x)
    T = uhop.retrieval_step(X, Xi, beta=beta, separation=alpha, kernel=k)
    A = k.gram().detach()
    assert torch.allclose(g, (X - T) @ A.T, atol=1e-9)


# -- Theorem 2.1: monotone energy descent along T_K ----------------------------------

@pytest.mark.parametrize("sep", ["softmax", "sparsemax", 1.2, 1.5])
@pytest.mark.parametrize("shape", ["square", "tall"])
def test_theorem_2_1_energy_never_increases(sep, shape):
    # Theorem 2.1 needs A = W^T W non-singular (Assumption 2.1: W of full column
    # rank). Gaussian W with D_Phi >= d satisfies it almost surely; we check it.
    n_seeds, steps = 50, 8
    for seed in range(n_seeds):
        g = _gen(1000 + seed)
        M, d = 6, 4
        d_phi = d if shape == "square" else 9
        Xi = torch.randn(M, d, generator=g, dtype=DT)
        X = torch.randn(5, d, generator=g, dtype=DT) * 1.5
        beta = float(torch.empty(1, dtype=DT).uniform_(0.1, 5.0, generator=g))
        k = uhop.LinearKernel(d, d_phi, init="normal", generator=g, dtype=DT)
        assert torch.linalg.matrix_rank(k.gram().detach()) == d
        with torch.no_grad():
            _, E = uhop.retrieve(X, Xi, beta=beta, separation=sep, kernel=k, steps=steps,
                                 return_energies=True)
        tol = 1e-6 * E[:-1].abs().clamp_min(1.0)
        assert torch.all(E[1:] <= E[:-1] + tol), (seed, beta, (E[1:] - E[:-1]).max().item())


@pytest.mark.parametrize("sep", ["softmax", "sparsemax", 1.5])
def test_theorem_2_1_without_kernel(sep):
    for seed in range(20):
        g = _gen(seed)
        Xi = torch.rand(10, 6, generator=g, dtype=DT)
        X = torch.rand(3, 6, generator=g, dtype=DT)
        _, E = uhop.retrieve(X, Xi, beta=3.0, separation=sep, steps=10, return_energies=True)
        assert torch.all(E[1:] <= E[:-1] + 1e-6 * E[:-1].abs().clamp_min(1.0))


# -- Lemma 2.1: the iterates settle at a stationary point of E_K --------------------

@pytest.mark.parametrize("sep", ["softmax", "sparsemax", 1.5])
def test_lemma_2_1_converges_to_stationary_point(sep):
    Xi, X, k = _problem(6, M=8, d=5, Q=3, d_phi=10)
    beta = 2.0
    with torch.no_grad():
        x, E = uhop.retrieve(X, Xi, beta=beta, separation=sep, kernel=k, steps=2000, tol=1e-11,
                             return_energies=True)
    assert E.shape[0] < 2001  # stopped early: ||x_{t+1} - x_t|| -> 0
    step = uhop.retrieval_step(x, Xi, beta=beta, separation=sep, kernel=k) - x
    assert step.norm(dim=-1).max() < 1e-10
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(uhop.energy(xg, Xi, beta=beta, separation=sep, kernel=k).sum(), xg)
    assert grad.norm(dim=-1).max() < 1e-8


# -- Theorem 2.2 / Eq (2.6): exact one-step retrieval with alpha > 1 ---------------

def _margin_problem(seed, M=4, d=6):
    """Memories whose kernel features are nearly orthogonal: K(xi_mu, xi_mu) clearly
    exceeds K(xi_nu, xi_mu), with a generic (full-rank, non-identity) W."""
    g = _gen(seed)
    W = torch.randn(d, d, generator=g, dtype=DT) / math.sqrt(d)
    feats = 2.0 * torch.eye(d, dtype=DT)[:M] + 0.1 * torch.randn(M, d, generator=g, dtype=DT)
    Xi = torch.linalg.solve(W, feats.T).T  # Phi(xi_mu) = feats[mu]
    k = uhop.LinearKernel.from_weight(W)
    with torch.no_grad():
        K = k.similarity(Xi, Xi)  # K[mu, nu] = K(xi_nu, xi_mu)
    off = K.clone()
    off.fill_diagonal_(-math.inf)
    gap = K.diagonal() - off.max(dim=1).values  # K(xi_mu, xi_mu) - max_nu K(xi_nu, xi_mu)
    return Xi, k, gap


# The proof in App E.3 derives (via Eq (E.1)) the logit margin condition
#     K(xi_mu, xi_mu) - max_{nu != mu} K(xi_nu, xi_mu) >= 1 / (beta (alpha - 1)).
# With unit-norm features l_Phi(u, v) = 2t K(u, v) - 2t (Eq (D.4)), this is
#     l_Phi(xi_mu, xi_mu) - max l_Phi(xi_nu, xi_mu) >= 2t / (beta (alpha - 1)),
# i.e. Eq (2.7) with the inequality the other way round and a positive bound
# (as printed, (2.7) says LHS <= -2t/(beta(alpha-1)), impossible since LHS >= 0).
# For alpha-entmax the logit condition is necessary and sufficient for a one-hot output.

@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
@pytest.mark.parametrize("seed", range(5))
def test_theorem_2_2_exact_retrieval_when_margin_holds(alpha, seed):
    Xi, k, gap = _margin_problem(seed)
    assert torch.all(gap > 0)
    beta = 1.25 / ((alpha - 1) * gap.min().item())  # margin condition holds with 25% slack
    with torch.no_grad():
        p = uhop.association(Xi, Xi, beta=beta, separation=alpha, kernel=k)
        x = uhop.retrieve(Xi, Xi, beta=beta, separation=alpha, kernel=k)
    assert torch.equal(p, torch.eye(Xi.shape[0], dtype=DT))  # Eq (2.6): Sep = e_mu exactly
    assert torch.equal(x, Xi)  # T(xi_mu) = xi_mu exactly


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_theorem_2_2_violated_margin_is_not_exact(alpha):
    Xi, k, gap = _margin_problem(0)
    beta = 0.5 / ((alpha - 1) * gap.max().item())  # margin condition fails for every mu
    with torch.no_grad():
        p = uhop.association(Xi, Xi, beta=beta, separation=alpha, kernel=k)
        x = uhop.retrieve(Xi, Xi, beta=beta, separation=alpha, kernel=k)
    assert torch.all(uhop.support_size(p) > 1)
    assert torch.all((x - Xi).norm(dim=-1) > 1e-3)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_margin_condition_is_sharp(alpha):
    # one-hot  <=>  beta (alpha - 1) gap_mu >= 1, checked on a beta grid around the threshold
    Xi, k, gap = _margin_problem(3)
    for beta in torch.linspace(0.05, 2.0, 40, dtype=DT).tolist():
        with torch.no_grad():
            p = uhop.association(Xi, Xi, beta=beta, separation=alpha, kernel=k)
        for mu in range(Xi.shape[0]):
            c = beta * (alpha - 1) * gap[mu].item()
            if abs(c - 1) < 1e-6:
                continue
            assert (uhop.support_size(p[mu]).item() == 1) == (c > 1), (beta, mu, c)


def test_softmax_never_exact():
    Xi, k, gap = _margin_problem(1)
    p = uhop.association(Xi, Xi, beta=5.0, separation="softmax", kernel=k)
    assert torch.all(p > 0)


def test_printed_eq_2_3_without_inverse_beta_breaks_descent():
    # Why Psi_star carries 1/beta: with Eq (2.3)'s second line as printed (no 1/beta),
    # E = <x,x>/2 - Psi*_2(beta Xi^T x) increases along x <- Xi sparsemax(beta Xi^T x)
    # for beta != 1, while the 1/beta-scaled energy decreases on the same iterates.
    beta, increases = 4.0, 0
    for seed in range(20):
        g = _gen(seed)
        Xi = torch.randn(6, 4, generator=g, dtype=DT)
        X = torch.randn(5, 4, generator=g, dtype=DT) * 1.5
        xs = [X]
        for _ in range(6):
            xs.append(uhop.retrieval_step(xs[-1], Xi, beta=beta, separation="sparsemax"))
        printed = torch.stack([0.5 * (x * x).sum(-1) - beta * uhop.Psi_star(x @ Xi.T, beta, 2.0) for x in xs])
        ours = torch.stack([uhop.energy(x, Xi, beta=beta, separation="sparsemax") for x in xs])
        increases += int((printed[1:] > printed[:-1] + 1e-9).any())
        assert torch.all(ours[1:] <= ours[:-1] + 1e-9)
    assert increases > 0
