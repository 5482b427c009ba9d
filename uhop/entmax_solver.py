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

**Row blocks (CPU).**  Each row's iteration reads that row alone, so a large score tensor is solved in blocks of
rows of about a megabyte that stay in the cache through the dozen passes of a step, instead of streaming tens of
megabytes through memory per pass (a long-horizon decoder's scores).  The blocks take exactly the steps of one
iteration over the whole tensor, which stops at the first step where every row has converged, so the weights and
gradients are the same bits (tested); the blocking only changes the speed: 1.13x for an evaluation pass of a
trained WTH-720 STanHop-Net, 1.03x for its training step (64 and 16 windows, one thread, idle machine).

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


#: On the CPU, score tensors larger than twice this many bytes are solved in blocks of leading rows of about this
#: size (see :func:`_blocks` and :func:`_iterate`): a long-horizon decoder's (B, heads, L, L) scores are tens of MB, and each Newton step
#: makes about fifteen passes over them, which then stream through memory instead of staying in the cache.
_BLOCK_BYTES = 1 << 20


class _Rows:
    """The Newton iteration on one block of rows: its scores ``ey`` (``eps * (z - max)``), its ``eps``, its
    threshold and the weights there.  Every row's iteration depends on that row alone (element-wise passes and
    sums along the row), so a block's rows compute the same numbers as inside the whole tensor."""

    def __init__(self, ey, eps, exact: bool, cpu: bool):
        self.ey, self.eps, self.exact, self.cpu = ey, eps, exact, cpu
        self.eps_theta = torch.zeros(*ey.shape[:-1], 1, dtype=ey.dtype, device=ey.device)
        self.steps = 0
        self._weigh()

    def _weigh(self):
        self.p, self.u, self.logp = _weights(self.ey, self.eps_theta, self.eps, self.exact, self.cpu)
        self.S = self.p.sum(dim=-1, keepdim=True)

    def converged(self, tol: float) -> bool:
        return bool(((self.S - 1.0).abs() <= tol).all())

    def step(self):
        """One Newton step on H = (S^eps - 1)/eps, in units of eps * theta: theta += H S / ((1 + eps H) sum g)."""
        eps, S = self.eps, self.S
        g = _g(self.p, self.u)
        H = torch.expm1(eps * torch.log(S)) / eps
        self.eps_theta = self.eps_theta + eps * H * S / ((1.0 + eps * H) * g.sum(dim=-1, keepdim=True))
        self.steps += 1
        self._weigh()


def _blocks(z: torch.Tensor, eps: torch.Tensor, *others: torch.Tensor) -> list[tuple[torch.Tensor, ...]] | None:
    """Row blocks of about ``_BLOCK_BYTES`` along the first dimension of ``z`` and of each of ``others`` (same
    shape), each with its ``eps`` (split too where it varies along that dimension) last, or None where ``z`` is
    small.  A block holds a multiple of 64 elements, and of 64 rows, so that its boundaries fall on the boundaries of
    the vectorised loops of a pass over the whole tensor (up to 512-bit vectors, two per iteration) and every element
    takes the same code path as there."""
    if z.ndim < 2 or eps.ndim > z.ndim or z.numel() * z.element_size() < 2 * _BLOCK_BYTES:
        return None
    rows = z[0].numel() // z.shape[-1]                 # rows (last-dimension vectors) per index of dim 0
    align = 64 // math.gcd(64, rows)                   # block lengths along dim 0 giving whole multiples of 64 rows
    per_block = max(align, _BLOCK_BYTES // (z[0].numel() * z.element_size()) // align * align)
    if per_block >= z.shape[0]:
        return None
    split_eps = eps.ndim == z.ndim and eps.shape[0] > 1
    return [(*(t[i:i + per_block] for t in (z, *others)), eps[i:i + per_block] if split_eps else eps)
            for i in range(0, z.shape[0], per_block)]


def _iterate(z: torch.Tensor, eps: torch.Tensor, exact: bool, cpu: bool, every: int, tol: float,
             max_steps: int) -> list[_Rows]:
    """Newton steps from theta = 0 until every row has converged (tested every ``every`` steps) or ``max_steps``.

    On the CPU a large ``z`` is solved block by block (:func:`_blocks`), each block in the cache: first each
    block until it has converged, then the blocks that stopped earlier are stepped on to the last one's count, and
    all blocks further together while any block is not converged at the common count -- exactly the steps that one
    iteration over the whole tensor takes, so the results are the same bits."""
    blocks = (_blocks(z, eps) if cpu else None) or [(z, eps)]

    def done(b: _Rows) -> bool:
        return b.steps >= max_steps or (b.steps % every == 0 and bool(b.steps or every == 1) and b.converged(tol))

    solved = []
    for zc, ec in blocks:
        b = _Rows((zc - zc.amax(dim=-1, keepdim=True)) * ec, ec, exact, cpu)
        while not done(b):
            b.step()
        solved.append(b)
    if len(solved) > 1:
        while True:
            last = max(b.steps for b in solved)
            for b in solved:
                while b.steps < last:
                    b.step()
            if all(done(b) for b in solved):
                break
            for b in solved:
                b.step()
    return solved


def _gather(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


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
        solved = _iterate(z, eps_b, exact, cpu, every, newton_tolerance(z.dtype), max_steps)
        ctx.steps = solved[0].steps
        y = _gather([b.p / b.S for b in solved])
        if for_backward is None or for_backward:  # g of the last iterate: only the backward reads it
            ctx.save_for_backward(y, _gather([_g(b.p, b.u) for b in solved]),
                                  _gather([b.logp - torch.log(b.S) for b in solved]), eps_b)
        ctx.eps_shape = eps.shape
        return y

    @staticmethod
    def backward(ctx, dy):
        y, g, logy, eps = ctx.saved_tensors
        need_eps = ctx.needs_input_grad[1]
        # Row blocks as in the forward (the same bits: only element-wise passes and sums along rows per block).
        blocks = (_blocks(y, eps, g, logy, dy) if _on_cpu(y) else None) or [(y, g, logy, dy, eps)]
        parts = [_backward_rows(*block, need_eps) for block in blocks]
        dz = _gather([dz for dz, _ in parts])
        # the alpha gradient sums the rows' terms over every row sharing an alpha: on the gathered rows, as before
        d_eps = _gather([rows for _, rows in parts]).sum_to_size(ctx.eps_shape) if need_eps else None
        return (dz, d_eps, None, None)[:ctx.n_inputs]


def _backward_rows(y, g, logy, dy, eps, need_eps: bool):
    """The backward on a block of rows: the score gradient (Peters et al., 2019) and, where alpha needs one, each
    row's term of the alpha gradient before the sum over rows."""
    gsum = g.sum(dim=-1, keepdim=True)
    dz = dy * g
    dz = dz - g * (dz.sum(dim=-1, keepdim=True) / gsum)
    if not need_eps:
        return dz, None
    # Correia et al. (2019), Prop. 1: dp/dalpha = (p - g~)/(alpha-1)^2 - (p log p - g~ sum p log p)/(alpha-1),
    # g~ = g / sum g; contracted with dy over the row.
    plogp = torch.where(y > 0, y * logy, torch.zeros_like(y))
    skew = g / gsum
    ent = plogp.sum(dim=-1, keepdim=True)
    d = dy * (y - skew) / eps.pow(2) - dy * (plogp - skew * ent) / eps
    return dz, d.sum(dim=-1, keepdim=True)


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
