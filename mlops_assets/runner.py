"""`mlops run`: materialize the whole asset graph in this process and summarise what happened.

In-process execution avoids paying Dagster's per-step subprocess start-up; the run still goes
through the Dagster instance under $MLOPS_HOME/dagster, so it shows in the UI with its events.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from mlops_assets.ingestion.landing import (
    RefusedFile,
    landing_files,
    latest_landing_day,
    partition_key_of,
    pending_files,
    scan_landing,
)
from mlops_assets.ingestion.sources import SOURCE_SPECS
from mlops_assets.security.keyring import Keyring
from mlops_assets.security.vault import bound_fingerprint
from mlops_assets.settings import Settings
from mlops_assets.text import printable
from mlops_assets.warehouse import connection, table_row_counts

REPORTED_SCHEMAS = (
    "raw",
    "staging",
    "intermediate",
    "marts",
    "features",
    "predictions",
    "monitoring",
    "quarantine",
)


class RunSetupError(RuntimeError):
    """The run cannot start: nothing to ingest, or landing files outside the partitions."""


@dataclass
class CheckOutcome:
    asset: str
    name: str
    passed: bool
    blocking: bool
    detail: str = ""  # what the check's metadata says went wrong


@dataclass
class RunReport:
    run_id: str
    success: bool
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failed_steps: list[str] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    log_path: Path | None = None
    ingested_days: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    refused_files: list[str] = field(default_factory=list)  # "path: reason", shown as text
    drifted_days: list[str] = field(default_factory=list)  # of the ingested days

    @property
    def failed_blocking_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.blocking and not c.passed]

    @property
    def ok(self) -> bool:
        return self.success and not self.failed_steps and not self.failed_blocking_checks

    @property
    def quarantined(self) -> dict[str, int]:
        return {k: v for k, v in self.tables.items() if k.startswith("quarantine.")}

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()},
            "failed_steps": self.failed_steps,
            "checks": {
                "passed": sum(c.passed for c in self.checks),
                "failed": [f"{c.asset}:{c.name}" for c in self.checks if not c.passed],
                "failed_blocking": [f"{c.asset}:{c.name}" for c in self.failed_blocking_checks],
                "details": {f"{c.asset}:{c.name}": c.detail for c in self.checks if not c.passed},
            },
            "ingested_days": self.ingested_days,
            "drifted_days": self.drifted_days,
            "notices": self.notices,
            "refused_files": self.refused_files,
            "tables": self.tables,
            "log": str(self.log_path) if self.log_path else None,
        }


def check_writable(home: Path) -> None:
    """Refuse to start in a home that cannot be written (read-only file system, permissions,
    a full disk), before anything is half done."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".write-check-") as probe:
            probe.write(b"\0" * 65536)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise RunSetupError(
            f"MLOPS_HOME {home} cannot be written: {error.strerror}. Make it writable (or free "
            "space) and run again; nothing was changed"
        ) from None


def landing_dates(settings: Settings, *, pending_only: bool = False) -> list[str]:
    """Landing days with at least one file (only new or changed files with ``pending_only``).

    Refused entries (:func:`refused_landing_files`) count on no day: they never reach the
    partitions."""
    latest = latest_landing_day(settings.landing_horizon_days)
    landing = settings.landing_dir
    if pending_only and settings.warehouse_path.exists():
        with connection(settings.warehouse_path, read_only=True) as con:
            paths = [p for s in SOURCE_SPECS for p in pending_files(con, landing, s, latest)]
    else:
        paths = [p for s in SOURCE_SPECS for p in landing_files(landing, s, latest=latest)]
    return sorted({partition_key_of(p) for p in paths})


def refused_landing_files(settings: Settings) -> list[RefusedFile]:
    """Entries of the landing folders that are not ingested: a name that is not a landing day,
    a day past the horizon, a link, a folder, a FIFO… (ingestion records them in the ledger)."""
    latest = latest_landing_day(settings.landing_horizon_days)
    return [
        refused
        for source in SOURCE_SPECS
        for refused in scan_landing(settings.landing_dir, source, latest).refused
    ]


def ensure_keyring(settings: Settings) -> str | None:
    """Create the keyring on a fresh home (returns what to tell the user); refuse to replace
    a lost one for a warehouse that was built with it."""
    if settings.keyring_path.exists():
        return None
    bound = bound_fingerprint(settings.warehouse_path)
    if bound:
        raise RunSetupError(
            f"no keyring at {settings.keyring_path}, but this warehouse's pseudonyms and "
            f"vault were made with keyring {bound}: restore that keyring file or set "
            "MLOPS_KEYRING to its path (a new keyring would not match)"
        )
    Keyring.create(settings.keyring_path)
    return (
        f"created a new keyring at {settings.keyring_path} — back it up, apart from the "
        "warehouse: without it the vault cannot be read and new pseudonyms will not match"
    )


def run_pipeline(
    settings: Settings,
    *,
    fetch_table_metadata: bool = True,
    on_event: Callable[[str, str], None] | None = None,
) -> RunReport:
    """Ingest every landing day with new or changed files and build everything downstream,
    in one in-process run. With nothing new to ingest, only the dbt models are rebuilt.

    ``on_event(kind, step)`` is called from a watcher thread as steps start and finish.
    """
    check_writable(settings.home)
    settings.ensure_dagster_home()
    os.environ["MLOPS_HOME"] = str(settings.home)  # for dbt, which reads it from the environment
    # One "planned" event per asset for the range of days, not one per asset and day: on the
    # SQLite instance each event is its own write, and 90 days x 14 assets cost ~20 s before
    # the first step. The price: if the run fails, its days are not marked failed in the UI's
    # partition view (the run itself, its failed step and pipeline health still say so).
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")

    from mlops_assets.transform.parse import DbtParse, DbtParseError

    dates = landing_dates(settings)
    refused = [printable(r.text) for r in refused_landing_files(settings)]
    if not dates:
        raise RunSetupError(
            f"no landing files under {settings.landing_dir}: run `mlops generate` first "
            "or drop <source>/<YYYY-MM-DD>.csv files there"
            + "".join(f"\n  refused {text}" for text in refused)
        )
    first = settings.first_landing_date
    if dates[0] < first:
        raise RunSetupError(
            f"landing files start on {dates[0]}, before the first partition {first}: "
            f"set MLOPS_FIRST_LANDING_DATE={dates[0]}"
        )
    notice = ensure_keyring(settings)
    notices = [notice] if notice else []
    pending = landing_dates(settings, pending_only=True)
    # Overlap the start-up: dbt parses in its process while this one imports everything but
    # the dbt assets (which need the manifest). Heavy imports happen here, not when the CLI
    # starts.
    parsing = DbtParse()
    import dagster as dg
    from dagster._core.utils import make_new_run_id

    from mlops_assets.ops.health import record_run, step_durations
    from mlops_assets.resources import start_local_cluster

    for module in ("automation", "features.assets", "monitoring.assets", "training.assets"):
        importlib.import_module(f"mlops_assets.{module}")
    importlib.import_module("dagster_dbt")  # ~2 s of dbt-core modules, while dbt still parses
    try:
        parsing.wait()
    except DbtParseError as error:
        raise RunSetupError(str(error)) from error
    from mlops_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    notices += fail_dead_runs(instance)
    # Days a failed or killed run ingested but may not have carried through (features,
    # models, scores, drift reports) are run again with the new ones.
    new_days = pending
    redone = sorted(unfinished_days(instance) - set(new_days))
    if redone:
        notices.append(
            f"running again {len(redone)} day(s) of runs that did not finish "
            f"({redone[0]} … {redone[-1]})"
        )
    pending = sorted({*new_days, *redone})
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    group_of_op = {
        node.assets_def.node_def.name: node.group_name
        for node in graph.asset_nodes
        if node.is_materializable
    }
    blocking = {key: graph.get_check_spec(key).blocking for key in graph.asset_check_keys}
    if pending:
        # One run over the range of pending days (single-run backfill of the partitioned
        # assets: raw tables and drift reports).
        selection = None
        tags = {
            "dagster/asset_partition_range_start": pending[0],
            "dagster/asset_partition_range_end": pending[-1],
        }
    else:
        selection = [
            n.key for n in graph.asset_nodes if n.is_materializable and not n.is_partitioned
        ]
        tags = {}
    selected_keys = set(selection) if selection else {n.key for n in graph.asset_nodes}
    if pending:
        # With new days to train and monitor on, the Dask workers start and import while
        # ingestion and dbt run; not earlier, where they took the CPU from the start-up above.
        start_local_cluster()
    run_id = make_new_run_id()
    watcher = _StepWatcher(instance, run_id, on_event) if on_event else None
    log_path = settings.home / "logs" / f"run-{run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if watcher:
        watcher.start()
    # dbt's own log lines go to a file, not the terminal (the summary says where).
    with open(log_path, "w") as log, contextlib.redirect_stdout(log):
        try:
            result = job.execute_in_process(
                instance=instance,
                run_id=run_id,
                raise_on_error=False,
                asset_selection=selection,
                tags={**tags, "mlops/trigger": "mlops run", PROCESS_TAG: _this_process()},
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
        ingested_days=new_days,
        notices=notices,
        refused_files=refused,
    )

    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    for node in graph.asset_nodes:
        # Not monitoring/pipeline_runs: it is recorded after the run, not by a step of it.
        skipped = (
            node.is_materializable and node.key not in materialized and node.key in selected_keys
        )
        if result.success and skipped and node.group_name in ("training", "scoring", "monitoring"):
            report.notices.append(
                f"{node.key.to_user_string()} not materialized: too few labelled applications "
                "yet, or no champion to score with or monitor (the run log says which)"
            )
    for step, seconds in step_durations(instance, run_id).items():
        group = group_of_op.get(step, "checks")  # ops that are not assets: asset checks
        report.stage_seconds[group] = report.stage_seconds.get(group, 0.0) + seconds
    report.failed_steps = [
        f"{event.step_key}: {_root_cause(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure and event.step_key and event.step_failure_data.error
    ]
    for evaluation in result.get_asset_check_evaluations():
        key = evaluation.asset_check_key
        report.checks.append(
            CheckOutcome(
                asset=key.asset_key.to_user_string(),
                name=key.name,
                passed=evaluation.passed,
                blocking=blocking.get(key, False),
                detail=_describe(evaluation.metadata) if not evaluation.passed else "",
            )
        )
    if settings.warehouse_path.exists():
        with connection(settings.warehouse_path) as con:
            instance.report_runless_asset_event(record_run(instance, run_id, con))
            report.tables = table_row_counts(con, REPORTED_SCHEMAS)
            if pending and "monitoring.drift_reports" in report.tables:
                report.drifted_days = [
                    str(day)
                    for (day,) in con.execute(
                        "select day from monitoring.drift_reports where drifted "
                        "and day between ? and ? order by day",
                        [pending[0], pending[-1]],
                    ).fetchall()
                ]
    return report


PROCESS_TAG = "mlops/process"  # host:pid:start time of the `mlops run` process


def _this_process() -> str:
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time()}"


def fail_dead_runs(instance) -> list[str]:
    """Mark failed the runs of `mlops run` on this machine whose process is gone (killed by
    SIGKILL, the OOM killer or a power cut: nothing in them could report it), and free the
    DuckDB writer pool slot each still holds, or this run would wait for that slot forever.
    Returns what to tell the user. What those runs wrote is safe: every write is a
    transaction, a file written then renamed, or redone by the next run."""
    import dagster as dg
    import psutil

    notices = []
    runs = instance.get_runs(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
            tags={"mlops/trigger": "mlops run"},
        )
    )
    for run in runs:
        host, _, rest = run.tags.get(PROCESS_TAG, "").partition(":")
        pid, _, started = rest.partition(":")
        if host != socket.gethostname() or not pid.isdigit():
            continue  # another machine's run, or one from before the tag: not ours to judge
        try:
            alive = str(psutil.Process(int(pid)).create_time()) == started
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            continue
        instance.report_run_failed(
            run, f"the mlops run process {pid} ended without finishing the run (killed)"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        notices.append(
            f"run {run.run_id} ended without finishing (its process is gone): marked failed; "
            "this run redoes what it left undone"
        )
    return notices


def unfinished_days(instance) -> set[str]:
    """The landing days of the `mlops run`s that failed (or were killed) since the last one
    that succeeded."""
    import dagster as dg

    days: set[str] = set()
    runs = instance.get_runs(dg.RunsFilter(tags={"mlops/trigger": "mlops run"}), limit=100)
    for run in runs:  # newest first
        if run.status == dg.DagsterRunStatus.SUCCESS:
            break
        start = run.tags.get("dagster/asset_partition_range_start")
        end = run.tags.get("dagster/asset_partition_range_end")
        if run.status == dg.DagsterRunStatus.FAILURE and start and end:
            first, last = date.fromisoformat(start), date.fromisoformat(end)
            days |= {str(first + timedelta(d)) for d in range((last - first).days + 1)}
    return days


def _root_cause(error) -> str:
    """The innermost error's message: Dagster wraps what the asset raised in its own error."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _describe(metadata: dict) -> str:
    """What a failed check's metadata says: failing rows of a dbt test, or the markdown our own
    checks write (the failed files, the unbalanced ledger rows)."""
    import dagster as dg

    from mlops_assets.markdown import md_plain

    if "dagster_dbt/failed_row_count" in metadata:
        rows = metadata["dagster_dbt/failed_row_count"].value
        return f"{rows} failing row(s); the test's SQL is under $MLOPS_HOME/dbt/target/compiled/"
    texts = [
        md_plain(value.value) if isinstance(value, dg.MarkdownMetadataValue) else value.value
        for value in metadata.values()
        if isinstance(value, dg.MarkdownMetadataValue | dg.TextMetadataValue)
        and value.value not in ("", "none")
    ]
    return "\n".join(texts)


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
