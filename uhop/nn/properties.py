"""The read-only properties of ``hflayers``' Hopfield layer (``scaling``, ``update_steps_*``, the ``*_dim`` sizes,
the ``normalize_*`` switches), read from a layer's settings and modules."""

from __future__ import annotations

from .arguments import one_or_per_head

__all__ = ["HopfieldProperties"]


class HopfieldProperties:
    """Mixed into :class:`~uhop.nn.hopfield.Hopfield`: the properties ``hflayers`` exposes, read from the layer's
    settings (``_betas``, ``_steps_max``, ``_steps_eps``) and modules (``feature_map``, the LayerNorms)."""

    @property
    def is_uhop(self) -> bool:
        """True for a kernelized (U-Hop) layer."""
        return self.feature_map is not None

    @property
    def scaling(self):
        """beta: one float, or the per-head tuple when the heads differ."""
        return one_or_per_head(self._betas)

    @property
    def update_steps_max(self):
        """Extra retrieval steps (``None``: until convergence): one value, or the per-head tuple."""
        return one_or_per_head(self._steps_max)

    @property
    def update_steps_eps(self):
        return one_or_per_head(self._steps_eps)

    @property
    def stored_pattern_dim(self) -> int:
        return self.stored_pattern_size

    @property
    def state_pattern_dim(self) -> int:
        return self.input_size

    @property
    def pattern_projection_dim(self) -> int:
        return self.pattern_projection_size

    @property
    def normalize_stored_pattern(self) -> bool:
        return self.norm_stored is not None

    @property
    def normalize_stored_pattern_affine(self) -> bool:
        return self.norm_stored is not None and self.norm_stored.elementwise_affine

    @property
    def normalize_state_pattern(self) -> bool:
        return self.norm_state is not None

    @property
    def normalize_state_pattern_affine(self) -> bool:
        return self.norm_state is not None and self.norm_state.elementwise_affine

    @property
    def normalize_pattern_projection(self) -> bool:
        return self.norm_projection is not None

    @property
    def normalize_pattern_projection_affine(self) -> bool:
        return self.norm_projection is not None and self.norm_projection.elementwise_affine

    @property
    def normalize_hopfield_space(self) -> bool:
        return self.norm_hopfield_space is not None

    @property
    def normalize_hopfield_space_affine(self) -> bool:
        return self.norm_hopfield_space is not None and self.norm_hopfield_space.elementwise_affine
