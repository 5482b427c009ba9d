"""Argument validation shared by the public functions.

Every helper raises ``TypeError`` (wrong kind of object) or ``ValueError``
(right kind, bad value) with a message that starts with the argument's name,
so that a user reading the traceback knows which argument to fix.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence

import torch

__all__ = [
    "check_tensor",
    "check_floating",
    "check_ndim",
    "check_nonempty",
    "check_finite",
    "check_same_dtype_device",
    "check_positive",
    "check_nonnegative",
    "check_alpha",
    "check_t",
    "check_epochs",
    "check_int",
    "check_probability",
    "check_choice",
    "check_memories",
    "check_queries",
]


def check_tensor(x, name: str) -> torch.Tensor:
    """Return ``x`` if it is a ``torch.Tensor``; else raise ``TypeError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is a meta tensor (a shape without data): move it to a real device, e.g. "
                         f"{name}.to_empty(device='cpu') and fill it, before computing with it")
    return x


def check_bool(value, name: str) -> bool:
    """``value`` if it is a bool (not merely truthy: ``1`` or ``"yes"`` are refused), else a TypeError naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_floating(x: torch.Tensor, name: str) -> torch.Tensor:
    """Require a floating-point dtype (integer images must be converted first)."""
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must have a floating-point dtype (e.g. torch.float32), got {x.dtype}"
        )
    return x


def check_ndim(x: torch.Tensor, name: str, ndims: Sequence[int], layout: str) -> torch.Tensor:
    """Require ``x.ndim`` in ``ndims``; ``layout`` describes the expected shape."""
    if x.ndim not in tuple(ndims):
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be a {want} tensor {layout}, got shape {tuple(x.shape)}")
    return x


def check_nonempty(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    # min/max propagate NaN and expose +-Inf, in one reduction pass without the
    # full-size boolean temporary of isfinite(x) (whose allocation dominated
    # the check for large inputs).
    if x.numel() == 0:
        return x
    lo, hi = torch.aminmax(x)
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        raise ValueError(f"{name} contains NaN or Inf entries")
    return x


def check_same_dtype_device(a: torch.Tensor, name_a: str, b: torch.Tensor, name_b: str) -> None:
    """Mixed dtypes/devices are refused rather than silently cast (casts hide bugs)."""
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; "
            "convert one so that they match"
        )
    if a.device != b.device:
        raise ValueError(
            f"{name_a} is on device {a.device} but {name_b} is on {b.device}; "
            "move one so that they match"
        )


def check_real(value, name: str) -> float:
    # bool is an Integral in Python; refusing it catches swapped arguments.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(value, name: str) -> float:
    """A finite real number > 0 (e.g. ``beta``, ``lr``)."""
    value = check_real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_nonnegative(value, name: str) -> float:
    value = check_real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_alpha(alpha, name: str = "alpha") -> float:
    """The entmax parameter: alpha in [1, 2] (Eq (2.3), Theorem 2.1)."""
    alpha = check_real(alpha, name)
    if not 1.0 <= alpha <= 2.0:
        raise ValueError(f"{name} must lie in [1, 2], got {alpha}")
    return alpha


def check_t(t, name: str = "t") -> float:
    """The RBF scale of the separation loss, t > 0 (Definition 2.2)."""
    return check_positive(t, name)


def check_int(value, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_epochs(epochs, name: str = "epochs") -> int:
    """Number of Stage I steps N: an int >= 0 (0 means no training)."""
    return check_int(epochs, name, minimum=0)


def check_probability(p, name: str = "p") -> float:
    """A masking probability in [0, 1) (p = 1 would leave nothing to rescale)."""
    p = check_real(p, name)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {p}")
    return p


def check_choice(value, name: str, valid: Iterable[str]) -> str:
    """Require ``value`` to be one of the strings in ``valid``; list them if not."""
    valid = tuple(valid)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid {name} values: {', '.join(map(repr, valid))}")
    return value


def check_memories(memories, name: str = "memories") -> torch.Tensor:
    """Memories are rows: a finite, non-empty floating tensor of shape (M, d)."""
    check_tensor(memories, name)
    check_floating(memories, name)
    check_ndim(memories, name, (2,), "(M, d)")
    check_nonempty(memories, name)
    check_finite(memories, name)
    return memories


def check_queries(queries, memories: torch.Tensor, name: str = "queries",
                  memories_name: str = "memories") -> torch.Tensor:
    """Queries are (d,) or (Q, d) with the memories' d, dtype and device."""
    check_tensor(queries, name)
    check_floating(queries, name)
    check_ndim(queries, name, (1, 2), "(d,) or (Q, d)")
    check_nonempty(queries, name)
    d = memories.shape[-1]
    if queries.shape[-1] != d:
        raise ValueError(
            f"{name} must have last dimension d = {d} (the {memories_name}' dimension), "
            f"got shape {tuple(queries.shape)}"
        )
    check_finite(queries, name)
    check_same_dtype_device(queries, name, memories, memories_name)
    return queries
