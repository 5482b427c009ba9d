"""``uhop.nn``: Hopfield layers for deep learning, the U-Hop kernelized layer and its training.

* :class:`Hopfield`, :class:`UHopfield`, :class:`HopfieldPooling`, :class:`HopfieldLayer` -- the layers of
  ``hflayers`` (Ramsauer et al., 2021), same arguments with the same meaning (sizes per head, masks, update
  steps, initialisation); ``separation=`` selects softmax / sparsemax / alpha-entmax / a learnable alpha,
  ``kernel="linear"`` turns on U-Hop's feature map.  :func:`load_hflayers_state_dict` loads hflayers weights.
* :class:`FeatureMap`, :func:`dl_separation_loss` (Definition 3.1), :func:`feature_separation_loss`.
* :class:`BilevelTrainer` -- Algorithm 2 (U-Hop for learning), the one trainer of the experiments; its batch
  sources are in :mod:`uhop.nn.batches`, its checkpoint files in :mod:`uhop.nn.checkpoints`.
* :func:`realize_attention` -- the constructive proof of Theorem 3.1.
"""

from .bilevel import BilevelTrainer, EpochRecord, kernel_parameters, separation_step
from .hflayers_compat import load_hflayers_state_dict
from .kernel import FeatureMap, dl_separation_loss, feature_separation_loss
from .layers import (Hopfield, HopfieldLayer, HopfieldPooling, UHopfield, hopfield_layers,
                     record_stored_patterns)
from .representation import attention_matrix, realize_attention
from .separation import LEARNABLE, SeparationModule

__all__ = [
    "Hopfield", "UHopfield", "HopfieldPooling", "HopfieldLayer", "hopfield_layers", "record_stored_patterns",
    "load_hflayers_state_dict", "SeparationModule", "LEARNABLE", "FeatureMap", "dl_separation_loss",
    "feature_separation_loss",
    "BilevelTrainer", "EpochRecord", "kernel_parameters", "separation_step",
    "realize_attention", "attention_matrix",
]
