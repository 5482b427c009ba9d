"""Runs on a Dask cluster (``--scheduler tcp://host:8786``, ``--scheduler local:N`` or ``--cluster-config
FILE`` for dask-jobqueue): every run one task; needs the ``cluster`` extra."""

from __future__ import annotations

from pathlib import Path

from .progress import Progress
from .unit import open_attempt, previous_attempts, run_unit


def dask_client(scheduler: str | None, cluster_config: str | None, connect_timeout: float = 10.0,
                 retries: int = 2):
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover
        raise SystemExit("--scheduler needs Dask distributed: pip install 'uhop[cluster]'") from err
    if cluster_config:
        import yaml

        cfg = yaml.safe_load(Path(cluster_config).read_text()) or {}
        kind = cfg.pop("kind", "slurm")
        jobs = int(cfg.pop("jobs", 1))
        try:
            import dask_jobqueue
        except ImportError as err:  # pragma: no cover
            raise SystemExit("--cluster-config needs dask-jobqueue: pip install dask-jobqueue") from err
        kinds = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
        if kind not in kinds:
            raise SystemExit(f"{cluster_config}: kind must be one of {sorted(kinds)}, got {kind!r}")
        cluster = kinds[kind](**cfg)
        cluster.scale(jobs=jobs)
        return Client(cluster), cluster
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
            assert n >= 1
        except (ValueError, AssertionError):
            raise SystemExit(f"--scheduler {scheduler}: expected local:N with N >= 1 workers") from None
        # a task whose worker dies is rescheduled this many times before Dask gives up on it (KilledWorker)
        dask.config.set({"distributed.scheduler.allowed-failures": retries})
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=f"{connect_timeout}s"), None
    except Exception as err:  # OSError, TimeoutError, ValueError for a malformed address, ...
        raise SystemExit(f"cannot reach the Dask scheduler at {scheduler} within {connect_timeout:g} s "
                         f"({type(err).__name__}: {err}); is it running, and is the address right? "
                         "(--connect-timeout sets the wait)") from None


def run_dask(runs: list[dict], spec: Path, repo: Path, scheduler: str | None, cluster_config: str | None = None,
             *, retries: int = 2, session: str = "", progress_every: float = 60.0, connect_timeout: float = 10.0
             ) -> list[dict]:
    """Every run as one Dask task.  A task whose worker process dies is rescheduled by Dask (its scheduler's
    ``allowed-failures``, set to ``retries`` for ``local:N``) and resumes from its committed units; a run whose
    child process dies under a living worker is retried by :func:`run_unit` (``retries``)."""
    from distributed import as_completed as dask_completed

    client, cluster = dask_client(scheduler, cluster_config, connect_timeout, retries)
    try:
        workers = len(client.scheduler_info().get("workers") or {}) or 1
        progress = Progress(runs, workers, repo)
        keys = {f"uhop-run-{r['name']}": r["name"] for r in runs}

        def worker_labels():
            # which worker processes which run, as the scheduler sees it
            busy = {}
            for addr, tasks in client.processing().items():
                for key in tasks:
                    # processing includes a task queued on the worker: running when its log has an open attempt
                    if key in keys and open_attempt(progress.log_dir / f"{keys[key]}.log", session):
                        busy[keys[key]] = f"worker {addr}"
            for name in list(progress.running):
                if name not in busy:
                    progress.running.pop(name, None)
            for name, label in busy.items():
                if progress.running.get(name, {}).get("worker") != label:
                    progress.started(name, label)
            known = {f"worker {addr}" for addr in client.scheduler_info().get("workers") or {}}
            return sorted(known | set(busy.values()))

        futures = {client.submit(run_unit, r["name"], str(spec), str(repo), None, retries, session,
                                 key=f"uhop-run-{r['name']}", pure=False): r["name"] for r in runs}
        results = []
        stop = progress.every(progress_every, worker_labels)
        try:
            for fut in dask_completed(list(futures)):
                try:
                    result = fut.result()
                except Exception as err:  # KilledWorker: its workers died more than allowed-failures times
                    name = futures[fut]
                    result = {"name": name, "returncode": None, "seconds": 0.0, "host": "?",
                              "reason": f"{type(err).__name__}: {err}",
                              "log": str(repo / "_build" / "reproduce" / "logs" / f"{name}.log"),
                              "attempts": previous_attempts(repo / "_build" / "reproduce" / "logs" / f"{name}.log",
                                                             session)}
                progress.finished(result)
                results.append(result)
        finally:
            stop.set()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results
