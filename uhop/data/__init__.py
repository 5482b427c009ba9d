"""``uhop.data``: the real datasets of the U-Hop paper, loaded offline-first and checked.

Image sets (each loader returns an :class:`ImageData`: uint8 ``(N, C, H, W)`` images, int64 labels, class names,
and the ``variant``/``exact`` flags that results must report):

* :func:`load_mnist` -- MNIST through torchvision (exact).
* :func:`load_cifar10` / :func:`load_cifar100` -- torchvision's canonical files, else (CIFAR-10) the 60k JPEG set
  (lossy) or the small exact subsets.
* :func:`load_tiny_imagenet` -- an extracted full set, else the 50-per-class subset.
* :func:`sample_memories` -- M flattened [0, 1] patterns for the retrieval experiments.

Time series (Informer/STanHop protocol): :func:`load_time_series`, :func:`time_series_splits`,
:class:`SlidingWindowDataset`.

Locations and switches: :func:`data_root` (``root=`` > ``$UHOP_DATA`` > user cache), :func:`cache_dir`
(``$UHOP_CACHE``), ``UHOP_OFFLINE=1`` (no downloads).  Integrity: every file is sha256-checked before first use
(:class:`DataIntegrityError`); a missing dataset raises :class:`DatasetNotFoundError`.
Command line: ``python -m uhop.data verify [--root DIR]`` and ``python -m uhop.data list [--root DIR]``.
"""

from .checksums import KNOWN_FILES, verify_file, verify_root
from .cifar import CIFAR10_CLASSES, load_cifar10, load_cifar100
from .errors import DataIntegrityError, DatasetNotFoundError
from .imagedata import ApproximateDataWarning, ImageData, ImageTensorDataset
from .memories import MemorySet, sample_memories
from .mnist import load_mnist
from .paths import cache_dir, data_root, download_allowed, offline
from .registry import DATASETS, IMAGE_DATASETS, available, canonical_name, load_images
from .time_series import (TIME_SERIES, SlidingWindowDataset, TimeSeriesSplits, load_time_series, split_borders,
                          time_series_splits)
from .tiny_imagenet import load_tiny_imagenet

__all__ = [
    "ApproximateDataWarning", "CIFAR10_CLASSES", "DATASETS", "DataIntegrityError", "DatasetNotFoundError",
    "IMAGE_DATASETS", "ImageData", "ImageTensorDataset", "KNOWN_FILES", "MemorySet", "SlidingWindowDataset",
    "TIME_SERIES", "TimeSeriesSplits", "available", "cache_dir", "canonical_name", "data_root", "download_allowed",
    "load_cifar10", "load_cifar100", "load_images", "load_mnist", "load_time_series", "load_tiny_imagenet", "offline",
    "sample_memories", "split_borders", "time_series_splits", "verify_file", "verify_root",
]
