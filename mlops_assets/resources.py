"""Dagster resources shared by every stage (the warehouse file, the landing zone, the keyring,
Dask, the model registry), and :func:`bind`, which gives definitions the paths and landing days
of one environment's :class:`~mlops_assets.settings.Settings` when they load.

Steps never resolve settings themselves: whatever they need of the environment is a field of
a resource here.
"""

import atexit
import contextlib
import copy
import importlib
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb

from mlops_assets import warehouse
from mlops_assets.ops.alerting import AlertsResource
from mlops_assets.partitions import LANDING_DAYS, landing_days
from mlops_assets.security.keyring import Keyring
from mlops_assets.settings import DEFAULT_CHUNK_ROWS, DEFAULT_MEMORY_LIMIT, Settings

# DuckDB allows one writing process per file: every asset that writes runs in this pool, whose
# limit is 1 (set in the instance's dagster.yaml).
WRITER_POOL = "duckdb_writer"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. Writers run in the `duckdb_writer` pool (one at a time).

    Another process holding the file lock (a `dbt build` from the CLI, a notebook) is the one
    transient failure: the connection waits ``lock_wait_seconds``, then the step is retried up
    to ``lock_retries`` times, ``retry_delay_seconds`` apart. Every other error fails at once.
    """

    path: str
    memory_limit: str = DEFAULT_MEMORY_LIMIT  # DuckDB spills to disk beyond it
    lock_wait_seconds: float = warehouse.LOCK_WAIT_SECONDS
    lock_retries: int = 3
    retry_delay_seconds: float = 60.0

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            # The pipeline's writers build the warehouse; nothing else creates one.
            with warehouse.connection(
                Path(self.path),
                read_only=read_only,
                create=not read_only,
                wait_seconds=self.lock_wait_seconds,
                memory_limit=self.memory_limit,
            ) as con:
                yield con
        except warehouse.WarehouseLockedError as error:
            raise self.retry_on_lock(error) from error

    def retry_on_lock(self, error: BaseException) -> dg.RetryRequested:
        """The retry request for a busy lock (raise it ``from error``)."""
        return dg.RetryRequested(
            max_retries=self.lock_retries, seconds_to_wait=self.retry_delay_seconds
        )


class LandingZone(dg.ConfigurableResource):
    """Where landing files arrive: ``<path>/<source>/<YYYY-MM-DD>.csv``, dated from
    ``first_day`` (the first landing-day partition) to at most ``horizon_days`` after today
    (later files are refused)."""

    path: str
    first_day: str = LANDING_DAYS.start.date().isoformat()
    horizon_days: int = 1

    @property
    def directory(self) -> Path:
        return Path(self.path)


class KeyringResource(dg.ConfigurableResource):
    """The keyring file (pseudonym key and vault keys); see mlops_assets.security.keyring."""

    path: str

    def load(self) -> Keyring:
        return Keyring.load(Path(self.path))


class DaskResource(dg.ConfigurableResource):
    """Where parallel work runs: the scheduler at ``scheduler_address`` (the
    DASK_SCHEDULER_ADDRESS setting), or a LocalCluster of ``n_workers`` single-threaded worker
    processes, started once per process and shared by the steps of a run (starting workers
    costs seconds of imports), closed when the process exits."""

    scheduler_address: str | None = None
    n_workers: int = 2
    chunk_rows: int = DEFAULT_CHUNK_ROWS  # rows per task of the stages that fan out

    @property
    def has_scheduler(self) -> bool:
        """Whether a scheduler address is set (a cluster someone runs): else a LocalCluster."""
        return bool(self.scheduler_address)

    @contextlib.contextmanager
    def client(self) -> Iterator:
        from distributed import Client  # heavy: only when a step needs it

        with Client(self.scheduler_address or _local_cluster(self.n_workers)) as client:
            yield client


# The LocalCluster's housekeeping, for a cluster that serves no dashboard: no statistical
# profiler in each worker (a sample of every thread's stack every 10 ms, for the dashboard's
# profile page), the event loops' health checked every second instead of every 20 ms (a loop
# blocked for 3 s is still reported), the system monitor (the dashboard's CPU and network
# plots) every 5 s instead of every 0.5 s. The memory monitor that keeps a worker under its
# memory limit is left as it is. Idle, a cluster of two workers: 7.9 -> 2.0 CPU-s a minute.
CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}

_clusters: dict[int, object] = {}
_clusters_lock = threading.Lock()
_forkserver_lock = threading.Lock()
_forkserver_usable: bool | None = None  # decided at the first cluster (_forked_workers)
_warm_ups: list[threading.Thread] = []  # start_local_cluster's threads, until closed


def new_local_cluster(n_workers: int, **options):
    """A LocalCluster of ``n_workers`` single-threaded worker processes and no dashboard, with
    :data:`CLUSTER_CONFIG` (``options``: more of LocalCluster's). The caller closes it."""
    import dask
    from distributed import LocalCluster

    # the scheduler and the nannies read it as they start
    with dask.config.set({**CLUSTER_CONFIG, **_forked_workers()}):
        # Each nanny keeps its own copy for every worker it starts, again after one died (the
        # nannies' default shares the nested settings with this process's, which the context
        # restores).
        workers_config = {"distributed": copy.deepcopy(dask.config.get("distributed"))}
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            config=workers_config,
            **options,
        )


def _forked_workers() -> dict[str, str]:
    """Dask's setting that makes a LocalCluster's nannies fork their worker processes from a
    server process ("forkserver") that imported Dask and :data:`WORKER_IMPORTS` once, instead
    of starting a new interpreter for each worker that imports them again ("spawn", Dask's
    default): a worker starts in a fraction of a second instead of several CPU-seconds of
    imports. The server is started by this process's first cluster, after the nannies have
    set their pre-spawn variables in this process's environment (``OMP_NUM_THREADS=1``,
    ``MALLOC_TRIM_THRESHOLD_``, ``PYTHONHASHSEED``), so its workers start with them as spawned
    ones do; it serves every later cluster of the process. A worker its nanny starts again
    after it died is spawned (the setting holds while the cluster starts).

    No setting (spawn) where there is no forkserver, where this process already runs one
    (started by other code, with other imports and another environment), or where Dask's
    configuration names a method other than spawn."""
    import multiprocessing
    import multiprocessing.forkserver

    import dask
    from distributed.utils import get_mp_context

    global _forkserver_usable
    key = "distributed.worker.multiprocessing-method"
    with _forkserver_lock:
        if _forkserver_usable is None:
            try:
                context = multiprocessing.get_context("forkserver")
            except ValueError:  # a platform without fork
                context = None
            # Python keeps one forkserver per process; its preload is read when it starts.
            running = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
            _forkserver_usable = (
                context is not None and running is None and dask.config.get(key) == "spawn"
            )
            if _forkserver_usable:
                with dask.config.set({key: "forkserver"}):
                    get_mp_context()  # Dask sets its own list of imports, once per process
                # ... which this one replaces before the server starts: Dask's and the tasks'
                context.set_forkserver_preload(["distributed", *WORKER_IMPORTS])
    return {key: "forkserver"} if _forkserver_usable else {}


def _local_cluster(n_workers: int):
    with _clusters_lock:
        if n_workers not in _clusters:
            # The worker processes' own log lines (a heartbeat that finds the scheduler gone
            # when a stopped run exits, with its traceback; a failed task's data) are not the
            # user's: a task's error reaches the step that sent it, which reports it. Only
            # critical ones reach the terminal. This process's (the nannies': a worker killed
            # for its memory or dead) still print from warnings up.
            cluster = new_local_cluster(
                n_workers,
                preload=["mlops_assets.parallel"],  # its dask_setup, in each worker
            )
            _clusters[n_workers] = cluster
            atexit.register(cluster.close)
        return _clusters[n_workers]


def close_local_clusters() -> None:
    """Close the LocalClusters this process started, for a process that goes on after its
    runs (a test's, a notebook's): idle, a cluster of two workers still costs ~2 CPU-seconds
    a minute (heartbeats, event loops). The next run starts one
    again. A warm-up still starting a cluster (a run that ended early) is waited for first,
    so that it does not start one after this."""
    while _warm_ups:
        _warm_ups.pop().join(timeout=120)
    with _clusters_lock:
        clusters = list(_clusters.values())
        _clusters.clear()
    for cluster in clusters:
        cluster.close()
        atexit.unregister(cluster.close)  # after: one that would not close is closed at exit


# What every task of a run imports on a worker (the search, scoring and drift code), ~4 s each.
WORKER_IMPORTS = (
    "sklearn.ensemble",
    "mlops_assets.training.search",
    "mlops_assets.monitoring.daily",
    "mlops_assets.features.validation",
    "scipy.stats",  # the drift tests import it inside the step
)


def _import_on_worker(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


def start_local_cluster(dask: DaskResource) -> threading.Thread | None:
    """Start the LocalCluster the run's steps will share, and the workers' imports, on a
    background thread, so that they happen while ingestion and dbt keep one core busy instead
    of when the first parallel step waits for them. Nothing to do with a scheduler address
    (that cluster is already running)."""
    if dask.has_scheduler:
        return None
    n_workers = dask.n_workers

    def start() -> None:
        from distributed import Client

        # Only a head start: a cluster that cannot start, or that closes while its workers
        # import (a run stopped by a full disk), is the parallel step's error to report, in
        # the step, not a traceback from this thread.
        try:
            with Client(_local_cluster(n_workers)) as client:
                client.run(_import_on_worker, WORKER_IMPORTS)
        except Exception as error:
            stopped = type(error).__name__
            warnings.warn(f"the Dask workers' warm-up stopped: {stopped}", stacklevel=1)

    thread = threading.Thread(target=start, name="mlops-dask-start", daemon=True)
    thread.start()
    _warm_ups.append(thread)
    return thread


class RegistryResource(dg.ConfigurableResource):
    """The model registry directory (``$MLOPS_HOME/models``), the keyring whose model signing
    key seals and verifies its versions, and where reports on the models go
    (``$MLOPS_HOME/reports``)."""

    path: str
    keyring_path: str
    reports_path: str

    def open(self):
        from mlops_assets.training.registry import Registry

        return Registry(Path(self.path), Path(self.keyring_path))


def default_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources of every stage, bound to ``settings``' paths."""
    from mlops_assets.transform.resource import dbt_resource

    return {
        "warehouse": WarehouseResource(
            path=str(settings.warehouse_path), memory_limit=settings.duckdb_memory_limit
        ),
        "landing": LandingZone(
            path=str(settings.landing_dir),
            first_day=settings.first_landing_date,
            horizon_days=settings.landing_horizon_days,
        ),
        "keyring": KeyringResource(path=str(settings.keyring_path)),
        "dask": DaskResource(
            scheduler_address=settings.dask_scheduler_address, chunk_rows=settings.chunk_rows
        ),
        "alerts": AlertsResource(webhook_url=settings.alert_webhook),
        "dbt": dbt_resource(settings.dbt_target_dir),
        "registry": RegistryResource(
            path=str(settings.models_dir),
            keyring_path=str(settings.keyring_path),
            reports_path=str(settings.reports_dir),
        ),
    }


def bind(defs: dg.Definitions, settings: Settings) -> dg.Definitions:
    """``defs`` as ``settings`` configure them, once, when the definitions load: the resources
    on its paths, and the landing days (assets partitioned by
    :data:`~mlops_assets.partitions.LANDING_DAYS`) from its first landing date to its horizon."""
    days = landing_days(settings.first_landing_date, settings.landing_horizon_days)

    def configure(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.partitions_def != LANDING_DAYS or days == LANDING_DAYS:
            return spec
        return spec.replace_attributes(partitions_def=days)

    with warnings.catch_warnings():  # Dagster calls its own map_asset_specs a preview
        warnings.simplefilter("ignore", dg.PreviewWarning)
        defs = defs.map_asset_specs(func=configure)
    return defs.with_resources(default_resources(settings))
