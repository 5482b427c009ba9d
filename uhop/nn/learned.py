"""Hopfield layers with learned patterns: :class:`HopfieldPooling` (learned queries) and :class:`HopfieldLayer`
(learned memories), each wrapping an inner :class:`~uhop.nn.hopfield.Hopfield` (``hflayers``' wrappers)."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_bool, check_int
from .arguments import INIT_STD
from .hopfield import Hopfield

__all__ = ["HopfieldPooling", "HopfieldLayer"]


#: hflayers properties that the wrappers report from their inner :class:`Hopfield`.
_DELEGATED = ("batch_first", "scaling", "stored_pattern_dim", "state_pattern_dim", "pattern_projection_dim",
              "input_size", "hidden_size", "output_size", "pattern_size", "num_heads", "update_steps_max",
              "update_steps_eps", "stored_pattern_as_static", "state_pattern_as_static",
              "pattern_projection_as_static", "normalize_stored_pattern", "normalize_stored_pattern_affine",
              "normalize_state_pattern", "normalize_state_pattern_affine", "normalize_pattern_projection",
              "normalize_pattern_projection_affine", "normalize_hopfield_space", "normalize_hopfield_space_affine",
              "is_uhop", "init")


class _LearnedPatterns(nn.Module):
    """Shared part of :class:`HopfieldPooling` and :class:`HopfieldLayer`: an inner :class:`Hopfield` and learned
    pattern sets ``(1, quantity, d)``, initialised by the layer's ``init``."""

    hopfield: Hopfield

    def _learned(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def _init_learned(self) -> None:
        for p in self._learned():
            if self.hopfield.init == "pytorch":
                nn.init.trunc_normal_(p, std=INIT_STD)
            else:
                nn.init.normal_(p, std=INIT_STD)

    def reset_parameters(self) -> None:
        """Reset the inner :class:`Hopfield` and draw the learned patterns afresh."""
        self.hopfield.reset_parameters()
        self._init_learned()


for _name in _DELEGATED:
    setattr(_LearnedPatterns, _name, property(lambda self, _n=_name: getattr(self.hopfield, _n)))


def _learned_like(input, batch_first: bool, what: str, rows: str, *learned: torch.Tensor) -> list[torch.Tensor]:
    """Check ``input`` (``(B, rows, d)``, or ``(rows, d)`` unbatched) and give each learned ``(1, N, .)`` pattern
    set in its layout: ``(N, .)`` unbatched, ``(B, N, .)`` batch-first, else ``(N, B, .)``; in its dtype.
    Shared by :class:`HopfieldPooling` (learned queries) and :class:`HopfieldLayer` (learned memories)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of {what}, got {type(input).__name__}")
    if input.ndim not in (2, 3):
        raise ValueError(f"input must be (B, {rows}, input_size) or ({rows}, input_size), "
                         f"got shape {tuple(input.shape)}")
    if input.ndim == 2:
        return [p[0].to(input.dtype) for p in learned]
    b = input.shape[0] if batch_first else input.shape[1]
    out = [p.expand(b, -1, -1).to(input.dtype) for p in learned]
    return out if batch_first else [p.transpose(0, 1) for p in out]


class HopfieldPooling(_LearnedPatterns):
    r"""Pooling by retrieval with learned state (query) patterns (``hflayers.HopfieldPooling``).

    ``quantity`` learned queries retrieve from the input stored patterns ``(B, M, input_size)`` (or a tuple
    ``(stored_pattern, pattern_projection)``); the output is ``(B, quantity * output_size)`` (``flatten=False``:
    ``(B, quantity, output_size)``), batch first whatever ``batch_first`` says about the input.  ``trainable``:
    the queries are learned.  Other keywords (every :class:`Hopfield` keyword, ``init`` included) go to the
    inner :class:`Hopfield`; the queries start ``N(0, 0.02^2)`` (truncated for ``init="pytorch"``).
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, output_size: int | None = None,
                 pattern_size: int | None = None, num_heads: int = 1, scaling=None, update_steps_max=0,
                 update_steps_eps=1e-4, *, quantity: int = 1, trainable: bool = True, flatten: bool = True,
                 **kwargs):
        super().__init__()
        self.quantity = check_int(quantity, "quantity", minimum=1)
        self.flatten = check_bool(flatten, "flatten")
        self.hopfield = Hopfield(input_size, hidden_size, output_size, pattern_size, num_heads, scaling,
                                 update_steps_max, update_steps_eps, **kwargs)
        self.pooling_weights = nn.Parameter(torch.empty(1, self.quantity, self.hopfield.input_size),
                                            requires_grad=check_bool(trainable, "trainable"))
        self._init_learned()

    def _learned(self):
        return [self.pooling_weights]

    def _tuple(self, input):
        if isinstance(input, (tuple, list)) and len(input) == 2:
            stored, projection = input
        else:
            stored = projection = input
        (state,) = _learned_like(stored, self.hopfield.batch_first, "stored patterns", "M", self.pooling_weights)
        return (stored, state, projection)

    def forward(self, input, stored_pattern_padding_mask: torch.Tensor | None = None,
                association_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.hopfield(self._tuple(input), stored_pattern_padding_mask, association_mask)
        if not self.hopfield.batch_first and out.ndim == 3:
            out = out.transpose(0, 1)
        if self.flatten:
            return out.reshape(*out.shape[:-2], -1)
        return out

    def get_association_matrix(self, input, stored_pattern_padding_mask: torch.Tensor | None = None,
                               association_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.hopfield.get_association_matrix(self._tuple(input), stored_pattern_padding_mask,
                                                    association_mask)

    def get_projected_pattern_matrix(self, input, stored_pattern_padding_mask: torch.Tensor | None = None,
                                     association_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.hopfield.get_projected_pattern_matrix(self._tuple(input))


class HopfieldLayer(_LearnedPatterns):
    r"""Retrieval from learned stored patterns: a trainable lookup table (``hflayers.HopfieldLayer``).

    The input state patterns ``(B, Q, input_size)`` retrieve from ``quantity`` learned stored patterns
    ``lookup_weights`` (``(1, quantity, stored_pattern_size)``; ``trainable``: learned).  The retrieved values
    come from the same patterns, or from separate learned ``target_weights`` (``(1, quantity,
    pattern_projection_size)``) when ``lookup_weights_as_separated=True`` (``lookup_targets_as_trainable``:
    learned).  Output ``(B, Q, output_size)``.  Other keywords go to the inner :class:`Hopfield`.
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, output_size: int | None = None,
                 pattern_size: int | None = None, num_heads: int = 1, scaling=None, update_steps_max=0,
                 update_steps_eps=1e-4, lookup_weights_as_separated: bool = False,
                 lookup_targets_as_trainable: bool = True, *, quantity: int = 1, trainable: bool = True, **kwargs):
        super().__init__()
        self.quantity = check_int(quantity, "quantity", minimum=1)
        self.hopfield = Hopfield(input_size, hidden_size, output_size, pattern_size, num_heads, scaling,
                                 update_steps_max, update_steps_eps, **kwargs)
        hop = self.hopfield
        self.lookup_weights = nn.Parameter(torch.empty(1, self.quantity, hop.stored_pattern_size),
                                           requires_grad=check_bool(trainable, "trainable"))
        if check_bool(lookup_weights_as_separated, "lookup_weights_as_separated"):
            self.target_weights = nn.Parameter(
                torch.empty(1, self.quantity, hop.pattern_projection_size),
                requires_grad=check_bool(lookup_targets_as_trainable, "lookup_targets_as_trainable"))
        else:
            if hop.pattern_projection_size != hop.stored_pattern_size:
                raise ValueError(f"pattern_projection_size ({hop.pattern_projection_size}) must equal "
                                 f"stored_pattern_size ({hop.stored_pattern_size}) unless "
                                 f"lookup_weights_as_separated=True (the lookup weights are also the values)")
            self.target_weights = None
        self._init_learned()

    def _learned(self):
        return [self.lookup_weights] + ([] if self.target_weights is None else [self.target_weights])

    def _tuple(self, input):
        stored, *targets = _learned_like(input, self.hopfield.batch_first, "state patterns", "Q", *self._learned())
        return (stored, input, targets[0] if targets else stored)

    def forward(self, input: torch.Tensor, stored_pattern_padding_mask: torch.Tensor | None = None,
                association_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.hopfield(self._tuple(input), stored_pattern_padding_mask, association_mask)

    def get_association_matrix(self, input: torch.Tensor, stored_pattern_padding_mask: torch.Tensor | None = None,
                               association_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.hopfield.get_association_matrix(self._tuple(input), stored_pattern_padding_mask,
                                                    association_mask)

    def get_projected_pattern_matrix(self, input: torch.Tensor,
                                     stored_pattern_padding_mask: torch.Tensor | None = None,
                                     association_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.hopfield.get_projected_pattern_matrix(self._tuple(input))
