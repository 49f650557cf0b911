from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mlops_assets.ingestion import loader
from mlops_assets.ingestion.files import IngestionError
from mlops_assets.ingestion.ledger import unbalanced_ledger_rows
from mlops_assets.ingestion.loader import ingest_file, ingest_source
from mlops_assets.sample_data.generator import OUTCOME_COLUMNS, GeneratorConfig, generate
from tests.ingestion.conftest import IDENTIFIERS, SOURCES, ensure_tables, quarantined_lines

HEADER = ",".join(OUTCOME_COLUMNS)
SPEC = SOURCES["outcomes"]


@pytest.fixture
def landing(tmp_path) -> Path:
    (tmp_path / "outcomes").mkdir()
    return tmp_path


def write(landing: Path, name: str, text: str | bytes, source: str = "outcomes") -> Path:
    path = landing / source / name
    path.parent.mkdir(exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def snapshot(con) -> dict[str, list]:
    """Everything the loader may write, to prove a failed file changed nothing."""
    tables = ["raw.outcomes", "quarantine.outcomes", "audit.ingested_files"]
    return {t: sorted(map(str, con.execute(f"select * from {t}").fetchall())) for t in tables}


def test_generated_landing_is_loaded_exactly_once(con, tmp_path, keyring):
    landing = tmp_path / "landing"
    report = generate(GeneratorConfig(days=33, rows_per_day=120, seed=5), landing)
    first = {
        s: ingest_source(con, landing, spec, IDENTIFIERS, keyring=keyring)
        for s, spec in SOURCES.items()
    }
    counts = {s: con.execute(f"select count(*) from raw.{s}").fetchone()[0] for s in SOURCES}
    assert all(r.count("failed") == 0 for r in first.values())
    assert counts["applications"] > 1000

    again = {
        s: ingest_source(con, landing, spec, IDENTIFIERS, keyring=keyring)
        for s, spec in SOURCES.items()
    }
    assert all(r.count("unchanged") == len(r.files) for r in again.values())
    assert counts == {
        s: con.execute(f"select count(*) from raw.{s}").fetchone()[0] for s in SOURCES
    }
    for source, result in first.items():
        assert result.total("rows_loaded") + result.total("rows_quarantined") == result.total(
            "data_lines"
        )
        assert unbalanced_ledger_rows(con, SOURCES[source]) == []
    # Exactly the generator's malformed and non-numeric lines are in quarantine.
    reasons = [r[0] for r in con.execute("select reason from quarantine.applications").fetchall()]
    unreadable = (
        report.dirty[("applications", "malformed_line")]
        + report.dirty[("applications", "not_a_number")]
    )
    assert len(reasons) == unreadable > 0
    assert all("annual_income" in r or "columns" in r for r in reasons)


def test_changed_file_replaces_its_rows_in_one_go(con, landing, keyring):
    path = write(landing, "2025-02-01.csv", f"{HEADER}\nA1,2025-02-01,0,0\nA2,2025-02-01,1,50\n")
    assert ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring).status == "loaded"
    write(landing, "2025-02-01.csv", f"{HEADER}\nA1,2025-02-01,1,10\n")
    result = ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring)
    assert result.status == "replaced"
    assert con.execute("select application_id, defaulted from raw.outcomes").fetchall() == [
        ("A1", 1)
    ]
    ledger = con.execute("select rows_loaded, data_lines from audit.ingested_files").fetchall()
    assert ledger == [(1, 1)]


def test_unchanged_file_is_skipped_and_force_reload_replaces_not_duplicates(con, landing, keyring):
    path = write(landing, "2025-02-01.csv", f"{HEADER}\nA1,2025-02-01,0,0\n")
    ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring)
    assert ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring).status == "unchanged"
    assert (
        ingest_file(con, landing, path, SPEC, IDENTIFIERS, force=True, keyring=keyring).status
        == "replaced"
    )
    assert con.execute("select count(*) from raw.outcomes").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("A2,2025-02-01,yes,0", "defaulted: not a valid integer"),
        ("A2,2025-02-01,0", "missing columns"),
        ("A2,2025-02-01,0,0,surplus", "too many columns"),
        (",2025-02-01,0,0", "application_id is empty"),
        ('A2,2025-02-01,0,"unterminated', "unquoted value"),
    ],
)
def test_bad_lines_are_quarantined_with_reason_and_line(con, landing, line, reason, keyring):
    text = f"{HEADER}\nA1,2025-02-01,0,0\n{line}\nA3,2025-02-01,1,5\n"
    if "unterminated" in line:
        text = f"{HEADER}\nA1,2025-02-01,0,0\n{line}\n"  # it swallows the rest of the file
    path = write(landing, "2025-02-01.csv", text)
    result = ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring)
    rows = quarantined_lines(con, keyring)
    assert rows[0][0] == 3
    assert reason in rows[0][1]
    assert rows[0][2] == line
    assert result.rows_loaded + result.rows_quarantined == result.data_lines
    loaded = [r[0] for r in con.execute("select application_id from raw.outcomes").fetchall()]
    assert "A1" in loaded and "A2" not in loaded


def test_a_line_break_inside_a_value_quarantines_every_line_it_spans(con, landing, keyring):
    text = f'{HEADER}\nA1,2025-02-01,0,0\n"A2\nsecond half",2025-02-01,0,0\nA3,2025-02-01,1,5\n'
    path = write(landing, "2025-02-01.csv", text)
    result = ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring)
    assert [(n, r) for n, r, _ in quarantined_lines(con, keyring)] == [
        (3, "line break inside the value of application_id"),
        (4, "line break inside the value of application_id"),
    ]
    assert con.execute("select application_id, _line_number from raw.outcomes").fetchall() == [
        ("A1", 2),
        ("A3", 5),
    ]
    assert (result.data_lines, result.rows_loaded, result.rows_quarantined) == (4, 2, 2)


def test_mixed_line_endings_and_blank_lines_are_read(con, landing, keyring):
    text = f"{HEADER}\r\nA1,2025-02-01,0,0\n\nA2,2025-02-01,1,5\r\nA3,2025-02-01,0,0,x\n"
    path = write(landing, "2025-02-01.csv", text)
    result = ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring)
    assert (result.data_lines, result.rows_loaded, result.rows_quarantined) == (3, 2, 1)
    assert con.execute("select _line_number from raw.outcomes order by 1").fetchall() == [
        (2,),
        (4,),
    ]


def test_columns_in_another_order_and_extra_columns_are_kept(con, landing, keyring):
    text = "loss_amount,Defaulted ,application_id,observed_at,branch\n12.5,1,A1,2025-02-01,north\n"
    path = write(landing, "2025-02-01.csv", text)
    result = ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring)
    assert result.extra_columns == ("branch",)
    row = con.execute(
        "select application_id, defaulted, loss_amount, _extra_columns from raw.outcomes"
    ).fetchone()
    assert row[:3] == ("A1", 1, 12.5)
    assert json.loads(row[3]) == {"branch": "north"}


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("2025-02-01.csv", "", "file is empty"),
        ("2025-02-01.csv", b"\x00\x01\x02binary\x00", "binary content"),
        (
            "2025-02-01.csv",
            "application_id,observed_at\nA1,2025-02-01\n",
            "missing required column",
        ),
        ("2025-02-01.csv", f"{HEADER},defaulted\nA1,2025-02-01,0,0,1\n", "repeats column"),
        ("2025-02-01.csv", "just some text\nmore text\n", "not CSV"),
        ("2025-02-01.csv", b"\xff\xfeh\x00e\x00", "UTF-16 encoded"),
        ("2025-02-01.csv", HEADER.encode() + b",r\xe9gion\nA1,2025-02-01,0,0,x\n", "not UTF-8"),
        (
            "2025-02-01.csv",
            f"{HEADER}\nA1,2025-02-01,0,0\n".encode() + b"A\xe92,x,0,0\nA\xe93,x,0,0\n",
            "2 of 3 lines are not UTF-8 text — re-export the file as UTF-8",
        ),
    ],
)
def test_unreadable_file_fails_alone_naming_file_and_problem(
    con, landing, name, content, problem, keyring
):
    good = write(landing, "2025-01-31.csv", f"{HEADER}\nA0,2025-01-31,0,0\n")
    ingest_file(con, landing, good, SPEC, IDENTIFIERS, keyring=keyring)
    before = snapshot(con)
    bad = write(landing, name, content)
    with pytest.raises(IngestionError) as failure:
        ingest_file(con, landing, bad, SPEC, IDENTIFIERS, keyring=keyring)
    assert str(failure.value).startswith(f"outcomes/{name}: ")
    assert problem in str(failure.value)
    assert snapshot(con) == before

    # Through ingest_source the bad file is reported and the others still load.
    write(landing, "2025-02-02.csv", f"{HEADER}\nA9,2025-02-02,1,3\n")
    result = ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert [f.path for f in result.failed] == [f"outcomes/{name}"]
    assert result.count("loaded") == 1


def test_partition_keys_select_the_days_to_load(con, landing, keyring):
    for day in ("2025-02-01", "2025-02-02", "2025-02-03"):
        write(landing, f"{day}.csv", f"{HEADER}\nA{day},{day},0,0\n")
    result = ingest_source(
        con, landing, SOURCES["outcomes"], IDENTIFIERS, ["2025-02-02"], keyring=keyring
    )
    assert [f.path for f in result.files] == ["outcomes/2025-02-02.csv"]
    assert result.files[0].partition_key == "2025-02-02"


def outcome_days(landing: Path, days: int) -> None:
    for day in range(1, days + 1):
        date = f"2025-02-{day:02d}"
        write(landing, f"{date}.csv", f"{HEADER}\n" + f"A{date},{date},0,0\n" * 50)


def test_a_load_keeps_its_commits_in_the_log_and_checkpoints_once_at_its_end(
    tmp_path, landing, keyring, monkeypatch
):
    # A threshold so low that every commit would checkpoint, as the default does once the log
    # passes 16 MB: during the load the files' commits stay in the write-ahead log instead.
    path = tmp_path / "warehouse.duckdb"
    wal = Path(f"{path}.wal")
    con = duckdb.connect(str(path))
    con.execute("set checkpoint_threshold = '1KB'")
    ensure_tables(con)
    con.execute("checkpoint")
    outcome_days(landing, 3)
    logged = []  # the log's size after each file's commit, before the next file's can begin
    commit = loader.commit_file

    def committed(*args, turn=None, **kwargs):
        @contextlib.contextmanager
        def recorded():
            with turn or contextlib.nullcontext():
                yield
                logged.append(wal.stat().st_size if wal.exists() else 0)

        commit(*args, turn=recorded(), **kwargs)

    monkeypatch.setattr(loader, "commit_file", committed)
    result = ingest_source(con, landing, SPEC, IDENTIFIERS, keyring=keyring)
    assert [f.status for f in result.files] == ["loaded"] * 3
    assert 1000 < logged[0] < logged[1] < logged[2]  # no checkpoint between the commits
    assert not wal.exists() or wal.stat().st_size == 0  # the load's own checkpoint at its end
    assert con.execute("select current_setting('checkpoint_threshold')").fetchall() == [
        ("1000 bytes",)
    ]
    con.close()
    with duckdb.connect(str(path), read_only=True) as reopened:
        assert reopened.execute("select count(*) from raw.outcomes").fetchall() == [(150,)]
        assert unbalanced_ledger_rows(reopened, SPEC) == []


def test_a_load_killed_between_its_files_keeps_every_file_it_committed(tmp_path, landing):
    """Killed (SIGKILL) after its second file's commit, before any checkpoint: the next open
    replays the log, and the warehouse holds those two files whole, in the ledger."""
    path = tmp_path / "warehouse.duckdb"
    outcome_days(landing, 4)
    load = (
        "import duckdb, sys; from pathlib import Path\n"
        "from mlops_assets.ingestion.loader import ingest_source\n"
        "from mlops_assets.security.keyring import Keyring\n"
        "from tests.ingestion.conftest import IDENTIFIERS, SOURCES, ensure_tables\n"
        "con = duckdb.connect(sys.argv[1]); ensure_tables(con); con.execute('checkpoint')\n"
        "ingest_source(con, Path(sys.argv[2]), SOURCES['outcomes'], IDENTIFIERS,\n"
        "              keyring=Keyring.create(Path(sys.argv[3])))\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", load, str(path), str(landing), str(tmp_path / "keyring.json")],
        env={**os.environ, "MLOPS_CRASH_AT": "ingest.committed#2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert Path(f"{path}.wal").stat().st_size > 0  # the two commits, not checkpointed
    with duckdb.connect(str(path)) as reopened:
        files = reopened.execute(
            "select path, rows_loaded from audit.ingested_files order by 1"
        ).fetchall()
        assert files == [("outcomes/2025-02-01.csv", 50), ("outcomes/2025-02-02.csv", 50)]
        assert reopened.execute("select count(*) from raw.outcomes").fetchall() == [(100,)]
        assert unbalanced_ledger_rows(reopened, SPEC) == []


def test_a_load_that_fails_restores_the_checkpoint_threshold(tmp_path, landing, keyring):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("set checkpoint_threshold = '1KB'")
    ensure_tables(con)
    outcome_days(landing, 1)

    def lost(*args, **kwargs):
        raise RuntimeError("the warehouse went away")  # not the file's fault: the load stops

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loader, "commit_file", lost)
        with pytest.raises(RuntimeError, match="went away"):
            ingest_source(con, landing, SPEC, IDENTIFIERS, keyring=keyring)
    assert con.execute("select current_setting('checkpoint_threshold')").fetchall() == [
        ("1000 bytes",)
    ]
    con.close()


def test_ledger_check_detects_rows_that_disappeared(con, landing, keyring):
    path = write(landing, "2025-02-01.csv", f"{HEADER}\nA1,2025-02-01,0,0\nA2,2025-02-01,0,0\n")
    ingest_file(con, landing, path, SPEC, IDENTIFIERS, keyring=keyring)
    assert unbalanced_ledger_rows(con, SPEC) == []
    con.execute("delete from raw.outcomes where application_id = 'A2'")
    assert unbalanced_ledger_rows(con, SPEC) == [("outcomes/2025-02-01.csv", 2, 2, 0, 1, 0)]


def test_an_error_that_is_not_the_files_fault_stops_later_files_from_committing(
    con, landing, monkeypatch, keyring
):
    """Files after a failed commit are parsed already (two at a time) but never committed: the
    load stops as a sequential one would, and the ledger holds exactly the files before."""
    from mlops_assets.ingestion import commit

    for day in range(1, 7):
        write(landing, f"2025-03-{day:02d}.csv", f"{HEADER}\nA{day},2025-03-{day:02d},0,0\n")
    replace = commit.replace_rows

    def failing(con, rel, *args, **kwargs):
        if rel.endswith("2025-03-03.csv"):
            raise OSError("No space left on device")
        return replace(con, rel, *args, **kwargs)

    monkeypatch.setattr(commit, "replace_rows", failing)
    with pytest.raises(OSError, match="No space left"):
        ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    ledger = con.execute("select path from audit.ingested_files order by path").fetchall()
    assert [p for (p,) in ledger] == ["outcomes/2025-03-01.csv", "outcomes/2025-03-02.csv"]
    assert con.execute("select count(*) from raw.outcomes").fetchone()[0] == 2

    monkeypatch.setattr(commit, "replace_rows", replace)
    again = ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert [f.status for f in again.files] == ["unchanged"] * 2 + ["loaded"] * 4
    assert con.execute("select count(*) from raw.outcomes").fetchone()[0] == 6
