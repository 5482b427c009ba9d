r"""Query corruptions for retrieval experiments (Section 4.1, App F.2-F.3).

Each function returns a new tensor (the input is not modified) and draws its
randomness from an optional ``torch.Generator`` (never the global RNG).
Images are (..., C, H, W) tensors, or flat rows (..., D) together with
``shape=(C, H, W)`` or ``shape=(H, W)``.
"""

from __future__ import annotations

import math

import torch

from ._checks import (
    check_bool,
    check_choice,
    check_floating,
    check_int,
    check_nonnegative,
    check_probability,
    check_tensor,
)
from .kernel import make_generator

__all__ = ["half_mask", "random_mask", "gaussian_noise"]


def _as_images(x, shape, name="x"):
    """View ``x`` as (..., C, H, W); returns the view and a function undoing it."""
    check_tensor(x, name)
    check_floating(x, name)
    if shape is None:
        # A 2-D tensor is ambiguous (one H x W image or N flat rows), so it needs shape=.
        if x.ndim < 3:
            raise ValueError(f"{name} must be images (..., C, H, W), or flat rows together with "
                             f"shape=(C, H, W) or (H, W); got shape {tuple(x.shape)} and shape=None")
        return x, lambda y: y
    shape = tuple(check_int(s, "shape", minimum=1) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be (H, W) or (C, H, W), got {shape}")
    if len(shape) == 2:
        shape = (1,) + shape
    D = math.prod(shape)
    if x.shape[-1] != D:
        raise ValueError(f"{name} must have last dimension prod(shape) = {D}, got shape {tuple(x.shape)}")
    lead = x.shape[:-1]
    return x.reshape(*lead, *shape), lambda y: y.reshape(*lead, D)


def _rand(shape, generator, like):
    # Drawn on the CPU with the private generator, then moved: identical
    # numbers on every device for a given seed.
    return torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)


def half_mask(x: torch.Tensor, side: str = "bottom", shape=None) -> torch.Tensor:
    """Zero the bottom (or top) half of the image rows.

    ``side="bottom"`` zeroes rows ``H//2 .. H-1`` (Millidge et al. 2022 /
    SparseModernHopfield); ``side="top"`` zeroes rows ``0 .. H//2 - 1``
    (NonparametricHopfield).  For odd H the middle row belongs to the bottom half.
    """
    side = check_choice(side, "side", ("bottom", "top"))
    img, undo = _as_images(x, shape)
    out = img.clone()
    H = out.shape[-2]
    if side == "bottom":
        out[..., H // 2:, :] = 0
    else:
        out[..., : H // 2, :] = 0
    return undo(out)


def random_mask(x: torch.Tensor, p: float = 0.5, per: str = "entry", rescale: bool = False,
                generator: torch.Generator | None = None, shape=None) -> torch.Tensor:
    """Zero each entry (or pixel) independently with probability ``p``.

    ``per="entry"``: every value independently (the official ``torch.dropout``,
    which for colour images masks channels separately); ``per="pixel"``: all C
    channels of a pixel together (needs images or ``shape``).
    ``rescale=True`` multiplies the kept entries by ``1/(1-p)``: inverted
    dropout, i.e. the official x2 at p = 0.5 (queries then lie in [0, 2]).
    """
    check_tensor(x, "x")
    check_floating(x, "x")
    p = check_probability(p, "p")
    per = check_choice(per, "per", ("entry", "pixel"))
    check_bool(rescale, "rescale")
    gen = make_generator(None, generator)
    if per == "entry":
        keep = _rand(x.shape, gen, x) >= p
        out = x * keep
    else:
        img, undo = _as_images(x, shape)
        keep = _rand(img.shape[:-3] + (1,) + img.shape[-2:], gen, x) >= p
        out = undo(img * keep)
    if rescale:
        out = out / (1.0 - p)
    return out


def gaussian_noise(x: torch.Tensor, sigma: float, mode: str = "per_entry", clamp: bool = True,
                   generator: torch.Generator | None = None, sample_ndim: int = 1) -> torch.Tensor:
    r"""Add Gaussian noise of level ``sigma``.

    * ``mode="per_entry"``: n ~ N(0, sigma^2) independently per entry
      (official ``memory_retrieval_noise.py``; Millidge's ``gaussian_perturb_image``).
    * ``mode="total_norm"``: ``n = sigma g / ||g||`` with g ~ N(0, I) per
      sample, so each noise vector has l2 norm exactly sigma (the paper's
      "Gaussian vector rescaled to the given norm"; official
      ``memory_retrieval_noise_max_loss.py``).  A sample is the last
      ``sample_ndim`` dimensions (1 for flat rows, 3 for (C, H, W) images).
    * ``clamp=True`` returns ``clamp(|x + n|, 0, 1)``, the absolute value
      then clamping used by Millidge et al. and the official code (so noisy
      pixels stay in [0, 1]); ``clamp=False`` returns ``x + n``.
    """
    check_tensor(x, "x")
    check_floating(x, "x")
    sigma = check_nonnegative(sigma, "sigma")
    mode = check_choice(mode, "mode", ("per_entry", "total_norm"))
    check_bool(clamp, "clamp")
    sample_ndim = check_int(sample_ndim, "sample_ndim", minimum=1)
    if sample_ndim > x.ndim:
        raise ValueError(f"sample_ndim must be <= x.ndim = {x.ndim}, got {sample_ndim}")
    gen = make_generator(None, generator)
    g = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    if mode == "per_entry":
        n = sigma * g
    else:
        dims = tuple(range(x.ndim - sample_ndim, x.ndim))
        n = sigma * g / torch.linalg.vector_norm(g, dim=dims, keepdim=True)
    y = x + n
    return (y.abs().clamp(0.0, 1.0)) if clamp else y
