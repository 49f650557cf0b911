"""Concurrent writers: a `dbt build` from the CLI racing an `mlops run` on the same warehouse.
DuckDB allows one writing process; both must finish (one waits for the other's lock) or one
must fail with a message that says the warehouse is locked — and nothing may be corrupted: the
tables read back with the rows an undisturbed run gives, and the next run succeeds."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import duckdb

from mlops_assets.sample_data.generator import GeneratorConfig, generate
from mlops_assets.settings import DBT_PROJECT_DIR
from tests.conftest import BIN, mlops

DATA = GeneratorConfig(days=12, rows_per_day=50, seed=3, drift_from_day=10)
LATE_DAYS = ("2025-01-11", "2025-01-12")  # land while the warehouse is already built
TABLES = ("raw.applications", "raw.outcomes", "staging.stg_applications", "marts.loan_applications",
          "features.loan_features", "audit.ingested_files")  # fmt: skip


def _counts(home) -> dict[str, int]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}


def _lock_message(text: str) -> bool:
    return "Could not set lock" in text or "locked by process" in text


def test_dbt_from_the_cli_racing_a_run_both_finish_or_one_says_locked(tmp_path):
    home = tmp_path / "home"
    generate(DATA, home / "landing")
    held_back = tmp_path / "held back"
    for source in ("applications", "customers", "outcomes"):
        for day in LATE_DAYS:
            file = home / "landing" / source / f"{day}.csv"
            if file.exists():
                (held_back / source).mkdir(parents=True, exist_ok=True)
                file.rename(held_back / source / file.name)
    first = mlops("run", "--json", home=home)
    assert first.returncode == 0, first.stderr[-2000:]
    reference = tmp_path / "reference"
    shutil.copytree(home, reference)
    shutil.copytree(held_back, home / "landing", dirs_exist_ok=True)
    shutil.copytree(held_back, reference / "landing", dirs_exist_ok=True)

    env = {**os.environ, "MLOPS_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    run = subprocess.Popen(
        [str(BIN / "mlops"), "run", "--json"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(8)  # the run is past its start-up, ingesting or building
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

    # Nothing corrupted: whatever the race did, the next run ends as an undisturbed one.
    again = mlops("run", "--json", home=home)
    assert again.returncode == 0, again.stderr[-2000:]
    undisturbed = mlops("run", "--json", home=reference)
    assert undisturbed.returncode == 0, undisturbed.stderr[-2000:]
    assert _counts(home) == _counts(reference)
