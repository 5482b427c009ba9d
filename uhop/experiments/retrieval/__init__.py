r"""Memory-retrieval experiments of Section 4.1 (Appendix F.2-F.3, G.1-G.3), as a reusable runner.

Vocabulary
----------
* A **protocol** fixes how queries are corrupted, how Stage I is run and where beta sits:
  see :data:`PROTOCOLS` and the table below.
* A **method** is one retrieval rule: see :data:`METHODS`.
* A **grid cell** is (dataset, protocol, method, M, N, noise, seed); it gives one row of results:
  the mean and standard deviation over the M queries of the per-memory error, and diagnostics.
* A **group** is (M, seed): the memory set and its queries are drawn once per group, the
  baselines (which do not depend on N) run once, and Stage I runs once up to the largest N with
  ``fit_kernel(checkpoints=...)``, which returns the kernels of the whole N grid from one run.

Protocols
---------
``"paper"`` -- the paper as written.
    Query: 50% of the *pixels* zeroed (all channels of a pixel together, no rescaling), or
    Gaussian noise.  Stage I: average separation loss (Definition 2.2, distinct pairs, features
    L2-normalised inside the loss), on **all** M memories, W initialised to the identity
    (D_Phi = d), plain SGD with constant learning rate 1 (Table 4), t = 2, rows of W normalised
    after Stage I (Algorithm 1, line 4).  Retrieval: one step of ``Xi Sep(beta S(x, Xi))`` with
    beta = 1 *inside* Sep.  Baselines: the corrected ones (negative distances, normalised
    polynomial); the official bug-compatible variants are separate methods (``*_official``).
``"official"`` -- what the public scripts (MAGICS-LAB/UHop) do.
    Masked query: per-entry inverted dropout, ``torch.dropout(x, 0.5)``: 50% of the *entries*
    zeroed, kept entries multiplied by 2.  Stage I follows the script that produced each figure:
    masked queries -> ``memory_retrieval_max_loss.py`` = ``fit_kernel(preset="official")``
    (square W ~ N(0, 1), no row normalisation, max loss, SGD lr 10, **first half** of the
    memories); noise of total norm sigma -> ``memory_retrieval_noise_max_loss.py`` (the same
    Stage I on **all** memories); per-entry noise -> ``memory_retrieval_noise.py`` (preset
    ``"official_avg"``: avg loss, lr 1 with the compounding decay, all memories).  Retrieval:
    ``beta * Sep(S(x, Xi)) Xi``, beta *after* Sep (so beta = 1 means no temperature at all).
``"tuned"`` -- the temperature-matched control.
    Queries and Stage I as in ``"paper"``.  For every method whose beta is an inverse
    temperature (MHM, sparse MHM, both U-Hop variants -- with their learned kernels --, l2 and
    Manhattan) beta is chosen from ``beta_grid`` by minimising the mean SSE on a **held-out**
    memory set: M memories drawn with a different seed and disjoint from the test memories, with
    their own queries and their own Stage I run.  The chosen beta is then used once on the test
    memory set, which never influences the choice.  The normalised DAM is invariant to beta and the
    ``*_official`` methods multiply beta *after* Sep (not a temperature): they run as in "paper".
    U-Hop therefore cannot gain from an implicitly larger beta.

Noise (``corruption="noise"``): ``noise_mode="total_norm"`` adds ``sigma g / ||g||`` (a Gaussian
vector rescaled to norm sigma: the paper's text and ``memory_retrieval_noise_max_loss.py``);
``"per_entry"`` adds N(0, sigma^2) to every entry (``memory_retrieval_noise.py``); both return
``clamp(|x + n|, 0, 1)``.  For ``corruption="mask"`` the ``noise`` axis holds the masked fraction.
The same random numbers are reused at every level of a group (common random numbers), so a curve
over noise levels compares like with like.

Metrics (per query, then mean / std over the M queries of a run): ``sse`` = sum of squared
differences of the clamped images (the paper's metric), ``mse`` = SSE / d, ``success`` = fraction
with ``mse <= success_mse`` (default 60/784, Millidge et al.'s SSE threshold of 60 on 784-pixel
MNIST, per pixel), ``hit`` = fraction whose output is closer (L2) to its own memory than to any
other memory.  Diagnostics: ``eff_support`` = exp(entropy) of the separation weights (1 = one
memory, M = uniform), ``support`` = number of non-zero weights (exact for sparsemax; for softmax
it counts float32 weights that did not underflow), ``top_weight``; for U-Hop the separation loss
of the kernel actually used (avg and max, on all M memories, t) and the minimum pairwise
distance of its normalised features (``min_dist`` = 2 R_Phi), and ``train_loss``, the Stage I
objective at step N (before row normalisation).  Baseline rows have N empty (they do not depend on
N); plot them against N as flat lines.

Modules
-------
:mod:`~uhop.experiments.retrieval.registry` protocols, methods, data sets, CSV columns, derived seeds;
:mod:`~uhop.experiments.retrieval.config` :class:`GridConfig` and the Stage-I settings of a protocol;
:mod:`~uhop.experiments.retrieval.memories` memory sets and corrupted queries;
:mod:`~uhop.experiments.retrieval.scoring` one method on one query set (weights, read-out, metrics, beta search);
:mod:`~uhop.experiments.retrieval.evaluation` one group (M, seed) -> rows, one cell -> one row;
:mod:`~uhop.experiments.retrieval.grid` the resumable CSV grid runner.
Similarities, separations, read-outs, kernel precomputes and argument checks are the core's
(:mod:`uhop.retrieval`, :mod:`uhop.baselines`, :mod:`uhop.kernel`, :mod:`uhop._checks`).
"""

from .config import GridConfig, default_loss, stage1_settings
from .evaluation import evaluate_cell, evaluate_group
from .grid import read_results, run_grid
from .memories import ImagePool, MemoryData, load_memory_set, make_queries
from .registry import (
    COLUMNS,
    CORRUPTIONS,
    DAM_DEGREE,
    DATASETS,
    DEFAULT_BETA_GRID,
    LOSSES,
    METHODS,
    NOISE_MODES,
    PROTOCOLS,
    STAGE1_SAMPLING,
    SYNTHETIC_POOL,
    SYNTHETIC_SHAPE,
    ConfigMismatchError,
    MethodSpec,
    Protocol,
    derive_seed,
)

__all__ = [
    "PROTOCOLS", "METHODS", "DATASETS", "CORRUPTIONS", "NOISE_MODES", "COLUMNS", "Protocol",
    "MethodSpec", "GridConfig", "ConfigMismatchError", "stage1_settings", "load_memory_set",
    "make_queries", "evaluate_group", "evaluate_cell", "run_grid", "read_results",
]
