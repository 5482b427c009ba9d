r"""STanHop-Net for multivariate forecasting, with and without U-Hop -- **the companion's own construction**.

STanHop-Net (Wu et al., ICLR 2024, ``wu2024stanhop``) is the test-bed of Section 4.2 / App F.5 of the U-Hop
paper.  No U-Hop x STanHop code was published (the STanHop repository has no separation-loss code at all), so
everything below is written from the papers' descriptions and the architecture facts of the official STanHop
code (which follows Crossformer's layout); no code was copied.  Where a choice is ours it says so.

Data flow (``x``: ``(B, L_in, C)`` standardised look-back window -> ``(B, horizon, C)``)::

    pad L_in to a multiple of seg_len (repeat the first row)          # Crossformer/STanHop code
    segment embedding: each channel's seg_len-row segment -> d_model   # "patch embedding", shared Linear
      + learned position embedding (per channel and segment), LayerNorm
    encoder: n_blocks STanHop blocks                                   # 1 for horizons <= 192, 2 otherwise (F.5)
      block 0 at the finest resolution; block i >= 1 first coarse-grains (merges win_size neighbouring
      segments: concat -> LayerNorm -> Linear), then one tandem Hopfield layer
    decoder: n_blocks + 1 layers, one per encoder resolution (the embedding + each block's output)
      learned decoder queries (per channel and output segment)
      each layer: tandem Hopfield layer on the queries, cross-time Hopfield retrieval from that
      resolution's encoder output, MLP, Linear(d_model -> seg_len); the layers' predictions are summed

Tandem Hopfield layer (the "STHM" layer; Eq. of the STanHop paper's GSH layer, our post-norm wiring):

1. across time: every channel's segments attend to each other -- ``Hopfield`` self-retrieval over the
   ``L`` segments of one channel; residual + LayerNorm, MLP, residual + LayerNorm;
2. across series: ``factor`` learned pooling patterns retrieve from the ``C`` channel tokens of one segment
   (``HopfieldPooling``; **initialised** ``N(0, 0.02^2)`` by :mod:`uhop.nn` -- the official code leaves them
   ``torch.empty``), then the channel tokens retrieve from those ``factor`` pooled patterns (``Hopfield`` with
   stored = values = pooled patterns: the values really are used, unlike the official ``Hopfield.forward``
   which ignores its ``values`` argument); residual + LayerNorm, MLP, residual + LayerNorm.

Every Hopfield layer uses alpha-entmax with a **learnable alpha = 1 + sigmoid(a)** (one per head, initial
``alpha_init``), i.e. the generalized sparse Hopfield (GSH) model; STanHop's code shares one alpha over the
heads.  With ``uhop=True`` every Hopfield layer is U-Hop's kernelized layer (Section 3):
``Sep(beta W_K Phi(Xi) W_Q Phi(x)) W_V Xi`` with a learnable linear ``Phi`` (Eq 2.1) on its stored and state
patterns, initialised to the identity so that the U-Hop model starts as the plain one (same seed -> same
weights); Algorithm 2 then trains ``Phi`` with inner SGD steps on the separation loss of each layer's stored
patterns (see :mod:`uhop.experiments.forecasting` and :func:`uhop.nn.separation_step`).

Omitted: STanHop's external memory plug-ins (Plug-and-Play / Tune-and-Play), which the official code does
not contain either.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_int
from ..nn import Hopfield, HopfieldPooling
from ..nn.dropout import Dropout

__all__ = ["STanHopNet", "TandemHopfieldLayer", "CoarseGrain", "SegmentEmbedding", "blocks_for_horizon",
           "DEFAULTS"]

#: Architecture defaults and their source.  paper = U-Hop Table 7; code = the STanHop example config
#: (``config/data_out_len.json``) or code defaults; ours = not specified anywhere.
DEFAULTS = {
    "seg_len": 12,        # paper (Table 7, "patch sequence length")
    "win_size": 2,        # paper (Table 7, "window size"); the code example uses 4
    "d_model": 256,       # paper (Table 7, "embedding dimension")
    "n_heads": 4,         # code
    "d_ff": 512,          # code
    "factor": 10,         # code (number of learned pooling patterns)
    "dropout": 0.3,       # code (example config)
    "alpha_init": 1.5,    # ours (the learnable alpha starts at entmax15)
}


def blocks_for_horizon(horizon: int) -> int:
    """Number of STanHop blocks (encoder scales): 1 for horizons 96 and 192, 2 for 336 and 720 (App F.5).

    Other horizons: 1 up to 192, 2 above (our extrapolation of the rule).
    """
    horizon = check_int(horizon, "horizon", minimum=1)
    return 1 if horizon <= 192 else 2


def _mlp(d_model: int, d_ff: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), Dropout(dropout), nn.Linear(d_ff, d_model))


class SegmentEmbedding(nn.Module):
    """Cut each channel into segments of ``seg_len`` rows and embed each segment with one shared Linear.

    ``(B, L, C)`` -> ``(B, C, L // seg_len, d_model)``; ``L`` must be a multiple of ``seg_len`` (the model
    pads before calling this).
    """

    def __init__(self, seg_len: int, d_model: int):
        super().__init__()
        self.seg_len = seg_len
        self.linear = nn.Linear(seg_len, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        segs = x.transpose(1, 2).reshape(B, C, L // self.seg_len, self.seg_len)
        return self.linear(segs)


class CoarseGrain(nn.Module):
    """Merge ``win_size`` neighbouring segments into one: concat -> LayerNorm -> Linear (``(B, C, L, d)`` ->
    ``(B, C, ceil(L / win_size), d)``).  A ragged end is padded by repeating the last segments."""

    def __init__(self, d_model: int, win_size: int):
        super().__init__()
        self.win_size = win_size
        self.norm = nn.LayerNorm(win_size * d_model)
        self.linear = nn.Linear(win_size * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.win_size
        pad = (-x.shape[2]) % w
        if pad:
            x = torch.cat([x, x[:, :, -pad:, :]], dim=2)
        merged = torch.cat([x[:, :, i::w, :] for i in range(w)], dim=-1)
        return self.linear(self.norm(merged))


def _hopfield_kwargs(d_model: int, n_heads: int, separation, alpha_init: float, uhop: bool,
                     kernel_normalize_rows: bool) -> dict:
    # Explicit per-head sizes (d_model split over the heads) and init="pytorch" (nn.Linear's initialisation,
    # truncated-normal pooling patterns): the layers the committed runs were trained with.
    return dict(hidden_size=d_model // n_heads, output_size=d_model, pattern_size=d_model // n_heads,
                num_heads=n_heads, separation=separation, alpha_init=alpha_init,
                kernel="linear" if uhop else None, kernel_normalize_rows=kernel_normalize_rows, init="pytorch")


class TandemHopfieldLayer(nn.Module):
    r"""STanHop's tandem layer: sparse Hopfield retrieval across time, then across series (see module doc).

    ``forward(x)``: ``(B, C, L, d_model)`` -> same shape.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, factor: int, dropout: float, **hopfield):
        super().__init__()
        self.time = Hopfield(d_model, **hopfield)
        self.pool = HopfieldPooling(d_model, quantity=factor, flatten=False, **hopfield)
        self.series = Hopfield(d_model, **hopfield)
        self.drop = Dropout(dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(4))
        self.mlp_time = _mlp(d_model, d_ff, dropout)
        self.mlp_series = _mlp(d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, L, d = x.shape
        t = x.reshape(B * C, L, d)
        t = self.norms[0](t + self.drop(self.time(t)))
        t = self.norms[1](t + self.drop(self.mlp_time(t)))
        s = t.reshape(B, C, L, d).transpose(1, 2).reshape(B * L, C, d)
        pooled = self.pool(s)                                   # (B*L, factor, d)
        s = self.norms[2](s + self.drop(self.series((pooled, s, pooled))))
        s = self.norms[3](s + self.drop(self.mlp_series(s)))
        return s.reshape(B, L, C, d).transpose(1, 2)


class _EncoderBlock(nn.Module):
    def __init__(self, merge: CoarseGrain | None, layer: TandemHopfieldLayer):
        super().__init__()
        self.merge = merge
        self.layer = layer

    def forward(self, x):
        if self.merge is not None:
            x = self.merge(x)
        return self.layer(x)


class _DecoderLayer(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, factor, dropout, seg_len, **hopfield):
        super().__init__()
        self.self_layer = TandemHopfieldLayer(d_model, n_heads, d_ff, factor, dropout, **hopfield)
        self.cross = Hopfield(d_model, **hopfield)
        self.drop = Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = _mlp(d_model, d_ff, dropout)
        self.predict = nn.Linear(d_model, seg_len)

    def forward(self, x, memory, self_out=None):
        B, C, Lo, d = x.shape
        x = self.self_layer(x) if self_out is None else self_out
        q = x.reshape(B * C, Lo, d)
        m = memory.reshape(B * C, memory.shape[2], d)
        y = self.norm1(q + self.drop(self.cross((m, q, m))))
        y = self.norm2(y + self.drop(self.mlp(y)))
        return y.reshape(B, C, Lo, d), self.predict(y).reshape(B, C, -1)


class STanHopNet(nn.Module):
    r"""STanHop-Net (our construction after Wu et al., 2024), optionally with U-Hop kernels.

    Args:
        n_vars: number of channels ``C`` (7 for ETT, 12 for WTH with ``features="M"``).
        input_len: look-back length ``L_in`` (padded at the front to a multiple of ``seg_len``).
        horizon: forecast length.
        n_blocks: STanHop blocks; default :func:`blocks_for_horizon` (1 for 96/192, 2 for 336/720).
        seg_len, win_size, d_model, n_heads, d_ff, factor, dropout: see :data:`DEFAULTS` for values and sources.
        separation: the Hopfield layers' separation map; default ``"learnable"`` (alpha = 1 + sigmoid(a) per
            head, the generalized sparse Hopfield model); any value :class:`uhop.nn.Hopfield` accepts.
        alpha_init: initial alpha of the learnable map, in (1, 2].
        uhop: kernelize every Hopfield layer with a learnable ``Phi`` (U-Hop, Section 3).
        kernel_normalize_rows: keep Phi's rows at unit norm (Algorithm 1 line 4; off by default for
            Algorithm 2, which the paper states without it).

    ``forward(x)``: ``(B, input_len, n_vars)`` -> ``(B, horizon, n_vars)``.
    """

    def __init__(self, n_vars: int, input_len: int, horizon: int, *, n_blocks: int | None = None,
                 seg_len: int = DEFAULTS["seg_len"], win_size: int = DEFAULTS["win_size"],
                 d_model: int = DEFAULTS["d_model"], n_heads: int = DEFAULTS["n_heads"], d_ff: int = DEFAULTS["d_ff"],
                 factor: int = DEFAULTS["factor"], dropout: float = DEFAULTS["dropout"], separation="learnable",
                 alpha_init: float = DEFAULTS["alpha_init"], uhop: bool = False,
                 kernel_normalize_rows: bool = False):
        super().__init__()
        self.n_vars = check_int(n_vars, "n_vars", minimum=1)
        self.input_len = check_int(input_len, "input_len", minimum=1)
        self.horizon = check_int(horizon, "horizon", minimum=1)
        self.seg_len = check_int(seg_len, "seg_len", minimum=1)
        self.win_size = check_int(win_size, "win_size", minimum=1)
        self.n_blocks = blocks_for_horizon(horizon) if n_blocks is None else check_int(n_blocks, "n_blocks",
                                                                                         minimum=1)
        d_model = check_int(d_model, "d_model", minimum=1)
        if d_model % check_int(n_heads, "n_heads", minimum=1):
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.uhop = bool(uhop)
        self.d_model = d_model
        self.in_segments = math.ceil(self.input_len / self.seg_len)
        self.out_segments = math.ceil(self.horizon / self.seg_len)
        self.pad = self.in_segments * self.seg_len - self.input_len
        hop = _hopfield_kwargs(d_model, n_heads, separation, alpha_init, self.uhop, kernel_normalize_rows)

        self.embedding = SegmentEmbedding(self.seg_len, d_model)
        self.enc_pos = nn.Parameter(torch.empty(1, self.n_vars, self.in_segments, d_model))
        self.dec_pos = nn.Parameter(torch.empty(1, self.n_vars, self.out_segments, d_model))
        nn.init.trunc_normal_(self.enc_pos, std=0.02)
        nn.init.trunc_normal_(self.dec_pos, std=0.02)
        self.pre_norm = nn.LayerNorm(d_model)
        self.encoder = nn.ModuleList(
            _EncoderBlock(None if i == 0 else CoarseGrain(d_model, self.win_size),
                          TandemHopfieldLayer(d_model, n_heads, d_ff, factor, dropout, **hop))
            for i in range(self.n_blocks))
        self.decoder = nn.ModuleList(
            _DecoderLayer(d_model, n_heads, d_ff, factor, dropout, self.seg_len, **hop)
            for _ in range(self.n_blocks + 1))

    @property
    def scales(self) -> list[int]:
        """Number of segments per channel at each encoder resolution (embedding first)."""
        out = [self.in_segments]
        for _ in range(1, self.n_blocks):
            out.append(math.ceil(out[-1] / self.win_size))
        return [out[0]] + out

    def alphas(self) -> torch.Tensor:
        """The current alpha of every Hopfield layer's separation map (learnable maps: one per head), flat."""
        from ..nn import hopfield_layers

        return torch.cat([layer.separation.alpha.detach().reshape(-1) for layer in hopfield_layers(self)])

    #: Run the first decoder layer's tandem layer once per evaluation batch (see :meth:`_first_layer_shared`);
    #: set False on an instance to run it on every window (the benchmark's code path before the speed work).
    share_first_decoder_layer = True

    def _first_layer_shared(self) -> bool:
        """Whether the first decoder layer's tandem layer may run on one window for all.  Its input is the learned
        decoder queries, the same for every window, so without dropout (eval mode) and without gradients one
        window's output is every window's -- bit for bit on the CPU this project runs on (checked on fresh and trained
        networks of every horizon and several batch sizes; a BLAS that sums a matrix product's rows differently for
        different row counts could change last bits), at 1/B of the cost: about a third of an evaluation pass at
        the long horizons.  This holds in Algorithm 2's inner pass too (eval mode, no gradients), where the layers
        that record their patterns (uhop.nn.record_stored_patterns) then hold one window's; :meth:`_tile_recorded`
        repeats them over the batch."""
        return self.share_first_decoder_layer and not self.training and not torch.is_grad_enabled()

    def _tile_recorded(self, batch: int) -> None:
        """After the shared first decoder layer ran on one window while Algorithm 2 records patterns: repeat each of
        its recording layers' patterns over the ``batch`` windows, in the window-major order of the rows of a
        batched pass (window ``b``'s sets at rows ``b * n .. b * n + n - 1``), as contiguous copies, so that the
        separation loss sees the tensors an unshared pass records, bit for bit (tested)."""
        for m in self.decoder[0].self_layer.modules():
            if getattr(m, "_recording", False):
                for name in ("recorded_stored", "recorded_state"):
                    rec = getattr(m, name)
                    if rec is not None:
                        setattr(m, name, rec.repeat(batch, *(1,) * (rec.ndim - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.input_len or x.shape[2] != self.n_vars:
            raise ValueError(f"x must have shape (B, input_len={self.input_len}, n_vars={self.n_vars}), "
                             f"got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one window (got a batch of 0)")
        if x.dtype != self.enc_pos.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model's parameters are {self.enc_pos.dtype}: convert "
                            f"the input (x.to({self.enc_pos.dtype})) or the model (model.to(x.dtype))")
        if self.pad:
            x = torch.cat([x[:, :1, :].expand(-1, self.pad, -1), x], dim=1)
        h = self.pre_norm(self.embedding(x) + self.enc_pos)
        memories = [h]
        for block in self.encoder:
            h = block(h)
            memories.append(h)
        q = self.dec_pos.expand(x.shape[0], -1, -1, -1)
        first = None
        if self._first_layer_shared():
            first = self.decoder[0].self_layer(self.dec_pos).expand_as(q)
            self._tile_recorded(x.shape[0])
        prediction = 0.0
        for i, (layer, memory) in enumerate(zip(self.decoder, memories)):
            q, pred = layer(q, memory, self_out=first if i == 0 else None)
            prediction = prediction + pred
        return prediction.transpose(1, 2)[:, : self.horizon, :]
