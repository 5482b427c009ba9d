"""The Hopfield layer, :class:`Hopfield` (and :class:`UHopfield`, the same layer with U-Hop's kernel on): its
arguments, parameters and forward pass.  :mod:`uhop.nn.layers` describes the layers and where they differ from
``hflayers``."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_bool, check_choice, check_int, check_positive, check_real
from ..loss import feature_separation_loss
from .arguments import (INIT_STD, INITS, KERNELS, MAX_UPDATE_STEPS, affine_flag, optional_int, per_head,
                        update_steps)
from .dropout import Dropout
from .inputs import association_masks, unpack_patterns
from .kernel import FeatureMap
from .properties import HopfieldProperties
from .separation import make_separation

__all__ = ["Hopfield", "UHopfield"]


class Hopfield(HopfieldProperties, nn.Module):
    r"""A modern Hopfield layer (Ramsauer et al., 2021), optionally kernelized by U-Hop.

    The positional order and the meaning of the arguments up to ``disable_out_projection`` are those of
    ``hflayers.Hopfield``; ``separation`` and the later arguments are keyword-only additions.

    Args:
        input_size: size of the state patterns (queries); also the default stored / projection / output size.
        hidden_size: size of the association space **per head** (default ``input_size // num_heads``; the
            static pattern's size when state or stored patterns are static).
        output_size: size of the output (default ``input_size``; with ``disable_out_projection`` the output is
            the concatenated heads, ``num_heads * pattern_size``).
        pattern_size: size of each head's values (default ``hidden_size``).
        num_heads: number of heads.
        scaling: beta, the inverse temperature inside Sep: a float, or one float per head (sequence or 1-D
            tensor); default ``1/sqrt(hidden_size)``, and 1 when every pattern is static without output
            projection (pure retrieval).
        update_steps_max: extra retrieval steps after the first association (0: one step, as in attention;
            ``None``: until convergence, at most 1000); an int or one per head (a negative tensor entry means
            ``None``, as in hflayers).
        update_steps_eps: a head stops once its association moved by at most this much in one step (the
            Frobenius norm over queries and stored patterns, the largest over the batch); one or one per head.
        normalize_stored_pattern / normalize_state_pattern / normalize_pattern_projection: LayerNorm on each
            input; ``..._affine``: with learnable scale and shift (default: when normalised); ``..._eps``: the
            LayerNorm's eps.
        normalize_hopfield_space: LayerNorm over each head's projected queries and keys (shared by the heads and
            by queries and keys); ``..._affine``, ``..._eps`` as above (affine off by default, as in hflayers).
        stored_pattern_as_static / state_pattern_as_static / pattern_projection_as_static: skip the
            corresponding projection; a static state or stored pattern is in one head's association space and
            is shared by all heads.  Static values are shared by the heads too, except when the stored patterns
            are static or the values are connected: then they are split over the heads (as hflayers does).
        pattern_projection_as_connected: the values first go through the stored patterns' map (``W_K``, and
            ``Phi`` for U-Hop), then through their own projection.
        stored_pattern_size / pattern_projection_size: sizes of the stored and projection inputs
            (default ``input_size``).
        batch_first: inputs are ``(B, N, d)``; else ``(N, B, d)``.
        association_activation: name of a ``torch`` function applied to the output (e.g. ``"tanh"``).
        dropout: dropout on the association weights.
        input_bias: biases in the projections (input and output, as in hflayers).
        concat_bias_pattern: append one learned key and one learned value pattern per head to the stored
            patterns (needs projected stored patterns and values).
        add_zero_association: append a zero key and value per head (a query can then retrieve "nothing").
        disable_out_projection: no output projection (heads are only concatenated).
        separation: ``"softmax"`` (MHM), ``"sparsemax"`` (sparse MHM), ``"entmax15"``, a float alpha in [1, 2],
            or ``"learnable"`` (alpha = 1 + sigmoid(a) per head, initialised at ``alpha_init``).
        alpha_init: initial alpha for ``separation="learnable"``, in (1, 2].
        kernel: ``None`` (dot product) or ``"linear"`` (U-Hop: learnable ``Phi(u) = W u`` on state and stored
            patterns, Eq (2.1)).
        d_phi: feature dimension D_Phi (default: the stored pattern size).
        kernel_normalize_rows: keep the rows of W at unit norm (Algorithm 1, line 4).
        kernel_init: ``"identity"`` (the layer starts as the plain Hopfield layer) or ``"normal"``.
        kernel_bias: affine Phi (as in the official code) instead of the paper's linear Phi.
        init: ``"hflayers"`` (default: projections ``N(0, 0.02^2)``, biases 0) or ``"pytorch"``
            (``nn.Linear``'s default; see :data:`INITS`).

    Masks (``forward``): ``stored_pattern_padding_mask`` ``(B, M)`` and ``association_mask`` ``(Q, M)`` or
    ``(B * num_heads, Q, M)`` are bool (True = masked) or float (added to ``beta * scores``; ``-inf`` masks).
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None,
                 output_size: int | None = None, pattern_size: int | None = None, num_heads: int = 1,
                 scaling=None, update_steps_max=0, update_steps_eps=1e-4,
                 normalize_stored_pattern: bool = True, normalize_stored_pattern_affine: bool | None = None,
                 normalize_stored_pattern_eps: float = 1e-5,
                 normalize_state_pattern: bool = True, normalize_state_pattern_affine: bool | None = None,
                 normalize_state_pattern_eps: float = 1e-5,
                 normalize_pattern_projection: bool = True, normalize_pattern_projection_affine: bool | None = None,
                 normalize_pattern_projection_eps: float = 1e-5,
                 normalize_hopfield_space: bool = False, normalize_hopfield_space_affine: bool = False,
                 normalize_hopfield_space_eps: float = 1e-5,
                 stored_pattern_as_static: bool = False, state_pattern_as_static: bool = False,
                 pattern_projection_as_static: bool = False, pattern_projection_as_connected: bool = False,
                 stored_pattern_size: int | None = None, pattern_projection_size: int | None = None,
                 batch_first: bool = True, association_activation: str | None = None, dropout: float = 0.0,
                 input_bias: bool = True, concat_bias_pattern: bool = False, add_zero_association: bool = False,
                 disable_out_projection: bool = False, *,
                 separation="softmax", alpha_init: float = 1.5, kernel: str | None = None, d_phi: int | None = None,
                 kernel_normalize_rows: bool = False, kernel_init: str = "identity", kernel_bias: bool = False,
                 init: str = "hflayers"):
        super().__init__()
        if input_size is None:
            raise ValueError("input_size must be given (the size of the state patterns; hflayers can infer it "
                             "when every pattern is static, uhop.nn checks every size when the layer is built)")
        self.input_size = check_int(input_size, "input_size", minimum=1)
        self.stored_pattern_size = optional_int(stored_pattern_size, "stored_pattern_size") or self.input_size
        self.pattern_projection_size = (optional_int(pattern_projection_size, "pattern_projection_size")
                                        or self.input_size)
        self.num_heads = H = check_int(num_heads, "num_heads", minimum=1)
        for name in ("normalize_stored_pattern", "normalize_state_pattern", "normalize_pattern_projection",
                     "normalize_hopfield_space", "normalize_hopfield_space_affine", "batch_first",
                     "stored_pattern_as_static", "state_pattern_as_static", "pattern_projection_as_static",
                     "pattern_projection_as_connected", "disable_out_projection", "input_bias",
                     "concat_bias_pattern", "add_zero_association", "kernel_normalize_rows", "kernel_bias"):
            check_bool(locals()[name], name)
        self.init = check_choice(init, "init", INITS)
        self.batch_first = batch_first
        self.stored_pattern_as_static = stored_pattern_as_static
        self.state_pattern_as_static = state_pattern_as_static
        self.pattern_projection_as_static = pattern_projection_as_static
        self.pattern_projection_as_connected = pattern_projection_as_connected
        self.add_zero_association = add_zero_association
        self.concat_bias_pattern = concat_bias_pattern
        self.input_bias = input_bias
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; valid kernel values: None, 'linear'")
        self.kernel_name = kernel
        norm_affine = {
            "stored": affine_flag(normalize_stored_pattern_affine, normalize_stored_pattern,
                              "normalize_stored_pattern_affine"),
            "state": affine_flag(normalize_state_pattern_affine, normalize_state_pattern,
                             "normalize_state_pattern_affine"),
            "projection": affine_flag(normalize_pattern_projection_affine, normalize_pattern_projection,
                                  "normalize_pattern_projection_affine"),
        }
        if normalize_hopfield_space_affine and not normalize_hopfield_space:
            raise ValueError("normalize_hopfield_space_affine=True needs normalize_hopfield_space=True")
        norm_eps = {k: check_positive(v, f"normalize_{n}_eps") for k, n, v in (
            ("stored", "stored_pattern", normalize_stored_pattern_eps),
            ("state", "state_pattern", normalize_state_pattern_eps),
            ("projection", "pattern_projection", normalize_pattern_projection_eps),
            ("hopfield", "hopfield_space", normalize_hopfield_space_eps))}
        if pattern_projection_as_connected and self.pattern_projection_size != self.stored_pattern_size:
            raise ValueError(f"pattern_projection_as_connected=True sends the pattern projections through the stored "
                             f"patterns' map, so pattern_projection_size ({self.pattern_projection_size}) must equal "
                             f"stored_pattern_size ({self.stored_pattern_size})")

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

        # Association space of one head.
        if hidden_size is not None:
            head = check_int(hidden_size, "hidden_size", minimum=1)
        elif state_pattern_as_static:
            head = query_in
        elif stored_pattern_as_static:
            head = key_in
        else:
            if self.input_size % H:
                raise ValueError(f"input_size ({self.input_size}) must be divisible by num_heads ({H}) for the "
                                 f"default hidden_size = input_size // num_heads; or pass hidden_size (per head)")
            head = self.input_size // H
        for static, size, what in ((state_pattern_as_static, query_in, "state"),
                                   (stored_pattern_as_static, key_in, "stored")):
            if static and head != size:
                raise ValueError(f"hidden_size (per head) must be {size} with static {what} patterns (a static "
                                 f"pattern is used as it is, in every head), got {head}")
        if state_pattern_as_static and stored_pattern_as_static and key_in != query_in:
            raise ValueError(f"static stored ({key_in}) and state ({query_in}) patterns must have the same size")
        self.hidden_size = head

        # Values of one head.
        connected_key = pattern_projection_as_connected and not stored_pattern_as_static
        value_in = H * head if connected_key else (key_in if pattern_projection_as_connected
                                                   else self.pattern_projection_size)
        self._split_static_values = stored_pattern_as_static or pattern_projection_as_connected
        if pattern_projection_as_static:
            if self._split_static_values:
                if value_in % H:
                    raise ValueError(f"static pattern projections are split over the heads here, so their size "
                                     f"({value_in}) must be divisible by num_heads ({H})")
                value = value_in // H
            else:
                value = value_in
            if pattern_size is not None and check_int(pattern_size, "pattern_size", minimum=1) != value:
                raise ValueError(f"pattern_size (per head) must be None or {value} with static pattern "
                                 f"projections, got {pattern_size}")
        else:
            value = head if pattern_size is None else check_int(pattern_size, "pattern_size", minimum=1)
        self.pattern_size = value

        if disable_out_projection:
            if output_size is not None and check_int(output_size, "output_size", minimum=1) != H * value:
                raise ValueError(f"output_size must be None or num_heads * pattern_size = {H * value} with "
                                 f"disable_out_projection=True (the heads are only concatenated), got {output_size}")
            self.output_size = H * value
        else:
            self.output_size = self.input_size if output_size is None else check_int(output_size, "output_size",
                                                                                       minimum=1)
        if concat_bias_pattern and (stored_pattern_as_static or pattern_projection_as_static):
            raise ValueError("concat_bias_pattern=True appends learned patterns in the projected spaces, so it needs "
                             "stored_pattern_as_static=False and pattern_projection_as_static=False")

        # Modules, in the order that fixes the random draws of init="pytorch" (nn.Linear draws when built).
        self.norm_stored = (nn.LayerNorm(self.stored_pattern_size, eps=norm_eps["stored"],
                                         elementwise_affine=norm_affine["stored"])
                            if normalize_stored_pattern else None)
        self.norm_state = (nn.LayerNorm(self.input_size, eps=norm_eps["state"],
                                        elementwise_affine=norm_affine["state"])
                           if normalize_state_pattern else None)
        self.norm_projection = (nn.LayerNorm(self.pattern_projection_size, eps=norm_eps["projection"],
                                             elementwise_affine=norm_affine["projection"])
                                if normalize_pattern_projection else None)
        self.q_proj = None if state_pattern_as_static else nn.Linear(query_in, H * head, bias=input_bias)
        self.k_proj = None if stored_pattern_as_static else nn.Linear(key_in, H * head, bias=input_bias)
        self.v_proj = (None if pattern_projection_as_static
                       else nn.Linear(value_in, H * value, bias=input_bias))
        self.out_proj = None if disable_out_projection else nn.Linear(H * value, self.output_size, bias=input_bias)
        self.norm_hopfield_space = (nn.LayerNorm(head, eps=norm_eps["hopfield"],
                                                 elementwise_affine=normalize_hopfield_space_affine)
                                    if normalize_hopfield_space else None)
        if concat_bias_pattern:
            self.key_bias_pattern = nn.Parameter(torch.empty(H, 1, head))
            self.value_bias_pattern = nn.Parameter(torch.empty(H, 1, value))
            for p in (self.key_bias_pattern, self.value_bias_pattern):
                nn.init.normal_(p, std=INIT_STD)
        else:
            self.key_bias_pattern = self.value_bias_pattern = None

        static_execution = (stored_pattern_as_static and state_pattern_as_static and pattern_projection_as_static
                            and disable_out_projection and not normalize_hopfield_space
                            and not pattern_projection_as_connected)
        if scaling is None:
            betas = (1.0 if static_execution else 1.0 / math.sqrt(head),) * H
        else:
            betas = per_head(scaling, "scaling", H, lambda b: check_positive(b, "scaling"))
        # Python floats, not a buffer: a float32 buffer would round beta before a .double() conversion.
        self._betas: tuple[float, ...] = betas
        if isinstance(update_steps_max, torch.Tensor):
            steps = per_head(update_steps_max, "update_steps_max", H, lambda s: update_steps(s, from_tensor=True))
        else:
            steps = per_head(update_steps_max, "update_steps_max", H, update_steps)
        self._steps_max: tuple[int | None, ...] = steps
        self._steps_eps: tuple[float, ...] = per_head(update_steps_eps, "update_steps_eps", H,
                                                       lambda e: check_positive(e, "update_steps_eps"))
        p = check_real(dropout, "dropout")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {p}")
        self.dropout = Dropout(p)
        if association_activation is not None:
            fn = getattr(torch, association_activation, None) if isinstance(association_activation, str) else None
            if not callable(fn):
                raise ValueError(f"association_activation must name a torch function (e.g. 'tanh', 'relu'), got "
                                 f"{association_activation!r}")
        self.association_activation = association_activation
        self.separation = make_separation(separation, H, alpha_init)
        self._recording = False
        self.recorded_stored: torch.Tensor | None = None
        self.recorded_state: torch.Tensor | None = None
        self.last_update_steps: int | None = None
        self.last_update_steps_per_head: tuple[int, ...] | None = None
        if self.init == "hflayers":
            self._init_projections()

    # -- initialisation ------------------------------------------------------------------------------------

    def _init_projections(self) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if lin is None:
                continue
            if self.init == "pytorch":
                lin.reset_parameters()
            else:
                with torch.no_grad():
                    nn.init.normal_(lin.weight, std=INIT_STD)
                    if lin.bias is not None:
                        lin.bias.zero_()

    def reset_parameters(self) -> None:
        """Draw the projections, bias patterns and feature map afresh and reset the LayerNorms (as at
        construction, with this layer's ``init``); a learnable alpha keeps its value."""
        for norm in (self.norm_stored, self.norm_state, self.norm_projection, self.norm_hopfield_space):
            if norm is not None:
                norm.reset_parameters()
        if self.feature_map is not None:
            fm = self.feature_map
            fresh = FeatureMap(fm.d, fm.d_phi, init=fm.init, normalize_rows=fm.normalize_rows,
                               bias=fm.bias is not None)
            fm.load_state_dict(fresh.state_dict())
        self._init_projections()
        for p in (self.key_bias_pattern, self.value_bias_pattern):
            if p is not None:
                nn.init.normal_(p, std=INIT_STD)

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

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, num_heads={self.num_heads}, "
                f"pattern_size={self.pattern_size}, output_size={self.output_size}, "
                f"update_steps_max={self.update_steps_max}, kernel={self.kernel_name!r}")

    # -- input handling ------------------------------------------------------------------------------------

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        return x.view(B, N, self.num_heads, D // self.num_heads).transpose(1, 2)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        """A static pattern set (B, N, d) seen by every head: (B, H, N, d) without a copy."""
        return x.unsqueeze(1).expand(-1, self.num_heads, -1, -1)

    def _prepare(self, input):
        stored, state, projection, unbatched = unpack_patterns(self, input)
        if self.norm_stored is not None:
            stored = self.norm_stored(stored)
        if self.norm_state is not None:
            state = self.norm_state(state)
        if self.norm_projection is not None:
            projection = self.norm_projection(projection)
        if self._recording:
            self.recorded_stored = stored.detach()
            self.recorded_state = state.detach()
        if self.pattern_projection_as_connected:
            if self.feature_map is not None:
                projection = self.feature_map(projection)
            if self.k_proj is not None:
                projection = self.k_proj(projection)
        if self.feature_map is not None:
            stored, state = self.feature_map(stored), self.feature_map(state)
        q = self._shared(state) if self.q_proj is None else self._heads(self.q_proj(state))
        k = self._shared(stored) if self.k_proj is None else self._heads(self.k_proj(stored))
        if self.v_proj is not None:
            v = self._heads(self.v_proj(projection))
        else:
            v = self._heads(projection) if self._split_static_values else self._shared(projection)
        if self.norm_hopfield_space is not None:
            q, k = self.norm_hopfield_space(q), self.norm_hopfield_space(k)
        B = k.shape[0]
        extra_k, extra_v = [], []
        if self.key_bias_pattern is not None:
            extra_k.append(self.key_bias_pattern.to(k.dtype).expand(B, -1, -1, -1))
            extra_v.append(self.value_bias_pattern.to(v.dtype).expand(B, -1, -1, -1))
        if self.add_zero_association:
            extra_k.append(k.new_zeros(B, self.num_heads, 1, k.shape[-1]))
            extra_v.append(v.new_zeros(B, self.num_heads, 1, v.shape[-1]))
        if extra_k:
            k, v = torch.cat([k, *extra_k], dim=2), torch.cat([v, *extra_v], dim=2)
        return q, k, v, unbatched, stored.shape[1]

    @staticmethod
    def _apply_masks(z, add, masked):
        if add is not None:
            z = z + add
        if masked is None:
            return z
        # A finite fill 1e4 below the smallest score: exactly zero weight for every alpha, and no inf - inf
        # inside the sort-based sparsemax/entmax solvers.
        fill = z.detach().amin(dim=-1, keepdim=True) - 1e4
        return torch.where(masked, fill, z)

    def _associate(self, q, k, masks):
        beta = torch.tensor(self._betas, dtype=q.dtype, device=q.device).view(1, self.num_heads, 1, 1)
        kt = k.transpose(-1, -2)

        def associate(query):
            return self.separation(self._apply_masks(beta * (query @ kt), *masks))

        a = associate(q)
        H = self.num_heads
        limits = [MAX_UPDATE_STEPS if n is None else n for n in self._steps_max]
        done = [0] * H
        if max(limits) > 0 and a.shape[0] > 0:
            # Per-head iteration (as hflayers): head h runs step s (new state A K, new association) while
            # s <= its limit and its association moved by more than its eps in step s - 1 (the Frobenius norm
            # over (Q, M), the largest over the batch).  A stopped head keeps its association.
            limit = torch.tensor(limits, device=q.device)
            eps = torch.tensor(self._steps_eps, dtype=a.dtype, device=q.device)
            active = limit > 0
            step = 0
            while bool(active.any()):
                step += 1
                a_new = associate(a @ k)
                with torch.no_grad():
                    moved = (a_new - a).flatten(2).norm(dim=-1).amax(dim=0)
                a = a_new if bool(active.all()) else torch.where(active.view(1, H, 1, 1), a_new, a)
                done = [d + int(x) for d, x in zip(done, active.tolist())]
                active = active & (moved > eps) & (step < limit)
        self.last_update_steps = max(done)
        self.last_update_steps_per_head = tuple(done)
        return a

    # -- public API ----------------------------------------------------------------------------------------

    def _run(self, input, stored_pattern_padding_mask, association_mask):
        q, k, v, unbatched, M = self._prepare(input)
        masks = (None, None)
        if stored_pattern_padding_mask is not None or association_mask is not None:
            masks = association_masks(self, stored_pattern_padding_mask, association_mask, q.shape[0], q.shape[2],
                                      M, k.shape[2], q.dtype, q.device)
        return self._associate(q, k, masks), v, unbatched

    def forward(self, input, stored_pattern_padding_mask: torch.Tensor | None = None,
                association_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Retrieve: ``input`` is a tensor (stored = state = projection) or the tuple
        ``(stored_pattern, state_pattern, pattern_projection)``; returns ``(B, Q, output_size)``."""
        a, v, unbatched = self._run(input, stored_pattern_padding_mask, association_mask)
        out = self.dropout(a) @ v                                     # (B, H, Q, dv)
        B, H, Q, dv = out.shape
        out = out.transpose(1, 2).reshape(B, Q, H * dv)
        if self.out_proj is not None:
            out = self.out_proj(out)
        if self.association_activation is not None:
            out = getattr(torch, self.association_activation)(out)
        if unbatched:
            return out[0]
        return out if self.batch_first else out.transpose(0, 1)

    def get_association_matrix(self, input, stored_pattern_padding_mask: torch.Tensor | None = None,
                               association_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The association weights ``Sep(beta Q K^T)`` after the update steps: ``(B, H, Q, M)``
        (``(H, Q, M)`` for unbatched input); every ``(..., M)`` row lies on the simplex."""
        a, _, unbatched = self._run(input, stored_pattern_padding_mask, association_mask)
        return a[0] if unbatched else a

    def get_projected_pattern_matrix(self, input, stored_pattern_padding_mask: torch.Tensor | None = None,
                                     association_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The values each head retrieves, ``V``: ``(B, H, M, pattern_size)`` (``(H, M, .)`` unbatched).
        The masks are accepted for hflayers' signature; they do not change ``V``."""
        _, _, v, unbatched, _ = self._prepare(input)
        return v[0] if unbatched else v

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
        averaged over the sets.  See :func:`uhop.loss.dl_separation_loss`.
        """
        feats = self.mapped_stored_pattern(stored_pattern, normalized=normalized)
        return feature_separation_loss(feats, t, loss=loss, normalize=normalize, pairs=pairs)


class UHopfield(Hopfield):
    """:class:`Hopfield` with the U-Hop kernel on (``kernel="linear"``); same arguments."""

    def __init__(self, *args, kernel: str | None = "linear", **kwargs):
        if kernel != "linear":
            raise ValueError(f"UHopfield is the kernelized layer: kernel must be 'linear', got {kernel!r}")
        super().__init__(*args, kernel=kernel, **kwargs)
