r"""Image classification with and without U-Hop (Section 4.2, App F.4, G.4-G.5, Table 1 of the paper).

``run(config)`` trains every requested variant (``mhm``, ``mhm_uhop``, ``sparse``, ``sparse_uhop``) for every
run seed and training-set size, on one seeded data subset shared by all variants, seeds and both stages of
Algorithm 2, and appends one row per epoch to ``<out_dir>/curves.csv``.  ``summarize`` turns the curves into a
Table-1-style summary, ``expressiveness_table`` into Fig 6 / G.4 (max training accuracy against the training-set
size) and ``epochs_to_accuracy`` into the G.5 convergence measure.

Data: CIFAR-10 from torchvision's files when present, else the shipped 60k JPEG re-encoding (lossy, about
6/255 per pixel: results say so); CIFAR-100 through torchvision only (``DatasetNotFoundError`` otherwise);
Tiny ImageNet from the full set when extracted, else the shipped 50-images-per-class subset.

The package: :mod:`~uhop.experiments.classification.config` (datasets, presets, the configuration),
:mod:`~uhop.experiments.classification.data` (images, subsets, transforms),
:mod:`~uhop.experiments.classification.training` (training runs into an output folder),
:mod:`~uhop.experiments.classification.store` (the folder's ``curves.csv``),
:mod:`~uhop.experiments.classification.analysis` (summaries and comparisons) and
:mod:`~uhop.experiments.classification.cli` (``python -m uhop.experiments.classification train``).
"""

from .analysis import (
    PAPER_TABLE1,
    UHOP_PAIRS,
    claim_verdicts,
    convergence_table,
    epochs_to_accuracy,
    expressiveness_table,
    paired_differences,
    per_seed_metrics,
    summarize,
    tier_status,
)
from .cli import main
from .config import ARCHITECTURES, DATASETS, PRESETS, ClassificationConfig, config_from_parameters, make_config
from .data import CROP_PADDING, ClassificationData, load_data, random_crop_flip
from .store import CURVE_COLUMNS, load_folder
from .training import evaluate, run, train_variant

__all__ = ["DATASETS", "PRESETS", "PAPER_TABLE1", "ClassificationConfig", "ClassificationData", "load_data",
           "make_config", "train_variant", "run", "summarize", "expressiveness_table", "epochs_to_accuracy",
           "evaluate", "CURVE_COLUMNS"]
