from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from mlops_assets.warehouse import WarehouseLockedError, checkpoints_deferred, connect


def hold_lock(path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
            f"print('locked', flush=True); time.sleep({seconds}); con.close()",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_waits_for_the_lock(tmp_path):
    path = tmp_path / "w.duckdb"
    holder = hold_lock(path, 2)
    started = time.monotonic()
    con = connect(path, wait_seconds=30)
    assert time.monotonic() - started >= 1
    con.execute("create table t as select 1 as x")
    con.close()
    holder.wait(timeout=10)


def test_a_writer_that_waits_too_long_gets_a_clear_lock_message(tmp_path):
    path = tmp_path / "w.duckdb"
    holder = hold_lock(path, 5)
    with pytest.raises(WarehouseLockedError) as error:
        connect(path, wait_seconds=0.5)
    assert f"locked by process {holder.pid}" in str(error.value)
    assert "one writer at a time" in str(error.value)
    holder.wait(timeout=10)


def test_reading_a_missing_warehouse_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="mlops run"):
        connect(tmp_path / "missing.duckdb", read_only=True)


class Invalidated:
    """A connection whose database an error invalidates: once ``broken``, every statement fails
    (as DuckDB refuses all work after a fatal error)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con, self.broken = con, False

    def execute(self, sql: str, params: list | None = None):
        if self.broken:
            raise duckdb.FatalException("database has been invalidated by a previous error")
        return self.con.execute(sql, params or [])


SETTING = "select current_setting('checkpoint_threshold')"


def test_checkpoints_deferred_puts_the_threshold_back_and_checkpoints_after_the_block(tmp_path):
    path = tmp_path / "w.duckdb"
    wal = Path(f"{path}.wal")
    con = duckdb.connect(str(path))
    con.execute("set checkpoint_threshold = '2MiB'")
    with checkpoints_deferred(con, 512 << 20):
        assert con.execute(SETTING).fetchall() == [("512.0 MiB",)]
        con.execute("create table t as select range as i from range(1000)")
        assert wal.stat().st_size > 0
    assert con.execute(SETTING).fetchall() == [("2.0 MiB",)]
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed at the end of the block
    with pytest.raises(ValueError), checkpoints_deferred(con, 512 << 20):
        raise ValueError("a file's fault")
    assert con.execute(SETTING).fetchall() == [("2.0 MiB",)]


def test_checkpoints_deferred_lets_the_error_that_stopped_the_block_through(tmp_path):
    """A database the error invalidated refuses the reset: the error raised is the first."""
    connection = Invalidated(duckdb.connect(str(tmp_path / "w.duckdb")))
    with pytest.raises(RuntimeError, match="went away"), checkpoints_deferred(connection):
        connection.broken = True
        raise RuntimeError("the disk went away")
