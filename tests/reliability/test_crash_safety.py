"""Crash safety: `mlops run` killed with SIGKILL at a point of ingestion, dbt, features,
training, scoring or drift (``mlops_assets.faults``), then run again, ends with exactly the rows
of a run that was never interrupted: nothing lost, nothing twice, no half-written partition, the
ingestion ledger consistent, the same model versions and champions.

The kill takes the whole process group (dbt, Dask workers), as a power cut would. `make test`
kills a run of a copy of the session's reference home, given three new landing days, inside a
file's transaction, and runs it again. `make soak` (``-m soak``) kills that copy's runs three
times in a row, once in each kind of write (a file's transaction, a model's registration, the
scores' replacement), each run recovering from the kill before it; then the same from an empty
home, and all twenty points one by one. (A model version registered by a run that died before
the gate is also decided by the next run in `make test`:
``tests/training/test_registry_and_gate.py``.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import duckdb
import pytest

from mlops_assets.faults import POINTS, VARIABLE
from mlops_assets.sample_data.generator import GeneratorConfig, generate
from tests.conftest import BIN, ReferenceHome, run_here

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)

DATA = GeneratorConfig(days=40, rows_per_day=100, seed=11, drift_from_day=30)  # 92 files
# Columns that record when something happened, not what: they differ between any two runs.
WHEN = {"_loaded_at", "quarantined_at", "loaded_at", "updated_at", "bound_at", "created_at",
        "scored_at", "seen_at"}  # fmt: skip
SKIPPED_TABLES = {"monitoring.pipeline_runs", "monitoring.pipeline_run_assets", "audit.pii_access"}

FAST = "ingest.in_transaction#5"  # the fifth file's transaction: warehouse rows replaced
CHAIN = (FAST, "training.registered", "scoring.scored")
SOAK = (
    "ingest.staged#1", "ingest.staged#40", "ingest.in_transaction#1", "ingest.in_transaction#5",
    "ingest.in_transaction#70", "ingest.committed#3", "ingest.committed#90",
    "dbt.running#1", "dbt.running#5", "dbt.finished",
    "features.staged", "features.published",
    "training.searched#1", "training.registered", "training.promoted",
    "training.searched#2", "training.registered#2",
    "scoring.scored", "scoring.written", "drift.stored",
)  # fmt: skip
assert {p.partition("#")[0] for p in SOAK} == set(POINTS) and len(SOAK) == 20


def _run(home: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLOPS_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    env.pop(VARIABLE, None)
    if crash_at:
        env[VARIABLE] = crash_at
    process = subprocess.Popen(
        [str(BIN / "mlops"), "run", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: dbt and the Dask workers with it
    )
    out, err = process.communicate(timeout=900)
    if crash_at:  # the rest of the group (dbt, Dask workers) goes down with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _snapshot(home: Path) -> dict:
    """Every table's rows (without the when-columns and the ciphertexts, which are random),
    and the model registry's versions and champions."""
    tables = {}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        listed = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema not in ('information_schema', 'pg_catalog') order by 1, 2"
        ).fetchall()
        for schema, table in listed:
            name = f"{schema}.{table}"
            if name in SKIPPED_TABLES:
                continue
            columns = [
                c
                for c, t in con.execute(
                    "select column_name, data_type from information_schema.columns "
                    "where table_schema = ? and table_name = ? order by ordinal_position",
                    [schema, table],
                ).fetchall()
                if c not in WHEN and t != "BLOB"
            ]
            select = ", ".join(f'"{c}"' for c in columns)
            rows = con.execute(f'select {select} from "{schema}"."{table}"').fetchall()
            tables[name] = sorted(map(repr, rows))
    models = home / "models"
    registry = {
        model.name: {
            "versions": sorted(p.name for p in model.iterdir() if (p / "model.json").exists()),
            "champion": json.loads((model / "champion.json").read_text())["version"]
            if (model / "champion.json").exists()
            else None,
        }
        for model in sorted(models.iterdir())
        if model.is_dir()
    }
    return {"tables": tables, "registry": registry}


@pytest.fixture(scope="module")
def from_empty(tmp_path_factory) -> tuple[Path, dict]:
    """Landing files, the keyring every home shares (pseudonyms depend on it), and the
    snapshot of an uninterrupted run from an empty home."""
    root = tmp_path_factory.mktemp("crash")
    generate(DATA, root / "landing")
    home = root / "reference"
    shutil.copytree(root / "landing", home / "landing")
    result = _run(home)
    assert result.returncode == 0, result.stderr[-3000:]
    return home, _snapshot(home)


def _crash_and_recover(home: Path, crash_at: list[str], expected: dict) -> None:
    """Runs of ``home`` killed at each of ``crash_at`` in turn (each also recovering from the
    kill before it), then one run to the end: the home must match ``expected``."""
    for point in crash_at:
        crashed = _run(home, point)
        assert crashed.returncode == -signal.SIGKILL, (
            f"the run did not reach {point}",
            crashed.returncode,
            crashed.stderr[-2000:],
        )
    assert run_here(home)["ok"]  # the run to the end (in this process: nothing kills it)
    actual = _snapshot(home)
    assert actual["registry"] == expected["registry"]
    assert sorted(actual["tables"]) == sorted(expected["tables"])
    for table, rows in expected["tables"].items():
        assert actual["tables"][table] == rows, f"{table} differs after crashes at {crash_at}"


def _from_empty_home(from_empty: tuple[Path, dict], tmp_path: Path) -> Path:
    """An empty home with the reference's landing files and keyring."""
    source, _ = from_empty
    home = tmp_path / "home"
    shutil.copytree(source / "landing", home / "landing")
    shutil.copytree(source / "keys", home / "keys")
    return home


def test_a_run_killed_inside_a_transaction_ends_as_if_never_killed(
    reference_home: ReferenceHome, reference_after_later_days: Path, tmp_path
):
    home = reference_home.copy(tmp_path / "home", later_days=True)
    _crash_and_recover(home, [FAST], _snapshot(reference_after_later_days))


@pytest.mark.soak
def test_soak_runs_killed_mid_write_again_and_again_end_as_if_never_killed(
    reference_home: ReferenceHome, reference_after_later_days: Path, tmp_path
):
    home = reference_home.copy(tmp_path / "home", later_days=True)
    _crash_and_recover(home, list(CHAIN), _snapshot(reference_after_later_days))


@pytest.mark.soak
def test_soak_runs_of_an_empty_home_killed_again_and_again_end_as_if_never_killed(
    from_empty, tmp_path
):
    _crash_and_recover(_from_empty_home(from_empty, tmp_path), list(CHAIN), from_empty[1])


@pytest.mark.soak
@pytest.mark.parametrize("crash_at", SOAK)
def test_soak_a_run_killed_at_any_of_twenty_points_ends_as_if_never_killed(
    from_empty, crash_at, tmp_path
):
    _crash_and_recover(_from_empty_home(from_empty, tmp_path), [crash_at], from_empty[1])
