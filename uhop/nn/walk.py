"""Finding the Hopfield layers of a model, and recording the patterns its U-Hop layers saw."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

from .hopfield import Hopfield

__all__ = ["hopfield_layers", "record_stored_patterns"]


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
