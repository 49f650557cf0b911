"""The SQLite event log that keeps one engine per file: Dagster's files and behaviour, reused
engines (bounded), and nothing stale after a wipe."""

from __future__ import annotations

from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.events.log import EventLogEntry

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
    """Connections are still per transaction: a second storage on the same files (the
    webserver, while a run writes) sees every commit at once."""
    writer, reader = SqliteEventLogStorage(str(tmp_path)), SqliteEventLogStorage(str(tmp_path))
    for i in range(3):
        writer.store_event(_entry("shared", f"event {i}"))
        assert len(reader.get_logs_for_run("shared")) == i + 1
