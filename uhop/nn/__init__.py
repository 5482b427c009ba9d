"""``uhop.nn``: Hopfield layers for deep learning, the U-Hop kernelized layer and its training.

* :class:`Hopfield`, :class:`UHopfield`, :class:`HopfieldPooling`, :class:`HopfieldLayer` -- layers with
  the API shape of ``hflayers`` (Ramsauer et al., 2021); ``separation=`` really selects softmax /
  sparsemax / alpha-entmax / a learnable alpha, ``kernel="linear"`` turns on U-Hop's feature map.
* :class:`FeatureMap`, :func:`dl_separation_loss` (Definition 3.1), :func:`feature_separation_loss`.
* :class:`BilevelTrainer` -- Algorithm 2 (U-Hop for learning).
* :func:`realize_attention` -- the constructive proof of Theorem 3.1.
"""

from .bilevel import BilevelTrainer, EpochRecord, kernel_parameters, separation_step
from .kernel import FeatureMap, dl_separation_loss, feature_separation_loss
from .layers import (Hopfield, HopfieldLayer, HopfieldPooling, UHopfield, hopfield_layers,
                     record_stored_patterns)
from .representation import attention_matrix, realize_attention
from .separation import LEARNABLE, SeparationModule

__all__ = [
    "Hopfield", "UHopfield", "HopfieldPooling", "HopfieldLayer", "hopfield_layers", "record_stored_patterns",
    "SeparationModule", "LEARNABLE", "FeatureMap", "dl_separation_loss", "feature_separation_loss",
    "BilevelTrainer", "EpochRecord", "kernel_parameters", "separation_step",
    "realize_attention", "attention_matrix",
]
