"""`mlops run` stopped by the storage (a full disk, a read-only home) under Dagster's own
SQLite bookkeeping says so in one line, never a traceback; any other error is not hidden."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy

import mlops_assets.run
from mlops_assets.cli.pipeline import storage_fault
from tests.cli.conftest import invoke


def sqlite_full() -> sqlite3.OperationalError:
    """A real SQLITE_FULL: a database allowed one page, written past it."""
    con = sqlite3.connect(":memory:")
    con.execute("pragma max_page_count = 2")
    con.execute("create table t (x blob)")
    try:
        con.execute("insert into t values (zeroblob(100000))")
    except sqlite3.OperationalError as error:
        return error
    raise AssertionError("SQLite wrote past max_page_count")


def sqlite_read_only(tmp_path) -> sqlite3.OperationalError:
    """A real SQLITE_READONLY: a write through a read-only connection."""
    path = tmp_path / "runs.db"
    sqlite3.connect(path).execute("create table t (x)").connection.commit()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        con.execute("insert into t values (1)")
    except sqlite3.OperationalError as error:
        return error
    raise AssertionError("a read-only connection wrote")


def wrapped(error: Exception) -> Exception:
    """As Dagster's storage raises it: SQLAlchemy's error around the driver's, raised while
    handling another."""
    try:
        raise sqlalchemy.exc.OperationalError("insert into runs", {}, error) from error
    except sqlalchemy.exc.OperationalError as outer:
        return outer


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_a_storage_fault_in_dagsters_sqlite_stops_the_run_in_one_line(
    home, monkeypatch, tmp_path, kind
):
    error = sqlite_full() if kind == "full" else sqlite_read_only(tmp_path)

    def refused(*args, **kwargs):
        raise wrapped(error)

    monkeypatch.setattr(mlops_assets.run, "run_pipeline", refused)
    result = invoke("run")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert "run stopped:" in said
    assert ("disk is full" if kind == "full" else "read-only database") in said
    assert "free space (or make MLOPS_HOME writable) and run again" in said


def test_an_os_error_of_the_storage_is_found_inside_what_wraps_it():
    try:
        try:
            raise OSError(28, "No space left on device", "/home/x/warehouse.duckdb.wal")
        except OSError as inner:
            raise RuntimeError("step failed") from inner
    except RuntimeError as outer:
        assert storage_fault(outer) == "No space left on device (/home/x/warehouse.duckdb.wal)"


def test_any_other_error_is_not_taken_for_a_storage_fault(home, monkeypatch):
    def broken(*args, **kwargs):
        raise wrapped(sqlite3.OperationalError("no such table: runs"))

    assert storage_fault(ValueError("x")) is None
    monkeypatch.setattr(mlops_assets.run, "run_pipeline", broken)
    result = invoke("run")
    assert isinstance(result.exception, sqlalchemy.exc.OperationalError)


def test_a_home_refused_before_the_run_starts_keeps_its_own_message_and_exit_code(
    home, monkeypatch
):
    """A read-only home is found by the run's set-up (exit 2, "cannot run:"); the OSError it
    was found from is not reported a second time as a run stopped mid-way."""
    from mlops_assets.run import RunSetupError

    def refused(*args, **kwargs):
        try:
            raise OSError(30, "Read-only file system", str(home / ".write-check"))
        except OSError as error:
            raise RunSetupError(f"MLOPS_HOME cannot be written: {error.strerror}") from None

    monkeypatch.setattr(mlops_assets.run, "run_pipeline", refused)
    result = invoke("run")
    assert result.exit_code == 2, result.output
    assert "cannot run:" in result.output and "run stopped" not in result.output


def sqlite_io_error() -> sqlite3.OperationalError:
    """SQLITE_IOERR as the driver raises it (a full disk under a write-ahead log or its index
    is reported so, not as SQLITE_FULL; no portable way to make one here)."""
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode, error.sqlite_errorname = 10, "SQLITE_IOERR"
    return error


@pytest.mark.parametrize("free", [4096, 10 << 30])
def test_a_disk_io_error_says_whether_the_disk_is_full(home, monkeypatch, free):
    import shutil

    import mlops_assets.cli.pipeline as pipeline

    def refused(*args, **kwargs):
        raise wrapped(sqlite_io_error())

    monkeypatch.setattr(mlops_assets.run, "run_pipeline", refused)
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda path: usage._replace(free=free))
    result = invoke("run")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert "run stopped: disk I/O error" in said
    assert ("the disk is full (4 KiB free)" in said) == (free == 4096)
