"""The inputs of a :class:`~uhop.nn.hopfield.Hopfield` forward pass: the (stored, state, projection) patterns
checked and brought to batch-first ``(B, N, d)``, and the masks turned into what the association step adds and
masks out."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["unpack_patterns", "association_masks"]


def unpack_patterns(layer, input):
    """``(stored, state, projection, unbatched)`` of ``layer``'s input: a tensor (self-association) or the tuple
    ``(stored_pattern, state_pattern, pattern_projection)``, checked against the layer's sizes and dtype and
    returned batch-first ``(B, N, d)``; ``unbatched`` says that 2-D inputs were given."""
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
            raise ValueError(f"{name} must be a 3-D tensor {'(B, N, d)' if layer.batch_first else '(N, B, d)'} "
                             f"or an unbatched 2-D tensor (N, d), got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    param = next(layer.parameters(), None)
    if param is not None and not torch.is_autocast_enabled(param.device.type):
        for name, x in (("stored_pattern", stored), ("state_pattern", state), ("pattern_projection", projection)):
            if x.dtype != param.dtype:
                raise TypeError(f"{name} has dtype {x.dtype} but the layer's parameters are {param.dtype}: "
                                f"convert the input (.to({param.dtype})) or the layer (.to({x.dtype}))")
    if len({stored.ndim, state.ndim, projection.ndim}) != 1:
        raise ValueError("stored_pattern, state_pattern and pattern_projection must all be batched (3-D) or "
                         "all unbatched (2-D)")
    unbatched = stored.ndim == 2
    if unbatched:
        stored, state, projection = stored[None], state[None], projection[None]
    elif not layer.batch_first:
        stored, state, projection = (x.transpose(0, 1) for x in (stored, state, projection))
    for name, x, size, arg in (("stored_pattern", stored, layer.stored_pattern_size, "stored_pattern_size"),
                               ("state_pattern", state, layer.input_size, "input_size"),
                               ("pattern_projection", projection, layer.pattern_projection_size,
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
    if stored.shape[1] == 0 and not (layer.add_zero_association or layer.concat_bias_pattern):
        raise ValueError("stored_pattern holds no patterns (M = 0): there is nothing to retrieve from "
                         "(add_zero_association=True gives every query a zero pattern to fall back on)")
    return stored, state, projection, unbatched


def association_masks(layer, stored_pattern_padding_mask, association_mask, B, Q, M, M_all, dtype, device):
    """The masks as ``(additive float or None, masked bool or None)``, both broadcastable to (B, H, Q, M_all);
    the patterns appended by concat_bias_pattern / add_zero_association are never masked."""
    add = masked = None
    H = layer.num_heads
    for name, mask in (("stored_pattern_padding_mask", stored_pattern_padding_mask),
                       ("association_mask", association_mask)):
        if mask is None:
            continue
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (bool: True = masked, or float: added to the "
                            f"scores), got {type(mask).__name__}")
        if name == "stored_pattern_padding_mask":
            shapes = {(B, M): (B, 1, 1, M)} | ({(M,): (1, 1, 1, M)} if B == 1 else {})
            layout = f"(B, M) = {(B, M)}"
        else:
            shapes = {(Q, M): (1, 1, Q, M), (B * H, Q, M): (B, H, Q, M)}
            layout = f"(Q, M) = {(Q, M)} or (B * num_heads, Q, M) = {(B * H, Q, M)}"
        if tuple(mask.shape) not in shapes:
            raise ValueError(f"{name} must have shape {layout}, got {tuple(mask.shape)}")
        mask = mask.to(device).reshape(shapes[tuple(mask.shape)])
        if mask.dtype == torch.bool:
            hard, soft = mask, None
        elif torch.is_floating_point(mask):
            if bool((torch.isnan(mask) | torch.isposinf(mask)).any()):
                raise ValueError(f"{name} is a float mask (added to the scores) and contains NaN or +inf; "
                                 f"use finite values, or -inf to mask")
            hard = torch.isneginf(mask)
            soft = mask.masked_fill(hard, 0.0).to(dtype)
        else:
            raise TypeError(f"{name} must be a bool tensor (True = masked) or a float tensor added to the "
                            f"scores, got dtype {mask.dtype} (for a 0/1 'is padding' mask use mask.bool())")
        masked = hard if masked is None else masked | hard
        if soft is not None:
            add = soft if add is None else add + soft
    if masked is not None and not bool(masked.any()):
        masked = None
    if M_all > M:  # appended patterns: unmasked, nothing added
        if masked is not None:
            masked = nn.functional.pad(masked, (0, M_all - M), value=False)
        if add is not None:
            add = nn.functional.pad(add, (0, M_all - M), value=0.0)
    if masked is not None:
        empty = masked.expand(B, H, Q, M_all).all(dim=-1)
        if bool(empty.any()):
            b, h, i = (int(t) for t in empty.nonzero()[0])
            raise ValueError(f"every stored pattern is masked for query {i} of batch item {b} (head {h}): "
                             f"stored_pattern_padding_mask / association_mask leave nothing to retrieve from "
                             f"(add_zero_association=True gives such a query a zero pattern instead)")
    return add, masked
