"""Retries only on a busy DuckDB lock (transient), never on a deterministic error."""

import subprocess
import sys
import time

import dagster as dg
import pytest

from mlops_assets.resources import WarehouseResource

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)

HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def hold_lock():
    """Start a process that holds the warehouse's write lock for ``seconds``."""
    holders = []

    def hold(path, seconds: float) -> subprocess.Popen:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout.readline().strip() == "locked"
        holders.append(holder)
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


def _writer(sql: str) -> dg.AssetsDefinition:
    @dg.asset(name="writer")
    def writer(warehouse: WarehouseResource) -> None:
        with warehouse.connect() as con:
            con.execute(sql)

    return writer


def _warehouse(path, retries: int = 5) -> WarehouseResource:
    return WarehouseResource(
        path=str(path), lock_wait_seconds=0.3, lock_retries=retries, retry_delay_seconds=0.5
    )


def _attempts(result) -> tuple[int, int]:
    """(step starts, retries requested) of the run."""
    kinds = [event.event_type for event in result.all_events]
    return (
        kinds.count(dg.DagsterEventType.STEP_START)
        + kinds.count(dg.DagsterEventType.STEP_RESTARTED),
        kinds.count(dg.DagsterEventType.STEP_UP_FOR_RETRY),
    )


def test_a_busy_lock_is_retried_until_it_is_free(tmp_path, hold_lock):
    path = tmp_path / "warehouse.duckdb"
    # Held long enough that even a loaded machine's first attempt finds it busy (at 2 s, a CI
    # run under load once reached the warehouse after the holder had let go).
    hold_lock(path, 6.0)
    started = time.monotonic()
    result = dg.materialize(
        [_writer("create table t as select 42 as x")],
        resources={"warehouse": _warehouse(path, retries=20)},
        raise_on_error=False,
    )
    assert result.success
    starts, retries = _attempts(result)
    assert retries >= 1 and starts == retries + 1
    assert time.monotonic() - started >= 5.5  # it waited for the holder, it did not skip it


def test_a_lock_that_stays_busy_fails_after_the_retries_naming_the_holder(tmp_path, hold_lock):
    path = tmp_path / "warehouse.duckdb"
    holder = hold_lock(path, 60)
    result = dg.materialize(
        [_writer("select 1")], resources={"warehouse": _warehouse(path, 2)}, raise_on_error=False
    )
    assert not result.success
    assert _attempts(result) == (3, 2)
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert any(f"locked by process {holder.pid}" in m for m in messages), messages


def test_a_deterministic_error_is_not_retried(tmp_path):
    result = dg.materialize(
        [_writer("select * from no_such_table")],
        resources={"warehouse": _warehouse(tmp_path / "warehouse.duckdb")},
        raise_on_error=False,
    )
    assert not result.success
    assert _attempts(result) == (1, 0)


def test_dbt_retries_a_busy_lock_but_not_a_failing_build(tmp_path, hold_lock, monkeypatch):
    """The real dbt assets: the first attempt meets the lock (retried); the second reaches an
    empty warehouse, where the build fails for good (missing sources: not retried)."""
    from mlops_assets.settings import get_settings
    from mlops_assets.transform.assets import build_dbt_assets
    from mlops_assets.transform.resource import dbt_resource

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_DBT_CONNECT_ATTEMPTS", "1")
    path = get_settings().warehouse_path
    # Held until the step asks for its retry, however long dbt takes to start (a busy machine).
    holder = hold_lock(path, 600)
    ask_retry = WarehouseResource.retry_on_lock

    def release_then_retry(self, error):
        holder.kill()
        holder.wait()
        return ask_retry(self, error)

    monkeypatch.setattr(WarehouseResource, "retry_on_lock", release_then_retry)
    result = dg.materialize(
        [build_dbt_assets()],
        resources={"dbt": dbt_resource(tmp_path / "dbt"), "warehouse": _warehouse(path)},
        run_config={"ops": {"dbt_models": {"config": {"fetch_table_metadata": False}}}},
        raise_on_error=False,
    )
    assert not result.success
    starts, retries = _attempts(result)
    assert retries >= 1 and starts == retries + 1
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "could not set lock" not in str(failure.step_failure_data.error).lower()
