"""A full disk or a read-only MLOPS_HOME: a clear error, no traceback, and no corrupt state —
no file half loaded, and once there is room again (`make soak`, ``-m soak``) the next run ends
where an undisturbed one does; a read-only home is refused before a single file in it changes.

The home is a copy of the session's reference home on a real file system in a private mount
namespace (`unshare`; with a user namespace when not root): a tmpfs left with too little room
for a run over new landing days, or a read-only bind mount.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import textwrap
from pathlib import Path

import duckdb
import pytest

from mlops_assets import catalogue
from mlops_assets.ingestion.ledger import LEDGER_TABLE, unbalanced_ledger_rows
from mlops_assets.sql import qualified
from tests.conftest import BIN, ReferenceHome

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)

TABLES = ("raw.applications", "raw.customers", "staging.stg_applications",
          "marts.loan_applications", "features.loan_features", "audit.ingested_files")  # fmt: skip
ROOM_KB = 4096  # what the run over the new landing days finds free: less than it writes


def _in_namespace(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (bash) where its mounts are its own."""
    isolate = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--user", "--map-root-user"])
    env = {**os.environ, "MLOPS": str(BIN / "mlops")}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [*isolate, "bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip


def _counts(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}


def _fill_up(reference_home: ReferenceHome, tmp_path: Path, *, recover: bool) -> None:
    """A run over the reference home's later days on a disk left with ``ROOM_KB`` free; its
    warehouse copied out to ``full/`` with its write-ahead log. With ``recover``, the disk then
    has room again and the home runs once more, its warehouse copied out as
    ``recovered.duckdb``."""
    home, later = shlex.quote(str(reference_home.home)), shlex.quote(str(reference_home.later))
    script = textwrap.dedent(
        f"""
        set -eu
        mkdir -p home full
        mount -t tmpfs -o size=300m tmpfs home
        cp -a {home}/. home/
        cp -a {later}/. home/landing/
        used=$(df -k --output=used home | tail -n 1)
        mount -o remount,size=$((used + {ROOM_KB}))k tmpfs home
        set +e
        MLOPS_HOME=$PWD/home "$MLOPS" run --json > full.json 2> full.err; echo $? > full.rc
        cp home/warehouse.duckdb* full/
        """
    )
    if recover:
        script += textwrap.dedent(
            """
            mount -o remount,size=300m tmpfs home
            MLOPS_HOME=$PWD/home "$MLOPS" run --json > again.json 2> again.err; echo $? > again.rc
            cp home/warehouse.duckdb recovered.duckdb
            """
        )
    done = _in_namespace(script, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    full_err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "1", full_err[-2000:]
    said = full_err + (tmp_path / "full.json").read_text()
    assert "No space left on device" in said or "disk is full" in said, said[-3000:]
    assert "Traceback" not in full_err


def test_a_disk_that_fills_up_mid_run_stops_it_clearly_and_leaves_no_file_half_loaded(
    reference_home: ReferenceHome, tmp_path
):
    """The run stops saying the disk is full; every file in the ledger is in the warehouse
    whole (its rows and its quarantined lines), and no row is there without its file's ledger
    row. That the next run then ends where an undisturbed one does is `make soak`'s (below);
    in `make test`, `tests/ingestion/test_loader.py` loads the files after such an error on the
    next run, and a run killed inside a file's transaction ends as an undisturbed one
    (`test_crash_safety.py`)."""
    _fill_up(reference_home, tmp_path, recover=False)
    with duckdb.connect(str(reference_home.home / "warehouse.duckdb"), read_only=True) as con:
        before = set(con.execute(f"select path, sha256 from {LEDGER_TABLE}").fetchall())
    # The copy, with its write-ahead log: opening it writes, so it is opened here, not there.
    with duckdb.connect(str(tmp_path / "full" / "warehouse.duckdb")) as con:
        after = set(con.execute(f"select path, sha256 from {LEDGER_TABLE}").fetchall())
        for spec in catalogue.sources().values():
            assert unbalanced_ledger_rows(con, spec) == [], spec.name
            for table, file_column in (("raw", "_source_file"), ("quarantine", "source_file")):
                orphans = con.execute(
                    f"select count(*) from {qualified(table, spec.name)} where {file_column} "
                    f"not in (select path from {LEDGER_TABLE})"
                ).fetchone()[0]
                assert orphans == 0, (table, spec.name)
    # Nothing the home had before is lost, and the disk filled up mid-ingestion: some of the
    # new files were committed before it did (else the checks above would hold trivially).
    assert before < after, sorted(after - before)


@pytest.mark.soak
def test_soak_a_disk_that_fills_up_mid_run_stops_it_clearly_and_the_next_run_recovers(
    reference_home: ReferenceHome, reference_after_later_days: Path, tmp_path
):
    _fill_up(reference_home, tmp_path, recover=True)
    again_err = (tmp_path / "again.err").read_text()
    assert (tmp_path / "again.rc").read_text().strip() == "0", again_err[-3000:]
    assert json.loads((tmp_path / "again.json").read_text())["ok"]
    expected = _counts(reference_after_later_days / "warehouse.duckdb")
    assert _counts(tmp_path / "recovered.duckdb") == expected


def test_a_read_only_home_is_refused_before_anything_changes(reference_home, tmp_path):
    home = reference_home.copy(tmp_path / "home")
    before = {p: p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()}
    script = textwrap.dedent(
        """
        mount --bind home home
        mount -o remount,ro,bind home
        MLOPS_HOME=$PWD/home "$MLOPS" run > out.txt 2> err.txt; echo $? > rc
        """
    )
    done = _in_namespace(script, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    err = (tmp_path / "err.txt").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2", err
    assert "cannot be written: Read-only file system" in err and "Traceback" not in err
    # Not a file added, removed or written: the home is the reference home, which runs.
    assert {p: p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()} == before
