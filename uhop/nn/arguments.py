"""Argument checks and constants shared by the :mod:`uhop.nn` layers (:class:`~uhop.nn.hopfield.Hopfield` and
the learned-pattern wrappers of :mod:`uhop.nn.learned`)."""

from __future__ import annotations

import torch

from .._checks import check_bool, check_int

__all__ = ["KERNELS", "INITS", "MAX_UPDATE_STEPS", "INIT_STD", "optional_int", "affine_flag",
           "per_head", "update_steps", "one_or_per_head"]

KERNELS = (None, "linear")
#: Initialisation schemes: ``"hflayers"`` -- projections and learned patterns ``N(0, 0.02^2)``, biases 0 (as
#: hflayers); ``"pytorch"`` -- ``nn.Linear``'s default for the projections and a truncated ``N(0, 0.02^2)`` for
#: learned patterns (the scheme the companion's STanHop and ViT models were trained with).
INITS = ("hflayers", "pytorch")
# Cap for update_steps_max=None ("until convergence").
MAX_UPDATE_STEPS = 1000
INIT_STD = 0.02


def optional_int(value, name):
    """None, or an int of at least 1 (checked, named ``name``)."""
    return None if value is None else check_int(value, name, minimum=1)


def affine_flag(affine, normalize: bool, name: str) -> bool:
    """``normalize_*_affine``: None follows the normalisation switch; True without normalisation is an error."""
    if affine is None:
        return normalize
    check_bool(affine, name)
    if affine and not normalize:
        raise ValueError(f"{name}=True needs {name[:-len('_affine')]}=True (an affine map without the "
                         f"normalisation has nothing to act on); leave {name} unset or pass False")
    return affine


def per_head(value, name: str, num_heads: int, check) -> tuple:
    """One value for every head, or a sequence / 1-D tensor of ``num_heads`` values, each passed through check."""
    if isinstance(value, torch.Tensor):
        if value.ndim > 1:
            raise ValueError(f"{name} must be a number or a 1-D tensor of num_heads = {num_heads} values, "
                             f"got shape {tuple(value.shape)}")
        values = value.reshape(-1).tolist()
        if value.ndim == 0:
            values = values * num_heads
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        values = [value] * num_heads
    if len(values) != num_heads:
        raise ValueError(f"{name} must be one value or num_heads = {num_heads} values (one per head), "
                         f"got {len(values)}")
    return tuple(check(v) for v in values)


def update_steps(value, from_tensor: bool = False):
    # hflayers: None, or (in a tensor) a negative count, means "until convergence".
    if value is None or (from_tensor and value < 0):
        return None
    return check_int(value, "update_steps_max", minimum=0)


def one_or_per_head(values: tuple):
    """One value when every head has the same, else the per-head tuple (what the properties return)."""
    return values[0] if len(set(values)) == 1 else values
