"""Run the full-size experiments: ``python -m uhop.reproduce run`` (what ``make results`` calls).

The runs are listed in ``notebooks/full_size.yml`` of the repository: each names an experiment notebook and the
papermill parameters of its full-size configuration; the notebook writes its results and manifests under
``results/``.  Three ways to run them:

* **sequentially** (default, ``--jobs 1``): one run after another on this machine;
* **a local pool** (``--jobs N``): N runs at a time, each in its own process with one torch thread
  (``OMP_NUM_THREADS=1``) and, when GPUs are visible, the GPU of its worker slot (``CUDA_VISIBLE_DEVICES``);
* **a Dask cluster** (``--scheduler tcp://host:8786``, or ``--scheduler local:N`` for a
  ``distributed.LocalCluster`` of N workers on this machine, or ``--cluster-config FILE`` for a
  ``dask-jobqueue`` Slurm/PBS cluster): every run is one task; the workers need this checkout at the same
  path (a shared file system) and the ``cluster`` extra.

Each run is one unit of work: a child process ``python -m uhop.reproduce run --only NAME --in-process``
whose output goes to ``_build/reproduce/logs/NAME.log``.  A run holds an exclusive lock
(``_build/reproduce/locks/NAME.lock``) while it executes, so a second ``reproduce`` process asked for the same
run refuses, naming the holder, instead of writing into the same files.  The runs write their results through
the notebooks' own resumable writers (atomic files per finished unit -- a grid's (M, seed) group, a training
run's (variant, seed) -- with configuration fingerprints checked before writing), so a run interrupted on any
path resumes from what it had committed.

**A worker that dies** (the run's process or its notebook kernel killed, e.g. by the out-of-memory killer, or a
process of a grid's worker pool killed) makes the run retryable: it is started again, up to ``--retries``
times, and resumes from its last committed unit; what it had committed is kept.  A notebook that fails with an
ordinary error is not retried (it would fail again).  On Dask, a task whose worker process dies is rescheduled
by the scheduler and resumes the same way; the run's process is started so that it dies with its worker
(Linux), so no orphan keeps writing.  Which unit of a grid runs where never changes a number: every unit seeds
itself, so results equal a sequential run's (tested, also with a worker killed mid-run).

This package needs the ``book`` extra (jupytext, papermill, PyYAML) and a checkout of the repository.

The package: :mod:`~uhop.reproduce.runs` (the runs file, each run's state on disk, the listing),
:mod:`~uhop.reproduce.execute` (one run executed in this process), :mod:`~uhop.reproduce.unit` (one run as a
child process, retried when its worker dies), :mod:`~uhop.reproduce.progress` (the progress display),
:mod:`~uhop.reproduce.local` and :mod:`~uhop.reproduce.cluster` (a local pool; Dask) and
:mod:`~uhop.reproduce.cli` (the command line).
"""

from .cli import main
from .cluster import run_dask
from .execute import EXIT_FAILED, EXIT_LOCKED, EXIT_WORKER_DIED
from .local import run_local
from .runs import estimate_seconds, load_runs, notebook_source, run_status, run_units

__all__ = ["load_runs", "estimate_seconds", "run_status", "run_units", "main"]
