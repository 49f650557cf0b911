"""The SQLite event log that keeps one engine per file: Dagster's files and behaviour, reused
engines (bounded), and nothing stale after a wipe."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite import sqlite_event_log

from mlops_assets import instance_storage
from mlops_assets.instance_storage import SqliteEventLogStorage


def _entry(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level="INFO",
        user_message=message,
        run_id=run_id,
        timestamp=0.0,
        dagster_event=DagsterEvent(
            DagsterEventType.ENGINE_EVENT.value, "job", event_specific_data=EngineEventData()
        ),
    )


def test_events_of_more_runs_than_kept_engines_are_all_stored_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(instance_storage, "KEPT_ENGINES", 3)
    storage = SqliteEventLogStorage(str(tmp_path))
    runs = [f"run{i}" for i in range(5)]
    for run_id in runs:
        storage.store_event(_entry(run_id, f"first of {run_id}"))
    for run_id in runs:  # the first runs' engines were dropped: they come back
        storage.store_event(_entry(run_id, f"second of {run_id}"))
    assert len(storage._engines) == 3
    for run_id in runs:
        messages = [e.user_message for e in storage.get_logs_for_run(run_id)]
        assert messages == [f"first of {run_id}", f"second of {run_id}"]
    assert sorted(p.name for p in tmp_path.glob("run*.db")) == sorted(f"{r}.db" for r in runs)
    storage.dispose()
    assert not storage._engines


def test_a_wiped_storage_recreates_its_files_and_stores_again(tmp_path):
    storage = SqliteEventLogStorage(str(tmp_path))
    storage.store_event(_entry("a", "before"))
    storage.wipe()
    assert not (tmp_path / "a.db").exists()
    storage.store_event(_entry("a", "after"))
    assert [e.user_message for e in storage.get_logs_for_run("a")] == ["after"]


def test_an_instance_reads_what_another_process_instance_wrote(tmp_path):
    """A kept connection holds no transaction between writes: a second storage on the same
    files (the webserver, while a run writes) sees every commit at once."""
    writer, reader = SqliteEventLogStorage(str(tmp_path)), SqliteEventLogStorage(str(tmp_path))
    for i in range(3):
        writer.store_event(_entry("shared", f"event {i}"))
        assert len(reader.get_logs_for_run("shared")) == i + 1


def test_writes_skip_the_sync_and_the_file_stays_open_between_them(tmp_path):
    """A write's connection syncs in WAL's NORMAL mode and is never the file's last: the
    write-ahead log stays (no checkpoint per write) until the storage lets go of the file."""
    storage = SqliteEventLogStorage(str(tmp_path))
    storage.store_event(_entry("r", "one"))
    with storage.run_connection("r") as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert (tmp_path / "r.db-wal").exists()
    storage.dispose()
    assert not (tmp_path / "r.db-wal").exists()  # the last connection checkpointed and removed it
    reread = SqliteEventLogStorage(str(tmp_path))
    assert [e.user_message for e in reread.get_logs_for_run("r")] == ["one"]
    reread.dispose()


def test_every_event_stored_before_the_process_is_killed_is_kept(tmp_path):
    """NORMAL sync in WAL mode loses nothing to a killed process: the commits are in the log."""
    script = (
        "import os, signal, sys\n"
        "from tests.test_instance_storage import _entry\n"
        "from mlops_assets.instance_storage import SqliteEventLogStorage\n"
        "storage = SqliteEventLogStorage(sys.argv[1])\n"
        "for i in range(50):\n"
        "    storage.store_event(_entry('killed', f'event {i}'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert done.returncode == -signal.SIGKILL
    assert (tmp_path / "killed.db-wal").exists()  # the process never checkpointed
    storage = SqliteEventLogStorage(str(tmp_path))
    messages = [e.user_message for e in storage.get_logs_for_run("killed")]
    assert messages == [f"event {i}" for i in range(50)]
    storage.dispose()


def test_a_table_is_looked_up_until_it_is_found(tmp_path, monkeypatch):
    storage = SqliteEventLogStorage(str(tmp_path))
    assert storage.has_table("event_logs")
    assert not storage.has_table("no_such_table")
    looked_up = []
    monkeypatch.setattr(
        sqlite_event_log.SqliteEventLogStorage,
        "has_table",
        lambda self, name: looked_up.append(name) or name == "added_later",
    )
    assert storage.has_table("event_logs")  # found once, not asked again
    assert storage.has_table("added_later")  # not found before: asked again
    assert looked_up == ["added_later"]
    storage.dispose()


def test_a_watcher_of_a_run_sees_each_event_as_another_writer_stores_it(tmp_path):
    """The webserver streams a run's events by watching its file; the writer holds the file
    open, so between checkpoints only the write-ahead log changes, and that wakes it too."""
    import threading

    writer, watcher = SqliteEventLogStorage(str(tmp_path)), SqliteEventLogStorage(str(tmp_path))
    writer.store_event(_entry("live", "event 0"))
    seen: list[str] = []
    arrived = threading.Event()

    def callback(entry, cursor) -> None:
        seen.append(entry.user_message)
        if len(seen) == 3:
            arrived.set()

    cursor = str(watcher.get_records_for_run("live").cursor)
    watcher.watch("live", cursor, callback)
    try:
        for i in (1, 2, 3):
            writer.store_event(_entry("live", f"event {i}"))
        assert arrived.wait(20), seen
        assert seen == ["event 1", "event 2", "event 3"]
        assert (tmp_path / "live.db-wal").exists()  # no checkpoint woke the watcher
    finally:
        watcher.end_watch("live", callback)
        watcher.dispose()
        writer.dispose()


def _planned_check(run_id: str, partitions: list[str] | None) -> EventLogEntry:
    """The event a run stores for each asset check it plans (of a daily partitioned asset
    over ``partitions``, or of an unpartitioned one)."""
    from dagster import AssetKey, DailyPartitionsDefinition
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationPlanned,
    )

    subset = None
    if partitions is not None:
        daily = DailyPartitionsDefinition(start_date="2025-01-01")
        subset = daily.empty_subset().with_partition_keys(partitions).to_serializable_subset()
    planned = AssetCheckEvaluationPlanned(
        asset_key=AssetKey(["raw", "applications"]),
        check_name="ledger_balanced",
        partitions_subset=subset,
    )
    return EventLogEntry(
        error_info=None,
        level="DEBUG",
        user_message="",
        run_id=run_id,
        timestamp=1.5,
        dagster_event=DagsterEvent(
            DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
            "job",
            event_specific_data=planned,
        ),
    )


def test_a_planned_check_is_recorded_as_dagsters_storage_records_it(tmp_path):
    """The planned check's rows (one per partition, each with the whole event), written with
    the event serialized once, are exactly the rows Dagster's own storage writes; and its
    check executions read back the same."""
    from dagster import AssetKey
    from dagster._core.definitions.asset_checks.asset_check_spec import AssetCheckKey
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
    from sqlalchemy import select

    days = [f"2025-01-{day:02d}" for day in range(1, 31)]
    written = {}
    for name, storage in (
        ("ours", SqliteEventLogStorage(str(tmp_path / "ours"))),
        ("dagster's", sqlite_event_log.SqliteEventLogStorage(str(tmp_path / "dagster"))),
    ):
        for run_id, partitions in (("partitioned", days), ("whole", None)):
            storage.store_event(_planned_check(run_id, partitions))
        with storage.index_connection() as conn:
            rows = conn.execute(
                select(AssetCheckExecutionsTable).order_by(AssetCheckExecutionsTable.c.id)
            ).fetchall()
        key = AssetCheckKey(AssetKey(["raw", "applications"]), "ledger_balanced")
        records = storage.get_asset_check_execution_history(key, limit=100)
        written[name] = (
            [{k: v for k, v in row._mapping.items() if k not in ("id", "create_timestamp")}
             for row in rows],
            sorted((r.run_id, r.partition, r.status.value) for r in records),
        )  # fmt: skip
        storage.dispose()
    assert len(written["ours"][0]) == len(days) + 1
    assert {row["partition"] for row in written["ours"][0]} == {*days, None}
    assert written["ours"] == written["dagster's"]


def _asset_event(run_id: str, kind: DagsterEventType, partition: str | None) -> EventLogEntry:
    """A planned materialization, a materialization or an observation of ``raw/applications``
    for ``partition``, as a step of ``run_id`` reports it."""
    from dagster import AssetKey, AssetMaterialization, AssetObservation
    from dagster._core.events import (
        AssetMaterializationPlannedData,
        AssetObservationData,
        StepMaterializationData,
    )

    key = AssetKey(["raw", "applications"])
    data = {
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED: lambda: AssetMaterializationPlannedData(
            key, partition=partition
        ),
        DagsterEventType.ASSET_MATERIALIZATION: lambda: StepMaterializationData(
            AssetMaterialization(
                key,
                partition=partition,
                metadata={"rows": 3},
                tags={"dagster/data_version": f"v-{partition}"},  # an indexed tag
            )
        ),
        DagsterEventType.ASSET_OBSERVATION: lambda: AssetObservationData(
            AssetObservation(key, partition=partition, metadata={"quarantined": 1})
        ),
    }[kind]()
    return EventLogEntry(
        error_info=None,
        level="DEBUG",
        user_message="",
        run_id=run_id,
        timestamp=2.5,
        dagster_event=DagsterEvent(kind.value, "job", event_specific_data=data, step_key="raw"),
    )


# Filled in by the database (or by a migration) when a row is written, not from the event.
WRITE_TIME_COLUMNS = ("create_timestamp", "update_timestamp", "migration_completed")


def _tables(storage, shards: list[str]) -> dict[str, list[dict]]:
    """Every row of every table of the index and of ``shards`` (the runs' files), without the
    columns a database fills in at write time."""
    from sqlalchemy import inspect, text

    tables = {}
    for shard in ["index", *shards]:
        connect = storage.index_connection() if shard == "index" else storage.run_connection(shard)
        with connect as conn:
            for table in inspect(conn).get_table_names():
                rows = conn.execute(text(f'select * from "{table}" order by rowid')).fetchall()
                tables[f"{shard}.{table}"] = [
                    {k: v for k, v in row._mapping.items() if k not in WRITE_TIME_COLUMNS}
                    for row in rows
                ]
    return tables


def test_a_batch_of_events_is_stored_as_dagsters_storage_stores_each_of_them(tmp_path):
    """A batch (a run's planned materializations and checks; a step's materializations and
    observations of many partitions) is written in one transaction per file, and leaves every
    row of the run's file and of the index exactly as Dagster's storage storing each event in
    turn does; asset and check reads agree."""
    from dagster import AssetKey
    from dagster._core.definitions.asset_checks.asset_check_spec import AssetCheckKey

    days = [f"2025-01-{day:02d}" for day in range(1, 6)]
    planned = [  # checks and assets interleaved, as Dagster's sort by asset key may leave them
        _planned_check("r", days),
        *(_asset_event("r", DagsterEventType.ASSET_MATERIALIZATION_PLANNED, d) for d in days[:2]),
        _planned_check("r", None),
        *(_asset_event("r", DagsterEventType.ASSET_MATERIALIZATION_PLANNED, d) for d in days[2:]),
    ]
    stepped = [
        _asset_event("r", kind, day)
        for day in days
        for kind in (DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION)
    ]
    key = AssetKey(["raw", "applications"])
    written = {}
    ours = SqliteEventLogStorage(str(tmp_path / "ours"))
    transactions = []
    connect = ours._connect
    ours._connect = lambda shard: transactions.append(shard) or connect(shard)
    for batch in (planned, stepped):
        ours.store_event_batch(batch)
    ours._connect = connect
    assert transactions == ["r", "index", "r", "index"]
    theirs = sqlite_event_log.SqliteEventLogStorage(str(tmp_path / "dagster"))
    for event in [*planned, *stepped]:
        theirs.store_event(event)
    for name, storage in (("ours", ours), ("dagster's", theirs)):
        check = AssetCheckKey(key, "ledger_balanced")
        checks = storage.get_asset_check_execution_history(check, limit=100)
        events = storage.get_records_for_run("r").records
        written[name] = (
            _tables(storage, ["r"]),
            storage.get_materialized_partitions(key),
            storage.get_latest_planned_materialization_info(key),
            sorted((r.partition or "", r.status.value) for r in checks),
            [(r.event_log_entry.dagster_event_type, r.partition_key) for r in events],
        )
        storage.dispose()
    assert written["ours"][1] == set(days)
    assert len(written["ours"][0]["index.asset_check_executions"]) == len(days) + 1
    assert len(written["ours"][0]["index.asset_event_tags"]) == len(days)
    for table, rows in written["dagster's"][0].items():
        assert written["ours"][0][table] == rows, table
    assert written["ours"] == written["dagster's"]


def test_a_batch_dagster_does_not_batch_is_stored_event_by_event(tmp_path):
    """Events of two runs, or of a kind Dagster never batches, go through store_event."""
    storage = SqliteEventLogStorage(str(tmp_path))
    storage.store_event_batch(
        [
            _asset_event("a", DagsterEventType.ASSET_MATERIALIZATION, "2025-01-01"),
            _asset_event("b", DagsterEventType.ASSET_MATERIALIZATION, "2025-01-01"),
        ]
    )
    storage.store_event_batch([_entry("a", "an engine event")])
    assert len(storage.get_logs_for_run("a")) == 2
    assert len(storage.get_logs_for_run("b")) == 1
    storage.dispose()


def test_a_run_stores_its_planned_events_and_a_steps_partitions_as_batches(tmp_path, monkeypatch):
    """With the variable mlops sets (``run.instance.batch_event_writes``), Dagster hands this
    storage its batches: a run over three days plans its asset and check in one batch, and
    the step's three materializations come as another."""
    import os

    import dagster as dg

    from mlops_assets.run.instance import EVENT_BATCH_VARIABLE, batch_event_writes, dagster_yaml

    monkeypatch.setenv(EVENT_BATCH_VARIABLE, "")  # restored after the test, whatever it was
    monkeypatch.delenv(EVENT_BATCH_VARIABLE)
    # As `mlops run` plans: one planned event per asset for the run's range of days.
    monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    batch_event_writes(os.environ)
    days = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-04")

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def daily(context):
        return dg.MaterializeResult()

    @dg.asset_check(asset=daily)
    def balanced():
        return dg.AssetCheckResult(passed=True)

    (tmp_path / "dagster.yaml").write_text(dagster_yaml(False, tmp_path))
    batches = []
    store_batch = SqliteEventLogStorage.store_event_batch
    monkeypatch.setattr(
        SqliteEventLogStorage,
        "store_event_batch",
        # Recorded once stored: a batch that raised would be stored again event by event, and
        # the run would still succeed.
        lambda self, events: (
            store_batch(self, events) or batches.append([e.dagster_event_type for e in events])
        ),
    )
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.event_log_storage, SqliteEventLogStorage)
        result = dg.materialize(
            [daily, balanced],
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2025-01-01",
                "dagster/asset_partition_range_end": "2025-01-03",
            },
        )
        assert result.success
        stored = instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        assert sorted(e.dagster_event.partition for e in stored) == [
            "2025-01-01",
            "2025-01-02",
            "2025-01-03",
        ]
        assert instance.get_materialized_partitions(daily.key) == {
            "2025-01-01",
            "2025-01-02",
            "2025-01-03",
        }
    planned = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    check_planned = DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
    materialized = DagsterEventType.ASSET_MATERIALIZATION
    assert [sorted(batch) for batch in batches] == [
        sorted([planned, check_planned]),
        [materialized] * 3,
    ]


def test_the_kinds_of_event_written_as_a_batch_are_every_kind_dagster_batches():
    """A kind Dagster starts to batch in a later version is not written half right: it goes
    event by event until store_event_batch learns it (and this test says so)."""
    from dagster._core.events import BATCH_WRITABLE_EVENTS

    assert instance_storage.BATCHED_EVENTS == BATCH_WRITABLE_EVENTS


def test_a_batch_the_index_refuses_leaves_nothing_in_the_runs_file(tmp_path, monkeypatch):
    """Dagster stores a batch that raised again, event by event: the run's file must not keep
    the first attempt's rows, or every event would be there twice."""
    import pytest

    storage = SqliteEventLogStorage(str(tmp_path))
    batch = [_asset_event("r", DagsterEventType.ASSET_MATERIALIZATION, "2025-01-01")]

    def refused(*_) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage, "_index_batch", refused)
    with pytest.raises(OSError, match="disk full"):
        storage.store_event_batch(batch)
    assert storage.get_logs_for_run("r") == []
    monkeypatch.undo()
    for event in batch:  # Dagster's fallback
        storage.store_event(event)
    assert len(storage.get_logs_for_run("r")) == 1
    storage.dispose()


def test_a_connection_whose_transaction_failed_is_not_used_again(tmp_path):
    """The engine keeps its connection between transactions, except one that raised: its
    rollback may have failed, leaving the file's write lock held."""
    import pytest

    storage = SqliteEventLogStorage(str(tmp_path))
    storage.store_event(_entry("r", "one"))

    def driver_connection():
        with storage.run_connection("r") as conn:
            return conn.connection.dbapi_connection

    kept = driver_connection()
    assert driver_connection() is kept
    with pytest.raises(RuntimeError), storage.run_connection("r"):
        raise RuntimeError("failed inside the transaction")
    assert driver_connection() is not kept
    assert [e.user_message for e in storage.get_logs_for_run("r")] == ["one"]
    storage.dispose()
