"""Concurrent writers: a `dbt build` from the CLI racing an `mlops run` on the same warehouse.
DuckDB allows one writing process; both must finish (one waits for the other's lock) or one
must fail with a message that says the warehouse is locked — and nothing may be corrupted: the
tables read back with the rows an undisturbed run gives, once the raced run (or, when the lock
failed it, the next run) is done.

The run works on a copy of the session's reference home with three new landing days, and
`make soak` (``-m soak``) races it at moments of the run from its start-up to its last
stages. `make test` proves what this rests on, one writer at a time: a step retries a busy
lock until it is free, or fails naming the process that holds it (`tests/test_retries.py`),
and dbt from the CLI waits for another writer (`tests/transform/test_dbt_models.py`).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from mlops_assets.settings import DBT_PROJECT_DIR
from tests.conftest import BIN, ReferenceHome, mlops

TABLES = ("raw.applications", "raw.outcomes", "staging.stg_applications", "marts.loan_applications",
          "features.loan_features", "audit.ingested_files")  # fmt: skip
SOAK_DELAYS = (0, 3, 8, 15, 30, 60, 90)  # seconds into the run when dbt starts


def _counts(home: Path) -> dict[str, int]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}


def _lock_message(text: str) -> bool:
    return "Could not set lock" in text or "locked by process" in text


def _race(reference: ReferenceHome, undisturbed: Path, home: Path, delay: float) -> None:
    """`dbt build` started ``delay`` seconds into an `mlops run` of a copy of ``reference``
    with new landing days: the home must end as ``undisturbed``, after the next run if the
    raced one was locked out."""
    reference.copy(home, later_days=True)
    env = {**os.environ, "MLOPS_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    run = subprocess.Popen(
        [str(BIN / "mlops"), "run", "--json"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay)
    dbt = subprocess.run(
        [str(BIN / "dbt"), "build", "--profiles-dir", "."], cwd=DBT_PROJECT_DIR, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    run_out, run_err = run.communicate(timeout=900)

    outcomes = {
        "mlops run": (run.returncode, run_out + run_err),
        "dbt": (dbt.returncode, dbt.stdout),
    }
    failed = {name: text for name, (code, text) in outcomes.items() if code != 0}
    assert len(failed) <= 1, failed  # never both
    for name, text in failed.items():
        assert _lock_message(text), (
            f"{name} failed for another reason than the lock: {text[-3000:]}"
        )

    # Nothing corrupted: the warehouse ends with an undisturbed run's rows, written by the
    # raced run itself or, when the lock failed it, by the next run.
    if run.returncode != 0:
        again = mlops("run", "--json", home=home)
        assert again.returncode == 0, again.stderr[-2000:]
    assert _counts(home) == _counts(undisturbed)


@pytest.mark.soak
@pytest.mark.parametrize("delay", SOAK_DELAYS)
def test_soak_dbt_racing_a_run_at_any_moment_both_finish_or_one_says_locked(
    reference_home, reference_after_later_days, tmp_path, delay
):
    _race(reference_home, reference_after_later_days, tmp_path / "home", delay)
