"""Experiment runners behind the notebooks of the book's *Experiments* part.

:mod:`uhop.experiments.retrieval` runs the memory-retrieval experiments of Section 4.1
(Appendix F.2-F.3, G.1-G.3): named protocols (``"paper"``, ``"official"``, ``"tuned"``), the
methods compared there, one function per grid cell and a resumable grid runner that writes one CSV
row per cell with a manifest.  :mod:`uhop.experiments.report` has the plotting and table helpers
the notebooks and the results chapter share, :mod:`uhop.experiments.plots` small axis helpers.  This subpackage needs the ``data`` extra (the
image loaders); plotting needs the ``book`` extra.
"""

from .retrieval import (
    COLUMNS,
    CORRUPTIONS,
    DATASETS,
    METHODS,
    NOISE_MODES,
    PROTOCOLS,
    ConfigMismatchError,
    GridConfig,
    MethodSpec,
    Protocol,
    evaluate_cell,
    evaluate_group,
    load_memory_set,
    make_queries,
    read_results,
    run_grid,
    stage1_settings,
)

__all__ = [
    "COLUMNS",
    "CORRUPTIONS",
    "DATASETS",
    "METHODS",
    "NOISE_MODES",
    "PROTOCOLS",
    "ConfigMismatchError",
    "GridConfig",
    "MethodSpec",
    "Protocol",
    "evaluate_cell",
    "evaluate_group",
    "load_memory_set",
    "make_queries",
    "read_results",
    "run_grid",
    "stage1_settings",
]
