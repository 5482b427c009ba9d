r"""Time-series forecasting with STanHop-Net, with and without U-Hop (Section 4.2, App F.5, Tables 7-8).

:func:`train_forecaster` trains one variant on one dataset/horizon/seed and returns (and optionally writes)
its metrics; :func:`run` loops over variants and seeds.  Variants:

* ``"stanhop"`` -- :class:`uhop.models.stanhop.STanHopNet` (our construction; learnable-alpha entmax);
* ``"stanhop_uhop"`` -- the same network with every Hopfield layer kernelized (U-Hop), trained with
  Algorithm 2: before each outer Adam step on the task loss, ``inner_steps`` SGD steps (``kernel_lr``,
  0.1 in Table 7) on the separation loss of every U-Hop layer's stored patterns, over the kernel (Phi)
  parameters only (:func:`uhop.nn.separation_step`);
* ``"persistence"`` -- repeat the last observed value (no training);
* ``"linear"`` -- one ``Linear(input_len -> horizon)`` **shared by all channels** (the "Linear" model of
  DLinear, Zeng et al. 2023, with ``individual=False``), trained by the same loop.

Protocol (all from the data layer, :func:`uhop.data.time_series_splits`): standard train/val/test row splits
(``protocol="stanhop"`` by default: ETT 12/4/4 months, WTH 28/10/10 months), z-scored with train statistics;
every window of a split is one sample (stride 1).  Metrics: MSE and MAE on the standardised scale, averaged
over **all** windows, steps and channels of the test split (exact means, not means of batch means).

Training (Table 7 where it says something): Adam ``lr=1e-4``, batch 16, up to 50 epochs, early stopping with
patience 25 on the validation loss (the training criterion on the validation split), the best-validation
weights restored for the test (saved atomically as ``best.pt``), the task loss MAE (App F.5: "minimize both
separation loss and the MAE loss"; ``loss="mse"`` gives the official STanHop code's criterion).  Every epoch
writes ``last.pt`` (model, optimizers, early-stopping state, RNG states) so that an interrupted run resumes
where it stopped and reproduces the uninterrupted run.

:func:`retest` re-tests finished runs from their ``best.pt`` on another set of test windows and measures how far
U-Hop's feature maps moved (:func:`kernel_drift`); command line::

    python -m uhop.experiments.forecasting retest --runs results/forecasting/runs \
        --checkpoints _build/forecasting/checkpoints --cells ETTh1_96,WTH_96 --out results/forecasting/full_test/x.json

Modules
-------
:mod:`~uhop.experiments.forecasting.config` variants, data sets, horizons, Table 8, :class:`ForecastConfig`,
:func:`run_key`, :func:`config_from_parameters`;
:mod:`~uhop.experiments.forecasting.models` the persistence and linear baselines, :func:`build_model`;
:mod:`~uhop.experiments.forecasting.data` the windows of a split and their training batches;
:mod:`~uhop.experiments.forecasting.evaluation` :func:`evaluate`, :func:`retest`, :func:`kernel_drift`;
:mod:`~uhop.experiments.forecasting.training` :func:`train_forecaster` (:class:`uhop.nn.BilevelTrainer` on
the windows), :func:`continue_shorter_run` (a run carried on to a larger epoch cap), :func:`run`;
:mod:`~uhop.experiments.forecasting.results` :func:`load_runs`, :func:`load_results`, :func:`summarize`,
:func:`paired_differences`, :func:`paired_by_seed`, :func:`against_tier`, :func:`pooled_difference`,
:func:`pooled_by_stopping`, :func:`stopping_summary`, :func:`time_split`, :func:`run_wall_times`,
:func:`tier_status`, :func:`paper_table`;
:mod:`~uhop.experiments.forecasting.cli` the command line (:func:`main`).
"""

from .cli import main
from .config import (DATASETS, HORIZONS, LOSSES, PAPER_TABLE8, RUN_PARAMETERS, VARIANT_LABELS, VARIANTS,
                     ZERO_MEANS_ALL, ForecastConfig, config_from_parameters, run_key)
from .evaluation import evaluate, kernel_drift, retest
from .models import LinearForecaster, Persistence, build_model
from .results import (against_tier, benchmark_table, load_results, load_runs, paired_by_seed, paired_differences,
                      paper_table, pooled_by_stopping, pooled_difference, run_wall_times, stopping_summary, summarize,
                      tier_status, time_split)
from .training import continue_shorter_run, run, train_forecaster

__all__ = ["VARIANTS", "VARIANT_LABELS", "DATASETS", "HORIZONS", "PAPER_TABLE8", "ForecastConfig", "Persistence",
           "LinearForecaster", "build_model", "evaluate", "train_forecaster", "run", "load_results", "summarize",
           "paper_table", "run_key", "load_runs", "retest", "kernel_drift", "main", "config_from_parameters",
           "paired_differences", "paired_by_seed", "pooled_difference", "pooled_by_stopping", "stopping_summary",
           "tier_status", "continue_shorter_run", "benchmark_table", "time_split", "run_wall_times", "against_tier"]
