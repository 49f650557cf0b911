"""`mlops run`: materialize the whole asset graph in this process and summarise what happened.

In-process execution avoids paying Dagster's per-step subprocess start-up; the run still goes
through the Dagster instance under $MLOPS_HOME/dagster, so it shows in the UI with its events.
The definitions are built for the caller's settings (:func:`mlops_assets.resources.bind`) and
the instance is opened from its home: nothing is passed through the environment, except the
one switch Dagster reads only from there (below).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from mlops_assets.run.plan import RunSetupError, landing_bytes, plan_run
from mlops_assets.run.recovery import PROCESS_TAG, TRIGGER, TRIGGER_TAG, recover, this_process
from mlops_assets.run.report import RunReport, read_events, read_warehouse
from mlops_assets.settings import Settings

# Landing files of at least this size in the run's days (with enough days: the new ones and
# those of failed runs it does again) start the Dask workers at the run's start: the sample
# data's 100,000 applications with their customers and outcomes are 27 MB, so this is about
# 22,000 applications, near where the drift reports' days go to the workers
# (``PARALLEL_FROM_ROWS``). Below it a step that wants the workers starts them.
WARM_UP_FROM_BYTES = 6_000_000


@contextlib.contextmanager
def _warnings_to(log: TextIO, earlier: Sequence[warnings.WarningMessage] = ()) -> Iterator[None]:
    """Python warnings of the run (a library's RuntimeWarning, Dagster's beta notices), and
    the ``earlier`` ones recorded while it was set up, are written to the run's log instead
    of the user's terminal."""

    shown_before = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        # catch_warnings is not thread-safe: a thread that entered one during the run and
        # leaves it after restores this function when the log is closed. Warn as before then.
        if log.closed:
            shown_before(message, category, filename, lineno, file, line)
            return
        log.write(warnings.formatwarning(message, category, filename, lineno, line))

    for caught in earlier:
        show(caught.message, caught.category, caught.filename, caught.lineno, line=caught.line)
    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def run_pipeline(
    settings: Settings,
    *,
    fetch_table_metadata: bool = True,
    on_event: Callable[[str, str], None] | None = None,
    ends_process: bool = False,
) -> RunReport:
    """Ingest every landing day with new or changed files and build everything downstream,
    in one in-process run. With nothing new to ingest, only the unpartitioned assets (the dbt
    models and what follows) are rebuilt.

    ``on_event(kind, step)`` is called from a watcher thread as steps start and finish.

    ``ends_process``: the process exits after this run (the ``mlops run`` command). What the
    set-up makes (the modules of Dagster, dbt and scikit-learn, the definitions) then lives until
    the exit: the garbage collector is off while it is made (its passes over the growing heap
    would free a few MB), and it is moved out of the collector's reach before the run
    (``gc.freeze``), so the full passes no longer walk it again and again (docs/benchmarks.md,
    the demo). Not for a process that goes on (a test's): a reference cycle among what was
    frozen would never be collected.
    """
    from mlops_assets.transform.parse import (
        DbtParse,
        DbtParseError,
        build_state_is_current,
        build_vars,
        manifest_is_current,
    )

    # Overlap the start-up: dbt parses in its process while this one plans the run, imports the
    # platform (Dagster, dagster-dbt and every stage) and, when the published manifest is
    # current (the dbt project unchanged since it was parsed), builds the definitions from it.
    # The parse is for this run's build, which then starts from its state instead of a full
    # parse: the run waits for it before its first step. A run after an earlier one in the
    # same home, the dbt project unchanged, finds that state ready and starts no parse.
    for_build = (
        build_vars(str(settings.warehouse_path), settings.duckdb_memory_limit),
        settings.dbt_target_dir,
    )
    parsing = (
        None if build_state_is_current(os.environ, for_build) else DbtParse(os.environ, for_build)
    )

    def parsed() -> None:
        if parsing is None:
            return
        try:
            parsing.wait()
        except DbtParseError as error:
            raise RunSetupError(str(error)) from error

    if ends_process:
        gc.disable()
    try:
        plan = plan_run(settings)
        # One "planned" event per asset for the range of days, not one per asset and day: on
        # the SQLite instance each event is its own write, and 90 days x 14 assets cost ~20 s
        # before the first step. The price: if the run fails, its days are not marked failed
        # in the UI's partition view (the run itself, its failed step and pipeline health
        # still say so). Dagster reads this switch from the environment only.
        os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
        from dagster._core.utils import make_new_run_id

        from mlops_assets.definitions import build_definitions, import_stages
        from mlops_assets.monitoring.daily import PARALLEL_FROM_DAYS
        from mlops_assets.resources import start_local_cluster
        from mlops_assets.run.instance import batch_event_writes, dagster_instance

        batch_event_writes(os.environ)

        with warnings.catch_warnings(record=True) as setup_warnings:
            if not manifest_is_current():
                if parsing is None:  # a file of the dbt project changed since the run started
                    parsing = DbtParse(os.environ, for_build)
                # The dbt assets are built from the manifest this parse publishes (the first
                # run of a checkout, or one after a model was edited): what the definitions are
                # built from is imported meanwhile, on this core while dbt parses on the other.
                # A module that fails to import is not kept: building the definitions imports
                # it again and says so as it would have, after the parse has said its part.
                with contextlib.suppress(Exception):
                    import_stages()
                parsed()
            defs = build_definitions(settings)
            instance = dagster_instance(settings)
            pending, notices = recover(instance, plan.new_days)
            graph = defs.resolve_asset_graph()
            job = defs.resolve_implicit_global_asset_job_def()
        parsed()
    finally:
        if ends_process:
            gc.freeze()
            gc.enable()
        if parsing is not None:
            parsing.cancel()  # a set-up that failed leaves no parse running
    if pending:
        # One run over the range of pending days (single-run backfill of the partitioned
        # assets: raw tables and drift reports).
        selection = None
        tags = {
            "dagster/asset_partition_range_start": pending[0],
            "dagster/asset_partition_range_end": pending[-1],
        }
        # With as many new days and rows as make their drift reports fan out, the Dask
        # workers start and import while ingestion and dbt run; not earlier, where they took
        # the CPU from the start-up above. A smaller run starts them only if a step asks for
        # them (a search on many training rows): small runs need none.
        if (
            len(pending) >= PARALLEL_FROM_DAYS
            and landing_bytes(settings, pending) >= WARM_UP_FROM_BYTES
        ):
            start_local_cluster(defs.resources["dask"])
    else:
        selection = [
            n.key for n in graph.asset_nodes if n.is_materializable and not n.is_partitioned
        ]
        tags = {}
    selected_keys = set(selection) if selection else {n.key for n in graph.asset_nodes}
    run_id = make_new_run_id()
    watcher = _StepWatcher(instance, run_id, on_event) if on_event else None
    log_path = settings.home / "logs" / f"run-{run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if watcher:
        watcher.start()
    # dbt's own log lines, and the Python warnings of the libraries, go to a file, not the
    # terminal (the summary says where).
    with (
        open(log_path, "w") as log,
        contextlib.redirect_stdout(log),
        _warnings_to(log, setup_warnings),
    ):
        try:
            result = job.execute_in_process(
                instance=instance,
                run_id=run_id,
                raise_on_error=False,
                asset_selection=selection,
                tags={**tags, TRIGGER_TAG: TRIGGER, PROCESS_TAG: this_process()},
                run_config={
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                    "ops": {
                        "dbt_models": {"config": {"fetch_table_metadata": fetch_table_metadata}},
                    },
                },
            )
        finally:
            if watcher:
                watcher.stop()
    report = RunReport(
        run_id=run_id,
        success=result.success,
        seconds=time.monotonic() - started,
        log_path=log_path,
        ingested_days=plan.new_days,
        notices=[*plan.notices, *notices],
        refused_files=plan.refused,
    )
    read_events(report, result, graph, instance, selected_keys)
    if settings.warehouse_path.exists():
        from mlops_assets.ops.health import record_run
        from mlops_assets.warehouse import connection

        with connection(settings.warehouse_path, memory_limit=settings.duckdb_memory_limit) as con:
            # Not a step of the run: recorded after it, with its outcome.
            instance.report_runless_asset_event(record_run(instance, run_id, con))
            read_warehouse(report, con, pending)
    return report


class _StepWatcher:
    """Polls the run's event log and reports step starts and ends (for progress display)."""

    def __init__(self, instance, run_id: str, on_event: Callable[[str, str], None]) -> None:
        self._instance, self._run_id, self._on_event = instance, run_id, on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlops-run-watcher", daemon=True)
        self._seen = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll()  # whatever arrived after the last tick

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._poll()

    def _poll(self) -> None:
        from dagster import DagsterEventType

        kinds = {
            DagsterEventType.STEP_START: "start",
            DagsterEventType.STEP_SUCCESS: "success",
            DagsterEventType.STEP_FAILURE: "failure",
            DagsterEventType.STEP_SKIPPED: "skipped",
        }
        try:
            entries = self._instance.all_logs(self._run_id, of_type=set(kinds))
        except Exception:  # the run may not be registered yet
            return
        for entry in entries[self._seen :]:
            self._on_event(kinds[entry.dagster_event.event_type], entry.step_key or "")
        self._seen = len(entries)
