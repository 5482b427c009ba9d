r"""Hopfield layers for deep learning, with the API shape of ``hflayers`` and a U-Hop (kernelized) option.

One forward pass of :class:`Hopfield` is one (or more) step(s) of the modern Hopfield retrieval
dynamics written in the row convention of transformers (App C of the paper):

.. code-block:: text

    R = norm(state), Y = norm(stored), V0 = norm(projection)          # LayerNorms (optional)
    R, Y = Phi(R), Phi(Y)                                              # U-Hop only: feature map, Eq (2.1)
    Q = R W_Q,  K = Y W_K,  V = V0 W_V                                 # projections (optional: "static")
    A = Sep(beta * Q K^T)                                              # association, per head
    repeat update_steps_max times:  Q <- A K;  A = Sep(beta * Q K^T)   # extra retrieval steps
    out = (dropout(A) V) W_O                                           # heads concatenated, out projection

so the U-Hop layer of Section 3, ``Sep(beta W_K Phi(Xi) W_Q Phi(x)) W_V W_K Xi``, is ``kernel="linear"``:
``Phi`` acts on the state and stored patterns before ``W_Q``, ``W_K``; the values come from the raw
(normalised) projection patterns, as in the official implementation.

Shapes (``batch_first=True``): stored ``(B, M, stored_pattern_size)``, state ``(B, Q, input_size)``,
projection ``(B, M, pattern_projection_size)`` -> output ``(B, Q, output_size)``.  Unbatched 2-D inputs
``(M, d)`` / ``(Q, d)`` are accepted and give a 2-D output.

**Pure retrieval.** With static patterns, no normalisation, no output projection and ``scaling=beta``
(``Hopfield.retrieval(d, beta=...)`` builds exactly this), ``layer((memories, queries, memories))``
returns ``T_K^{update_steps_max + 1}(queries)``, i.e. ``uhop.retrieve(queries, memories, beta=beta,
steps=update_steps_max + 1, kernel=...)``.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from .._checks import _check_real, check_choice, check_int, check_positive
from .dropout import Dropout
from .kernel import FeatureMap, feature_separation_loss
from .separation import SeparationModule, make_separation

__all__ = ["Hopfield", "UHopfield", "HopfieldPooling", "HopfieldLayer", "record_stored_patterns",
           "hopfield_layers", "KERNELS"]

KERNELS = (None, "linear")
# Cap for update_steps_max=None ("until convergence").
_MAX_UPDATE_STEPS = 1000


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _opt_int(value, name):
    return None if value is None else check_int(value, name, minimum=1)


class Hopfield(nn.Module):
    r"""A modern Hopfield layer (Ramsauer et al., 2021), optionally kernelized by U-Hop.

    Args:
        input_size: size of the state patterns (queries); also the default stored / projection size.
        hidden_size: total size of the association space (all heads); default ``input_size``
            (``d_phi`` for static patterns under a kernel).  Must be divisible by ``num_heads``.
        output_size: size of the output; default ``input_size`` (the value size when
            ``disable_out_projection``).
        pattern_size: total size of the projected values; default ``hidden_size``.  Divisible by
            ``num_heads``.
        num_heads: number of heads.
        scaling: beta, the inverse temperature inside Sep: a float or one float per head; default
            ``1/sqrt(head dim)``.
        update_steps_max: extra retrieval steps after the first association (0: one step, as in
            attention; ``None``: until convergence, at most 1000).
        update_steps_eps: stop once ``max ||Q_new - Q_old|| < eps``.
        dropout: dropout on the association weights.
        normalize_stored_pattern / normalize_state_pattern / normalize_pattern_projection: LayerNorm
            (with affine parameters) on each input.
        separation: ``"softmax"`` (MHM), ``"sparsemax"`` (sparse MHM), ``"entmax15"``, a float alpha in
            [1, 2], or ``"learnable"`` (alpha = 1 + sigmoid(a) per head, initialised at ``alpha_init``).
        alpha_init: initial alpha for ``separation="learnable"``, in (1, 2].
        batch_first: inputs are ``(B, N, d)``; else ``(N, B, d)``.
        stored_pattern_size / pattern_projection_size: sizes of the stored and projection inputs
            (default ``input_size``).
        stored_pattern_as_static / state_pattern_as_static / pattern_projection_as_static: skip the
            corresponding projection (use the patterns as they are).
        disable_out_projection: no output projection (heads are only concatenated).
        bias: biases in the projections.
        kernel: ``None`` (dot product) or ``"linear"`` (U-Hop: learnable ``Phi(u) = W u`` on state and stored
            patterns, Eq (2.1)).
        d_phi: feature dimension D_Phi (default: the stored pattern size).
        kernel_normalize_rows: keep the rows of W at unit norm (Algorithm 1, line 4).
        kernel_init: ``"identity"`` (the layer starts as the plain Hopfield layer) or ``"normal"``.
        kernel_bias: affine Phi (as in the official code) instead of the paper's linear Phi.
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None,
                 output_size: int | None = None, pattern_size: int | None = None, num_heads: int = 1,
                 scaling: float | Sequence[float] | None = None, update_steps_max: int | None = 0,
                 update_steps_eps: float = 1e-4, dropout: float = 0.0, normalize_stored_pattern: bool = True,
                 normalize_state_pattern: bool = True, normalize_pattern_projection: bool = True,
                 separation="softmax", alpha_init: float = 1.5, batch_first: bool = True,
                 stored_pattern_size: int | None = None, pattern_projection_size: int | None = None,
                 stored_pattern_as_static: bool = False, state_pattern_as_static: bool = False,
                 pattern_projection_as_static: bool = False, disable_out_projection: bool = False,
                 bias: bool = True, kernel: str | None = None, d_phi: int | None = None,
                 kernel_normalize_rows: bool = False, kernel_init: str = "identity", kernel_bias: bool = False):
        super().__init__()
        if input_size is None:
            raise ValueError("input_size must be given (the size of the state patterns)")
        self.input_size = check_int(input_size, "input_size", minimum=1)
        self.stored_pattern_size = _opt_int(stored_pattern_size, "stored_pattern_size") or self.input_size
        self.pattern_projection_size = (_opt_int(pattern_projection_size, "pattern_projection_size")
                                        or self.input_size)
        self.num_heads = check_int(num_heads, "num_heads", minimum=1)
        for name in ("normalize_stored_pattern", "normalize_state_pattern", "normalize_pattern_projection",
                     "batch_first", "stored_pattern_as_static", "state_pattern_as_static",
                     "pattern_projection_as_static", "disable_out_projection", "bias", "kernel_normalize_rows",
                     "kernel_bias"):
            _check_bool(locals()[name], name)
        self.batch_first = batch_first
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; valid kernel values: None, 'linear'")
        self.kernel_name = kernel

        # U-Hop feature map, shared by state and stored patterns (K(u, v) = <Phi(u), Phi(v)>).
        if kernel == "linear":
            if self.stored_pattern_size != self.input_size:
                raise ValueError(
                    f"kernel='linear' applies one feature map to state and stored patterns, so input_size "
                    f"({self.input_size}) and stored_pattern_size ({self.stored_pattern_size}) must be equal")
            self.feature_map = FeatureMap(self.input_size, d_phi, init=kernel_init,
                                          normalize_rows=kernel_normalize_rows, bias=kernel_bias)
            key_in = query_in = self.feature_map.d_phi
        else:
            if d_phi is not None:
                raise ValueError("d_phi is only used with kernel='linear'")
            self.feature_map = None
            key_in, query_in = self.stored_pattern_size, self.input_size

        # Association space.
        if stored_pattern_as_static and state_pattern_as_static:
            if key_in != query_in:
                raise ValueError(f"static stored ({key_in}) and state ({query_in}) patterns must have the same size")
            if hidden_size is not None and check_int(hidden_size, "hidden_size", minimum=1) != key_in:
                raise ValueError(f"hidden_size must be None or {key_in} with static stored and state patterns, "
                                 f"got {hidden_size}")
            hidden = key_in
        elif stored_pattern_as_static:
            hidden = key_in if hidden_size is None else check_int(hidden_size, "hidden_size", minimum=1)
            if hidden != key_in:
                raise ValueError(f"hidden_size must be None or {key_in} with static stored patterns, got {hidden}")
        elif state_pattern_as_static:
            hidden = query_in if hidden_size is None else check_int(hidden_size, "hidden_size", minimum=1)
            if hidden != query_in:
                raise ValueError(f"hidden_size must be None or {query_in} with static state patterns, got {hidden}")
        else:
            hidden = self.input_size if hidden_size is None else check_int(hidden_size, "hidden_size", minimum=1)
        if hidden % self.num_heads:
            raise ValueError(f"hidden_size ({hidden}) must be divisible by num_heads ({self.num_heads})")
        self.hidden_size = hidden
        self.head_dim = hidden // self.num_heads

        if pattern_projection_as_static:
            value = self.pattern_projection_size
            if pattern_size is not None and check_int(pattern_size, "pattern_size", minimum=1) != value:
                raise ValueError(f"pattern_size must be None or {value} with static pattern projections, "
                                 f"got {pattern_size}")
        else:
            value = hidden if pattern_size is None else check_int(pattern_size, "pattern_size", minimum=1)
        if value % self.num_heads:
            raise ValueError(f"pattern_size ({value}) must be divisible by num_heads ({self.num_heads})")
        self.pattern_size = value

        if disable_out_projection:
            if output_size is not None and check_int(output_size, "output_size", minimum=1) != value:
                raise ValueError(f"output_size must be None or pattern_size = {value} with "
                                 f"disable_out_projection=True, got {output_size}")
            self.output_size = value
        else:
            self.output_size = self.input_size if output_size is None else check_int(output_size, "output_size",
                                                                                       minimum=1)

        self.norm_stored = nn.LayerNorm(self.stored_pattern_size) if normalize_stored_pattern else None
        self.norm_state = nn.LayerNorm(self.input_size) if normalize_state_pattern else None
        self.norm_projection = (nn.LayerNorm(self.pattern_projection_size)
                                if normalize_pattern_projection else None)
        self.q_proj = None if state_pattern_as_static else nn.Linear(query_in, hidden, bias=bias)
        self.k_proj = None if stored_pattern_as_static else nn.Linear(key_in, hidden, bias=bias)
        self.v_proj = None if pattern_projection_as_static else nn.Linear(self.pattern_projection_size, value,
                                                                          bias=bias)
        self.out_proj = None if disable_out_projection else nn.Linear(value, self.output_size, bias=bias)

        if scaling is None:
            betas = [1.0 / math.sqrt(self.head_dim)] * self.num_heads
        elif isinstance(scaling, (numbers.Real, torch.Tensor)) and not isinstance(scaling, bool) and (
                not isinstance(scaling, torch.Tensor) or scaling.numel() == 1):
            betas = [check_positive(scaling, "scaling")] * self.num_heads
        else:
            betas = [check_positive(b, "scaling") for b in scaling]
            if len(betas) != self.num_heads:
                raise ValueError(f"scaling must be one float or num_heads = {self.num_heads} floats, "
                                 f"got {len(betas)}")
        # Python floats, not a buffer: a float32 buffer would round beta before a .double() conversion.
        self.scaling: tuple[float, ...] = tuple(betas)

        if update_steps_max is not None:
            update_steps_max = check_int(update_steps_max, "update_steps_max", minimum=0)
        self.update_steps_max = update_steps_max
        self.update_steps_eps = check_positive(update_steps_eps, "update_steps_eps")
        p = _check_real(dropout, "dropout")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {p}")
        self.dropout = Dropout(p)
        self.separation = make_separation(separation, self.num_heads, alpha_init)
        self._recording = False
        self.recorded_stored: torch.Tensor | None = None
        self.recorded_state: torch.Tensor | None = None
        self.last_update_steps: int | None = None

    # -- convenience constructors ---------------------------------------------------------------------

    @classmethod
    def retrieval(cls, d: int, beta: float = 1.0, separation="softmax", update_steps_max: int | None = 0,
                  update_steps_eps: float = 1e-4, kernel: str | None = None, d_phi: int | None = None,
                  **kwargs) -> "Hopfield":
        """The pure associative-memory layer: no projections, no norms, no output projection, beta given.

        ``layer((memories, queries, memories))`` then equals ``uhop.retrieve(queries, memories,
        beta=beta, separation=..., steps=update_steps_max + 1)`` (with ``kernel=layer.feature_map.
        to_linear_kernel()`` when ``kernel="linear"``).
        """
        return cls(d, scaling=beta, separation=separation, update_steps_max=update_steps_max,
                   update_steps_eps=update_steps_eps, normalize_stored_pattern=False,
                   normalize_state_pattern=False, normalize_pattern_projection=False,
                   stored_pattern_as_static=True, state_pattern_as_static=True,
                   pattern_projection_as_static=True, disable_out_projection=True, kernel=kernel, d_phi=d_phi,
                   **kwargs)

    # -- introspection -----------------------------------------------------------------------------------

    @property
    def is_uhop(self) -> bool:
        """True for a kernelized (U-Hop) layer."""
        return self.feature_map is not None

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, num_heads={self.num_heads}, "
                f"pattern_size={self.pattern_size}, output_size={self.output_size}, "
                f"update_steps_max={self.update_steps_max}, kernel={self.kernel_name!r}")

    # -- input handling ------------------------------------------------------------------------------------

    def _unpack(self, input):
        if isinstance(input, torch.Tensor):
            stored = state = projection = input
        elif isinstance(input, (tuple, list)) and len(input) == 3:
            stored, state, projection = input
        else:
            raise TypeError("input must be a tensor (self-association) or a tuple "
                            "(stored_pattern, state_pattern, pattern_projection)")
        for name, x in (("stored_pattern", stored), ("state_pattern", state),
                        ("pattern_projection", projection)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.ndim not in (2, 3):
                raise ValueError(f"{name} must be a 3-D tensor {'(B, N, d)' if self.batch_first else '(N, B, d)'} "
                                 f"or an unbatched 2-D tensor (N, d), got shape {tuple(x.shape)}")
            if not torch.is_floating_point(x):
                raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
        if len({stored.ndim, state.ndim, projection.ndim}) != 1:
            raise ValueError("stored_pattern, state_pattern and pattern_projection must all be batched (3-D) or "
                             "all unbatched (2-D)")
        unbatched = stored.ndim == 2
        if unbatched:
            stored, state, projection = stored[None], state[None], projection[None]
        elif not self.batch_first:
            stored, state, projection = (x.transpose(0, 1) for x in (stored, state, projection))
        for name, x, size, arg in (("stored_pattern", stored, self.stored_pattern_size, "stored_pattern_size"),
                                   ("state_pattern", state, self.input_size, "input_size"),
                                   ("pattern_projection", projection, self.pattern_projection_size,
                                    "pattern_projection_size")):
            if x.shape[-1] != size:
                raise ValueError(f"{name} must have last dimension {arg} = {size}, got {x.shape[-1]} "
                                 f"(shape {tuple(x.shape)})")
        if not (stored.shape[0] == state.shape[0] == projection.shape[0]):
            raise ValueError(f"batch sizes differ: stored_pattern {stored.shape[0]}, state_pattern "
                             f"{state.shape[0]}, pattern_projection {projection.shape[0]}")
        if stored.shape[1] != projection.shape[1]:
            raise ValueError(f"stored_pattern and pattern_projection must hold the same number of patterns, "
                             f"got {stored.shape[1]} and {projection.shape[1]}")
        return stored, state, projection, unbatched

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        return x.view(B, N, self.num_heads, D // self.num_heads).transpose(1, 2)

    def _prepare(self, input):
        stored, state, projection, unbatched = self._unpack(input)
        if self.norm_stored is not None:
            stored = self.norm_stored(stored)
        if self.norm_state is not None:
            state = self.norm_state(state)
        if self.norm_projection is not None:
            projection = self.norm_projection(projection)
        if self._recording:
            self.recorded_stored = stored.detach()
            self.recorded_state = state.detach()
        if self.feature_map is not None:
            stored, state = self.feature_map(stored), self.feature_map(state)
        q = state if self.q_proj is None else self.q_proj(state)
        k = stored if self.k_proj is None else self.k_proj(stored)
        v = projection if self.v_proj is None else self.v_proj(projection)
        return self._heads(q), self._heads(k), self._heads(v), unbatched

    def _mask(self, z, stored_pattern_padding_mask, association_mask):
        mask = None
        if stored_pattern_padding_mask is not None:
            m = stored_pattern_padding_mask.to(torch.bool)
            if m.shape != (z.shape[0], z.shape[-1]):
                raise ValueError(f"stored_pattern_padding_mask must have shape (B, M) = "
                                 f"{(z.shape[0], z.shape[-1])}, got {tuple(m.shape)}")
            mask = m[:, None, None, :]
        if association_mask is not None:
            m = association_mask.to(torch.bool)
            if m.shape[-2:] != z.shape[-2:] or m.ndim not in (2, 3):
                raise ValueError(f"association_mask must have shape (Q, M) = {tuple(z.shape[-2:])} or (B, Q, M), "
                                 f"got {tuple(m.shape)}")
            m = m[None, None] if m.ndim == 2 else m[:, None]
            mask = m if mask is None else (mask | m)
        if mask is None:
            return z
        # A finite fill 1e4 below the smallest score: exactly zero weight for every alpha, and no inf - inf
        # inside the sort-based sparsemax/entmax solvers.
        fill = z.detach().amin(dim=-1, keepdim=True) - 1e4
        return torch.where(mask, fill, z)

    def _associate(self, q, k, masks):
        beta = torch.tensor(self.scaling, dtype=q.dtype, device=q.device).view(1, self.num_heads, 1, 1)
        kt = k.transpose(-1, -2)
        a = self.separation(self._mask(beta * (q @ kt), *masks))
        steps = self.update_steps_max if self.update_steps_max is not None else _MAX_UPDATE_STEPS
        done = 0
        for _ in range(steps):
            q_new = a @ k
            delta = (q_new - q).norm(dim=-1).max()
            q = q_new
            a = self.separation(self._mask(beta * (q @ kt), *masks))
            done += 1
            if bool(delta < self.update_steps_eps):
                break
        self.last_update_steps = done
        return a

    # -- public API ----------------------------------------------------------------------------------------

    def forward(self, input, stored_pattern_padding_mask: torch.Tensor | None = None,
                association_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Retrieve: ``input`` is a tensor (stored = state = projection) or the tuple
        ``(stored_pattern, state_pattern, pattern_projection)``; returns ``(B, Q, output_size)``."""
        q, k, v, unbatched = self._prepare(input)
        a = self._associate(q, k, (stored_pattern_padding_mask, association_mask))
        out = self.dropout(a) @ v                                     # (B, H, Q, dv)
        B, H, Q, dv = out.shape
        out = out.transpose(1, 2).reshape(B, Q, H * dv)
        if self.out_proj is not None:
            out = self.out_proj(out)
        if unbatched:
            return out[0]
        return out if self.batch_first else out.transpose(0, 1)

    def get_association_matrix(self, input, stored_pattern_padding_mask: torch.Tensor | None = None,
                               association_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The association weights ``Sep(beta Q K^T)`` after the update steps: ``(B, H, Q, M)``
        (``(H, Q, M)`` for unbatched input); every ``(..., M)`` row lies on the simplex."""
        q, k, _, unbatched = self._prepare(input)
        a = self._associate(q, k, (stored_pattern_padding_mask, association_mask))
        return a[0] if unbatched else a

    def mapped_stored_pattern(self, stored_pattern: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """``Phi(norm(stored))``: the stored patterns in the kernel's feature space, ``(..., M, D_Phi)``.

        ``normalized=True`` skips the layer's LayerNorm (for patterns recorded during a forward pass,
        which are already normalised).  Needs a U-Hop layer.
        """
        if self.feature_map is None:
            raise ValueError("mapped_stored_pattern needs a U-Hop layer (kernel='linear')")
        x = stored_pattern
        if not normalized and self.norm_stored is not None:
            x = self.norm_stored(x)
        return self.feature_map(x)

    def separation_loss(self, stored_pattern: torch.Tensor, t: float = 2.0, *, loss: str = "dl",
                        normalize: bool = True, pairs: str = "distinct", normalized: bool = False) -> torch.Tensor:
        r"""Separation loss of the mapped stored patterns ``Phi(Xi)``: Definition 3.1 (``loss="dl"``, the
        default, on unit-normalised features) or Definition 2.2 (``loss="def2.2"``).

        ``stored_pattern`` is ``(M, d)`` or a batch of per-sample memory sets ``(B, M, d)``; the loss is
        averaged over the sets.  See :func:`uhop.nn.kernel.dl_separation_loss`.
        """
        feats = self.mapped_stored_pattern(stored_pattern, normalized=normalized)
        return feature_separation_loss(feats, t, loss=loss, normalize=normalize, pairs=pairs)


class UHopfield(Hopfield):
    """:class:`Hopfield` with the U-Hop kernel on (``kernel="linear"``); same arguments."""

    def __init__(self, *args, kernel: str | None = "linear", **kwargs):
        if kernel != "linear":
            raise ValueError(f"UHopfield is the kernelized layer: kernel must be 'linear', got {kernel!r}")
        super().__init__(*args, kernel=kernel, **kwargs)


class HopfieldPooling(nn.Module):
    r"""Pooling by retrieval with learned state (query) patterns.

    ``quantity`` learned queries (initialised ``N(0, 0.02^2)``, like a ViT CLS token) retrieve from the
    input stored patterns ``(B, M, input_size)``; the output is ``(B, quantity * output_size)``
    (``flatten=False``: ``(B, quantity, output_size)``).  Other keywords go to :class:`Hopfield`.
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, output_size: int | None = None,
                 pattern_size: int | None = None, num_heads: int = 1, quantity: int = 1, trainable: bool = True,
                 flatten: bool = True, **kwargs):
        super().__init__()
        self.quantity = check_int(quantity, "quantity", minimum=1)
        self.flatten = _check_bool(flatten, "flatten")
        self.hopfield = Hopfield(input_size, hidden_size, output_size, pattern_size, num_heads, **kwargs)
        pooling = torch.empty(1, self.quantity, input_size)
        nn.init.trunc_normal_(pooling, std=0.02)
        self.pooling_weights = nn.Parameter(pooling, requires_grad=_check_bool(trainable, "trainable"))

    @property
    def is_uhop(self) -> bool:
        return self.hopfield.is_uhop

    def _tuple(self, input):
        (state,) = _learned_like(input, self.hopfield.batch_first, "stored patterns", "M", self.pooling_weights)
        return (input, state, input)

    def forward(self, input: torch.Tensor, **masks) -> torch.Tensor:
        out = self.hopfield(self._tuple(input), **masks)
        if not self.hopfield.batch_first and out.ndim == 3:
            out = out.transpose(0, 1)
        if self.flatten:
            return out.reshape(*out.shape[:-2], -1)
        return out

    def get_association_matrix(self, input: torch.Tensor, **masks) -> torch.Tensor:
        return self.hopfield.get_association_matrix(self._tuple(input), **masks)


def _learned_like(input, batch_first: bool, what: str, rows: str, *learned: torch.Tensor) -> list[torch.Tensor]:
    """Check ``input`` (``(B, rows, d)``, or ``(rows, d)`` unbatched) and give each learned ``(1, N, .)`` pattern
    set in its layout: ``(N, .)`` unbatched, ``(B, N, .)`` batch-first, else ``(N, B, .)``; in its dtype.
    Shared by :class:`HopfieldPooling` (learned queries) and :class:`HopfieldLayer` (learned memories)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of {what}, got {type(input).__name__}")
    if input.ndim not in (2, 3):
        raise ValueError(f"input must be (B, {rows}, input_size) or ({rows}, input_size), got shape {tuple(input.shape)}")
    if input.ndim == 2:
        return [p[0].to(input.dtype) for p in learned]
    b = input.shape[0] if batch_first else input.shape[1]
    out = [p.expand(b, -1, -1).to(input.dtype) for p in learned]
    return out if batch_first else [p.transpose(0, 1) for p in out]


class HopfieldLayer(nn.Module):
    r"""Retrieval from learned stored patterns: a trainable lookup table.

    The input state patterns ``(B, Q, input_size)`` retrieve from ``quantity`` learned stored patterns
    (``N(0, 0.02^2)`` init).  The retrieved values come from the same patterns, or from separate learned
    targets when ``lookup_weights_as_separated=True``.  Output ``(B, Q, output_size)``.
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, output_size: int | None = None,
                 pattern_size: int | None = None, num_heads: int = 1, quantity: int = 1,
                 lookup_weights_as_separated: bool = False, lookup_targets_as_trainable: bool = True, **kwargs):
        super().__init__()
        self.quantity = check_int(quantity, "quantity", minimum=1)
        self.hopfield = Hopfield(input_size, hidden_size, output_size, pattern_size, num_heads, **kwargs)
        w = torch.empty(1, self.quantity, input_size)
        nn.init.trunc_normal_(w, std=0.02)
        self.lookup_weights = nn.Parameter(w)
        if _check_bool(lookup_weights_as_separated, "lookup_weights_as_separated"):
            targets = torch.empty(1, self.quantity, self.hopfield.pattern_projection_size)
            nn.init.trunc_normal_(targets, std=0.02)
            self.lookup_targets = nn.Parameter(
                targets, requires_grad=_check_bool(lookup_targets_as_trainable, "lookup_targets_as_trainable"))
        else:
            if self.hopfield.pattern_projection_size != input_size:
                raise ValueError("pattern_projection_size must equal input_size unless lookup_weights_as_separated")
            self.lookup_targets = None

    @property
    def is_uhop(self) -> bool:
        return self.hopfield.is_uhop

    def _tuple(self, input):
        learned = (self.lookup_weights,) if self.lookup_targets is None else (self.lookup_weights, self.lookup_targets)
        stored, *targets = _learned_like(input, self.hopfield.batch_first, "state patterns", "Q", *learned)
        return (stored, input, targets[0] if targets else stored)

    def forward(self, input: torch.Tensor, **masks) -> torch.Tensor:
        return self.hopfield(self._tuple(input), **masks)

    def get_association_matrix(self, input: torch.Tensor, **masks) -> torch.Tensor:
        return self.hopfield.get_association_matrix(self._tuple(input), **masks)


def hopfield_layers(model: nn.Module, uhop_only: bool = False) -> list[Hopfield]:
    """All :class:`Hopfield` modules of ``model`` (only the kernelized ones with ``uhop_only``)."""
    return [m for m in model.modules() if isinstance(m, Hopfield) and (m.is_uhop or not uhop_only)]


@contextmanager
def record_stored_patterns(model: nn.Module) -> Iterator[list[Hopfield]]:
    """Within the block, every U-Hop layer of ``model`` keeps the (normalised, detached) stored and state
    patterns of its last forward pass in ``layer.recorded_stored`` / ``layer.recorded_state``."""
    layers = hopfield_layers(model, uhop_only=True)
    for layer in layers:
        layer._recording = True
    try:
        yield layers
    finally:
        for layer in layers:
            layer._recording = False
