r"""alpha-EntMax by a monotone Newton iteration on its threshold, with a closed-form backward.

For scores ``z`` (one row) and ``alpha = 1 + eps`` with ``eps in (0, 1]``, Definition D.1 gives
``p_i = [1 + eps (z_i - m - theta)]_+^{1/eps}`` for the one threshold ``theta`` at which the ``p_i`` sum
to one (``m = max_i z_i``; this is the usual ``[(alpha - 1) z_i - tau]_+^{1/(alpha-1)}`` with
``tau = eps (m + theta) - 1``).  Writing the threshold in *score units* after subtracting the row maximum
is what makes the solver robust:

* the largest score is 0, so a common offset (1e4, 1e8, ...) never enters the arithmetic;
* ``log p_i = log1p(eps y_i) / eps`` with ``y_i = z_i - m - theta`` tends to ``y_i`` as ``eps -> 0``, so
  the weights tend to ``softmax(z)`` instead of the uniform vector that the textbook form
  ``(...)^{1/(alpha - 1)}`` returns once ``alpha`` rounds to 1.

**The iteration.**  Let ``S(theta) = sum_i p_i`` and ``H(theta) = (S^eps - 1) / eps`` (a Box-Cox transform
of ``S``; ``log S`` in the limit ``eps -> 0``).  ``S^eps = ||u||_{1/eps}`` with ``u_i = [1 + eps y_i]_+``
convex and non-increasing in ``theta``; a norm of order ``1/eps >= 1`` is convex and monotone on the
non-negative orthant, so ``H`` is convex and decreasing, and Newton's method started at ``theta = 0``
(where the largest entry alone gives ``S >= 1``, ``H >= 0``) approaches the root from the left without
overshooting.  ``H`` is *exactly linear* in ``theta`` on any fixed support of tied scores (and for every
support when ``eps -> 0``, where the first step is the log-sum-exp), so a handful of steps reach the
working precision where bisection needs about 30 (float32) to 100 (float64) halvings.  With
``dp_i / dtheta = -p_i^{1 - eps} = -p_i / u_i`` the step is
``theta += H S / ((1 + eps H) sum_i p_i / u_i)``.

**Backward.**  The Jacobian of alpha-entmax in the scores is ``diag(g) - g g^T / sum(g)`` with
``g_i = p_i^{2 - alpha}`` on the support (Peters et al., 2019), and the derivative in alpha is the closed
form of Correia et al. (2019, Proposition 1); both are used as stated there.  ``g`` is scale invariant in
these formulas, so the unnormalised ``p_i / u_i`` of the last iterate serves.  The alpha derivative is a
difference of terms of size ``1/eps^2``: it loses precision as alpha approaches 1 (a genuine 0/0 limit).
"""

from __future__ import annotations

import math

import torch

__all__ = ["entmax_newton", "EntmaxNewtonFunction", "newton_tolerance", "MAX_NEWTON_STEPS"]

#: Safety cap on Newton steps (the iteration stopped after 1-4 in the measured cases; the tests check that 8 suffice).
MAX_NEWTON_STEPS = 60
# eps below this is treated as this: weights then equal softmax to far below any dtype's resolution, and
# eps * y stays a normal float for scores of ordinary size.
_EPS_FLOOR = 1e-20


def newton_tolerance(dtype: torch.dtype) -> float:
    """Stop once every row's ``|sum p - 1|`` is below this (16 units in the last place of ``dtype``);
    the weights are then renormalised to sum to one exactly (to rounding)."""
    return 16.0 * torch.finfo(dtype).eps


def _weights(ey, eps_theta, eps, exact_log1p: bool, cpu: bool = True):
    """p (unnormalised), u = [1 + eps y]_+ and log p at the threshold ``theta`` (given as ``eps * theta``;
    ``ey = eps * (z - max)``).  Inactive entries (``u = 0``) get p = 0 exactly; their log p is -inf on the
    log1p path and 0 on the log path (the backward reads log p only where p > 0)."""
    # In-place steps where a buffer is free again: these passes over large score tensors are memory-bound.
    r = ey - eps_theta
    if exact_log1p:
        # log(1 + r): torch's CPU log1p is not vectorised but keeps eps -> 0 exact (the softmax limit).
        u = (r + 1.0).clamp_min_(0.0)
        logp = torch.log1p(r.clamp_min_(-1.0)).div_(eps)
        return (_exp(logp) if cpu else torch.exp(logp)), u, logp
    u = r.add_(1.0).clamp_min_(0.0)
    # Plain log(u) is accurate to ~6e-8 / eps in p (float32), enough for eps >= 0.05.  The inactive entries
    # are kept out of log and exp: log(0) = -inf and exp(-inf) = 0 are special values that the CPU kernels
    # handle up to ten times slower than ordinary ones, and sparse rows hold many.  With on = sign(u) (1 on
    # the support, 0 off it) they see log(1) instead, and multiplying by `on` restores p = 0; both steps are
    # exact (u + 0 = u, p * 1 = p), and arithmetic masks are several times cheaper than torch.where here.
    on = torch.sign(u)
    logp = (1.0 - on).add_(u).log_().div_(eps)  # (1 - on) + u is u + (1 - on): addition commutes exactly
    return _exp(logp).mul_(on), u, logp


def _exp(x: torch.Tensor) -> torch.Tensor:
    """``torch.exp(x)`` bit for bit, without sending the whole tensor through the CPU's slow path: arguments
    whose result underflows (subnormal or zero, below ``log(tiny)``) take far longer per element, so when
    there are any they are clamped for the vectorised pass and redone on their own."""
    floor = math.log(torch.finfo(x.dtype).tiny) + 1.0
    if x.numel() == 0 or not bool(x.min() < floor):
        return torch.exp(x)
    under = x < floor
    out = torch.exp(x.clamp_min(floor))
    out[under] = torch.exp(x[under])
    return out


def _g(p, u):
    """g = p / u = p^{1 - eps} (0 off the support), the slope of p in theta and the backward's weights."""
    return p / u.clamp_min_(torch.finfo(u.dtype).tiny)


#: Below this eps (= alpha - 1) the solver takes log1p instead of log on the CPU (see :func:`_weights`).
_LOG1P_BELOW = 0.05
#: Newton steps between convergence tests on an accelerator (a test is a host-device synchronisation; the
#: iteration typically converges in 1-4 steps, and steps past convergence change the weights only by rounding).
_DEVICE_CHECK_EVERY = 4


def _on_cpu(z: torch.Tensor) -> bool:
    """Whether to take the CPU path: convergence tested every step and special values kept out of log/exp
    (bit for bit the results of the plain formulas).  Elsewhere the solver avoids host synchronisations."""
    return z.device.type == "cpu"


class EntmaxNewtonFunction(torch.autograd.Function):
    """Autograd function of :func:`entmax_newton` over the last dimension (``eps = alpha - 1``)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, eps: torch.Tensor, max_steps: int, for_backward: bool | None = None):
        """``for_backward=False`` (pass ``torch.is_grad_enabled()``) skips what only the backward needs;
        omitted, it is True and the function takes three inputs, as before it existed."""
        ctx.n_inputs = 3 if for_backward is None else 4
        cpu = _on_cpu(z)
        eps_b = eps.clamp_min(_EPS_FLOOR)
        # On an accelerator every bool() of a device tensor waits for the device: there log1p (as fast as log
        # there) is taken always, and convergence is tested every _DEVICE_CHECK_EVERY steps instead of every step.
        exact = bool(eps_b.min() < _LOG1P_BELOW) if cpu else True
        every = 1 if cpu else _DEVICE_CHECK_EVERY
        ey = (z - z.amax(dim=-1, keepdim=True)) * eps_b
        eps_theta = torch.zeros(*z.shape[:-1], 1, dtype=z.dtype, device=z.device)
        tol = newton_tolerance(z.dtype)
        steps = 0
        while True:
            p, u, logp = _weights(ey, eps_theta, eps_b, exact, cpu)
            S = p.sum(dim=-1, keepdim=True)
            if steps >= max_steps or (steps % every == 0 and (steps or every == 1)
                                      and bool(((S - 1.0).abs() <= tol).all())):
                break
            # Newton step on H = (S^eps - 1)/eps, in units of eps * theta: theta += H S / ((1 + eps H) sum g).
            g = _g(p, u)
            H = torch.expm1(eps_b * torch.log(S)) / eps_b
            eps_theta = eps_theta + eps_b * H * S / ((1.0 + eps_b * H) * g.sum(dim=-1, keepdim=True))
            steps += 1
        ctx.steps = steps
        y = p / S
        if for_backward is None or for_backward:  # g of the last iterate: only the backward reads it
            ctx.save_for_backward(y, _g(p, u), logp - torch.log(S), eps_b)
        ctx.eps_shape = eps.shape
        return y

    @staticmethod
    def backward(ctx, dy):
        y, g, logy, eps = ctx.saved_tensors
        gsum = g.sum(dim=-1, keepdim=True)
        dz = dy * g
        dz = dz - g * (dz.sum(dim=-1, keepdim=True) / gsum)
        d_eps = None
        if ctx.needs_input_grad[1]:
            # Correia et al. (2019), Prop. 1: dp/dalpha = (p - g~)/(alpha-1)^2 - (p log p - g~ sum p log p)/(alpha-1),
            # g~ = g / sum g; contracted with dy over the row.
            plogp = torch.where(y > 0, y * logy, torch.zeros_like(y))
            skew = g / gsum
            ent = plogp.sum(dim=-1, keepdim=True)
            d = dy * (y - skew) / eps.pow(2) - dy * (plogp - skew * ent) / eps
            d_eps = d.sum(dim=-1, keepdim=True).sum_to_size(ctx.eps_shape)
        return (dz, d_eps, None, None)[:ctx.n_inputs]


def entmax_newton(z: torch.Tensor, alpha=None, *, alpha_minus_one=None, dim: int = -1,
                  max_steps: int = MAX_NEWTON_STEPS) -> torch.Tensor:
    r"""alpha-EntMax (Definition D.1) of ``z`` along ``dim`` for alpha in (1, 2], by Newton's method.

    Give either ``alpha`` (a float or a tensor broadcastable to ``z`` with ``dim`` of size 1) or
    ``alpha_minus_one`` (same shapes; preferred for alpha close to 1, e.g. ``sigmoid(a)`` of a learnable
    ``alpha = 1 + sigmoid(a)``, because ``1 + eps`` rounds to 1 in float32 for ``eps < 6e-8``).  Both are
    differentiable.  Half-precision scores are solved in float32 and returned in their dtype.
    """
    if (alpha is None) == (alpha_minus_one is None):
        raise TypeError("give exactly one of alpha and alpha_minus_one")
    if not isinstance(z, torch.Tensor) or not torch.is_floating_point(z):
        raise TypeError(f"z must be a floating-point torch.Tensor, got {getattr(z, 'dtype', type(z).__name__)}")
    work = torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype
    # a Python float becomes a tensor of the working dtype directly (via float32 it would be rounded first)
    if alpha_minus_one is None:
        eps = (alpha - 1.0) if isinstance(alpha, torch.Tensor) else float(alpha) - 1.0
    else:
        eps = alpha_minus_one
    eps = eps.to(dtype=work, device=z.device) if isinstance(eps, torch.Tensor) else torch.tensor(
        float(eps), dtype=work, device=z.device)
    if not bool(((eps > 0) & (eps <= 1)).all()):
        raise ValueError("alpha must lie in (1, 2] (alpha_minus_one in (0, 1]); use softmax for alpha = 1")
    moved = dim not in (-1, z.ndim - 1)
    x = z.movedim(dim, -1) if moved else z
    if moved and eps.ndim == z.ndim:
        eps = eps.movedim(dim, -1)
    out = EntmaxNewtonFunction.apply(x.to(work), eps, int(max_steps), torch.is_grad_enabled()).to(z.dtype)
    return out.movedim(-1, dim) if moved else out
