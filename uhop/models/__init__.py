"""``uhop.models``: ready-made models built from :mod:`uhop.nn` layers (the classifiers of App F.4)."""

from .vision import (VARIANT_LABELS, VARIANTS, HopfieldClassifier, HopfieldViT, PatchEmbedding, build_model,
                     variant_settings)

__all__ = ["VARIANTS", "VARIANT_LABELS", "HopfieldClassifier", "HopfieldViT", "PatchEmbedding", "build_model",
           "variant_settings"]
