from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mlops_assets.warehouse import WarehouseLockedError, connect


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
