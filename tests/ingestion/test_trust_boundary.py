"""A landing file is untrusted: its header never becomes SQL, its values never reach a reason,
one bad line or file never costs the others, and extras never land in plaintext when they could
identify someone."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from mlops_assets.ingestion import commit, staging
from mlops_assets.ingestion.files import MAX_COLUMNS, shown
from mlops_assets.ingestion.loader import ingest_file, ingest_source
from mlops_assets.ingestion.staging import MAX_LINE_BYTES
from mlops_assets.sample_data.generator import CUSTOMER_COLUMNS, OUTCOME_COLUMNS
from mlops_assets.security.vault import PII_TABLE, reveal
from tests.ingestion.conftest import IDENTIFIERS, SOURCES, quarantined_lines

HEADER = ",".join(OUTCOME_COLUMNS)
CUSTOMER = (
    "CUS-0000001,Ada Lovelace,ada@example.com,+1-555-123-4567,123-45-6789,1985-12-10,"
    "12 Oak Street,Salem,north,master,single,0,2025-02-01 08:00:00"
)
APPLICATION_HEADER = ",".join(SOURCES["applications"].columns)


def application(application_id: str, customer_id: str = "CUS-0000001") -> str:
    return (
        f"{application_id},{customer_id},2025-02-01 10:00:00,5000,36,car,50000,2 years,RENT,"
        "10,700,3,0,web"
    )


def write(landing: Path, source: str, day: str, content: str | bytes) -> Path:
    path = landing / source / f"{day}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def quarantined(con, source: str = "outcomes") -> list[tuple]:
    return con.execute(
        f"select line_number, reason from quarantine.{source} order by line_number"
    ).fetchall()


# --- finding 1: header names never become SQL ---------------------------------------------


def test_a_header_name_is_data_never_sql(con, tmp_path, keyring):
    """The attack of the issue: a quote in a header name closed the reason literal and ran
    statements (raw.customers emptied, a file written). An innocent apostrophe failed the
    whole step."""
    landing = tmp_path / "landing"
    write(landing, "customers", "2025-02-01", f"{','.join(CUSTOMER_COLUMNS)}\n{CUSTOMER}\n")
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    stolen = tmp_path / "stolen.csv"
    attack = (
        f"x' end); delete from raw.customers; copy (select 1) to '{stolen}'; "
        "select (case when 1 then 'x"
    )
    header = f'{HEADER},"{attack}",borrower\'s note'
    write(landing, "outcomes", "2025-02-01", f"{header}\nA1,2025-02-01,0,0,evil,fine\n")
    result = ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    [loaded] = result.files
    assert loaded.status == "loaded", loaded.error
    assert con.execute("select count(*) from raw.customers").fetchone()[0] == 1
    assert not stolen.exists()
    extras = json.loads(con.execute("select _extra_columns from raw.outcomes").fetchone()[0])
    assert extras == {attack: "evil", "borrower's note": "fine"}
    ledger = con.execute("select extra_columns from audit.ingested_files where source = 'outcomes'")
    assert ledger.fetchone()[0] == [attack, "borrower's note"]


def test_a_confined_load_cannot_touch_other_files(tmp_path, keyring):
    landing = tmp_path / "landing"
    write(landing, "outcomes", "2025-02-01", f"{HEADER}\r\nA1,2025-02-01,0,0\nA2,2025-02-01,0,0\n")
    with duckdb.connect() as con:
        result = ingest_source(
            con, landing, SOURCES["outcomes"], IDENTIFIERS, confined=True, keyring=keyring
        )
        assert [f.rows_loaded for f in result.files] == [2]  # mixed endings: read from a copy
        with pytest.raises(duckdb.PermissionException):
            con.execute("select * from read_text(?)", [str(keyring.path)])
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"copy (select 1) to '{tmp_path / 'out.csv'}'")
        with pytest.raises(duckdb.Error):
            con.execute("set enable_external_access = true")


# --- finding 3: reasons name the column and the kind of error, never the value --------------


def test_reasons_never_quote_a_value(con, tmp_path, keyring):
    landing = tmp_path / "landing"
    # Two columns swapped by the producer: names land in `dependents`.
    swapped = list(CUSTOMER_COLUMNS)
    i, j = swapped.index("full_name"), swapped.index("dependents")
    swapped[i], swapped[j] = swapped[j], swapped[i]
    write(landing, "customers", "2025-02-01", f"{','.join(swapped)}\n{CUSTOMER}\n{CUSTOMER},x\n")
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    assert quarantined(con, "customers") == [
        (2, "dependents: not a valid integer"),
        (3, "dependents: not a valid integer; too many columns"),
    ]
    # Applications: the header swaps customer_id and amount, so the ids land in `amount`.
    lines = [application("APP-1"), application("APP-2") + ",surplus"]
    header = APPLICATION_HEADER.replace(
        "customer_id,applied_at,amount", "amount,applied_at,customer_id"
    )
    write(landing, "applications", "2025-02-01", "\n".join([header, *lines]) + "\n")
    ingest_source(con, landing, SOURCES["applications"], IDENTIFIERS, keyring=keyring)
    reasons = " ".join(r for _, r in quarantined(con, "applications"))
    assert "amount: not a valid double" in reasons
    assert "CUS-" not in reasons and "Ada" not in reasons


# --- finding 6: a bad line costs that line, a bad file that file ------------------------------


def test_a_cr_only_file_is_read(con, tmp_path, keyring):
    landing = tmp_path / "landing"
    path = write(landing, "outcomes", "2025-02-01", f"{HEADER}\rA1,2025-02-01,0,0\r\rA2,x,1,y\r")
    result = ingest_file(con, landing, path, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert (result.data_lines, result.rows_loaded, result.rows_quarantined) == (2, 1, 1)
    assert quarantined(con) == [(4, "loss_amount: not a valid double")]


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_quoted_lone_cr_is_part_of_its_value_and_ends_no_line(con, tmp_path, keyring, ending):
    """In an LF (or CRLF) file a CR alone inside a quoted value is the value's: the record loads
    with it, and the lines after it keep their physical numbers."""
    landing = tmp_path / "landing"
    lines = [HEADER, '"A\r1",2025-02-01,0,0', "A2,x,1,y", "A3,2025-02-01,1,5"]
    path = write(landing, "outcomes", "2025-02-01", ending.join(lines) + ending)
    result = ingest_file(con, landing, path, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert result.status == "loaded"
    assert (result.data_lines, result.rows_loaded, result.rows_quarantined) == (3, 2, 1)
    assert con.execute(
        "select application_id, _line_number from raw.outcomes order by _line_number"
    ).fetchall() == [("A\r1", 2), ("A3", 4)]
    assert quarantined(con) == [(3, "loss_amount: not a valid double")]


def test_lines_that_are_not_text_or_too_long_are_quarantined_and_the_rest_loads(
    con, tmp_path, keyring
):
    landing = tmp_path / "landing"
    good = "".join(f"G{i},2025-02-01,0,0\n" for i in range(6000))  # the NUL is past 64 KiB
    content = (
        f"{HEADER}\n{good}".encode()
        + b"N\x001,2025-02-01,0,0\n"
        + b"B\xe91,2025-02-01,0,0\n"
        + b"L1,2025-02-01,0,"
        + b"9" * (3 * MAX_LINE_BYTES)
        + b"\n"
        + b"Z1,2025-02-01,1,5\n"
    )
    path = write(landing, "outcomes", "2025-02-01", content)
    result = ingest_file(con, landing, path, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert (result.data_lines, result.rows_loaded, result.rows_quarantined) == (6004, 6001, 3)
    assert quarantined(con) == [
        (6002, "NUL character in the value of application_id"),
        (6003, "not UTF-8 text"),
        (6004, f"longer than {MAX_LINE_BYTES} bytes"),
    ]
    assert con.execute("select count(*) from raw.outcomes where contains(application_id, chr(0))")
    lines = quarantined_lines(con, keyring)
    assert max(len(line) for _, _, line in lines) < 20_000
    # The kept text of a line that is not UTF-8: each byte that is not, replaced (U+FFFD).
    assert lines[1][2] == "B\ufffd1,2025-02-01,0,0"
    assert con.execute(
        "select _line_number from raw.outcomes where application_id = 'Z1'"
    ).fetchall()


def test_a_nul_in_an_early_data_line_costs_that_line(con, tmp_path, keyring):
    landing = tmp_path / "landing"
    path = write(landing, "outcomes", "2025-02-01", f"{HEADER}\nA\x001,x,0,0\nA2,x,0,0\n")
    result = ingest_file(con, landing, path, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert (result.status, result.rows_loaded, result.rows_quarantined) == ("loaded", 1, 1)


@pytest.mark.parametrize("columns", [MAX_COLUMNS + 1, 10_000])
def test_a_file_wider_than_the_limit_fails_alone(con, tmp_path, columns, keyring):
    landing = tmp_path / "landing"
    write(landing, "outcomes", "2025-02-01", f"{HEADER}\nA1,2025-02-01,0,0\n")
    names = [f"c{i}" for i in range(columns - 4)]
    write(landing, "outcomes", "2025-02-02", f"{HEADER},{','.join(names)}\n")
    write(landing, "outcomes", "2025-02-03", f"{HEADER}\nA3,2025-02-03,0,0\n")
    result = ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert [f.status for f in result.files] == ["loaded", "failed", "loaded"]
    assert result.files[1].error == (
        f"outcomes/2025-02-02.csv: {columns} columns — at most {MAX_COLUMNS} are accepted; "
        "nothing loaded"
    )


def test_a_file_as_wide_as_the_limit_loads(con, tmp_path, keyring):
    landing = tmp_path / "landing"
    extras = [f"c{i}" for i in range(MAX_COLUMNS - 4)]
    row = ",".join(["A1", "2025-02-01", "0", "0", *("v" for _ in extras)])
    path = write(landing, "outcomes", "2025-02-01", f"{HEADER},{','.join(extras)}\n{row}\n")
    assert (
        ingest_file(
            con, landing, path, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring
        ).rows_loaded
        == 1
    )


def test_a_parse_error_fails_that_file_alone(con, tmp_path, monkeypatch, keyring):
    """Whatever DuckDB raises while it parses one file (here an error type the loader never
    expected), the files before and after it are committed."""
    landing = tmp_path / "landing"
    for day in range(1, 5):
        write(landing, "outcomes", f"2025-03-0{day}", f"{HEADER}\nA{day},2025-03-0{day},0,0\n")
    read_records = staging.read_records

    def unexpected(con, file, types_sql):
        if file.name == "2025-03-02.csv":
            raise duckdb.BinderException("Binder Error: something unforeseen")
        return read_records(con, file, types_sql)

    monkeypatch.setattr(staging, "read_records", unexpected)
    result = ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert [f.status for f in result.files] == ["loaded", "failed", "loaded", "loaded"]
    assert result.files[1].error.startswith("outcomes/2025-03-02.csv: could not be read as CSV")
    assert con.execute("select count(*) from raw.outcomes").fetchone()[0] == 3


@pytest.mark.parametrize(
    "error",
    [
        duckdb.FatalException("FATAL Error: database invalidated"),
        duckdb.IOException('IO Error: Could not write file "x.tmp": No space left on device'),
    ],
)
def test_a_broken_database_or_a_full_disk_still_stops_the_load(
    con, tmp_path, monkeypatch, error, keyring
):
    landing = tmp_path / "landing"
    write(landing, "outcomes", "2025-03-01", f"{HEADER}\nA1,2025-03-01,0,0\n")

    def failing(con, file, types_sql):
        raise error

    monkeypatch.setattr(staging, "read_records", failing)
    with pytest.raises(type(error)):
        ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)


# --- finding 9: extras of every feed are kept, never in plaintext when they may identify ------


def test_extras_of_an_event_feed_with_personal_data_are_kept_in_the_vault(con, tmp_path, keyring):
    landing = tmp_path / "landing"
    content = f"{APPLICATION_HEADER},branch\n{application('APP-1')},north\n"
    path = write(landing, "applications", "2025-02-01", content)
    ingest_source(con, landing, SOURCES["applications"], IDENTIFIERS, keyring=keyring)
    assert con.execute("select _extra_columns from raw.applications").fetchall() == [(None,)]
    key = keyring.pseudonym("CUS-0000001")
    cell = "_extra_columns@applications/2025-02-01.csv:2"
    assert json.loads(reveal(con, keyring, key, "test")[cell]) == {"branch": "north"}
    # A new version of the file replaces its cells: none is left from lines that moved.
    path.write_text(f"{APPLICATION_HEADER},branch\n\n{application('APP-1')},south\n")
    ingest_source(con, landing, SOURCES["applications"], IDENTIFIERS, keyring=keyring)
    cells = con.execute(f"select column_name from {PII_TABLE} where customer_key = ?", [key])
    assert cells.fetchall() == [("_extra_columns@applications/2025-02-01.csv:3",)]


# Any spelling of an identifier's name: case, separators, fullwidth letters, accents, zero width.
IDENTIFIER_SPELLINGS = [
    "full_name",
    "Email",
    "customer id",
    "E-Mail",
    "fullname",
    "CustomerID",
    "\uff25\uff4d\uff41\uff49\uff4c",  # fullwidth Email
    "e\u0301mail",
    "Na\u200btional_ID",
]


@pytest.mark.parametrize("column", IDENTIFIER_SPELLINGS)
def test_a_feed_without_personal_data_refuses_an_identifier_named_extra(
    con, tmp_path, column, keyring
):
    landing = tmp_path / "landing"
    content = f"{HEADER},{column}\nA1,2025-02-01,0,0,Ada Lovelace\n"
    path = write(landing, "outcomes", "2025-02-01", content)
    [failed] = ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring).files
    assert failed.status == "failed"
    assert failed.error.startswith("outcomes/2025-02-01.csv: column(s) ")
    assert shown(column.lower()) in failed.error and "Ada" not in failed.error
    tables = ["raw.outcomes", "quarantine.outcomes", "audit.ingested_files"]
    assert all(con.execute(f"select count(*) from {t}").fetchone()[0] == 0 for t in tables)
    assert path.exists()


def test_a_full_disk_at_commit_stops_later_files_from_committing(
    con, tmp_path, monkeypatch, keyring
):
    landing = tmp_path / "landing"
    for day in range(1, 5):
        write(landing, "outcomes", f"2025-03-0{day}", f"{HEADER}\nA{day},2025-03-0{day},0,0\n")
    replace = commit.replace_rows

    def full(con, rel, *args, **kwargs):
        if rel.endswith("2025-03-02.csv"):
            raise duckdb.IOException("IO Error: Could not write to WAL: No space left on device")
        return replace(con, rel, *args, **kwargs)

    monkeypatch.setattr(commit, "replace_rows", full)
    with pytest.raises(duckdb.IOException, match="No space left"):
        ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    ledger = con.execute("select path from audit.ingested_files").fetchall()
    assert ledger == [("outcomes/2025-03-01.csv",)]


# --- glob characters in a path are the path's, never a pattern --------------------------------


@pytest.mark.parametrize(("folder", "decoy"), [("g[1]", "g1"), ("a*b", "axb"), ("a?b", "axb"),
                                               ("c{a,b}", "ca")])  # fmt: skip
@pytest.mark.parametrize("confined", [False, True])
def test_a_landing_path_with_glob_characters_reads_that_file_only(
    tmp_path, folder, decoy, confined, keyring
):
    """DuckDB's readers expand ``[1]``, ``*`` and ``?``: a home named ``g[1]`` read the files of
    ``g1``, or failed every file once confined."""
    landing = tmp_path / folder / "landing"
    write(landing, "outcomes", "2025-02-01", f"{HEADER}\nA1,2025-02-01,0,0\n")
    write(tmp_path / decoy / "landing", "outcomes", "2025-02-01", f"{HEADER}\nA9,2025-02-01,1,9\n")
    with duckdb.connect() as con:
        [loaded] = ingest_source(
            con, landing, SOURCES["outcomes"], IDENTIFIERS, confined=confined, keyring=keyring
        ).files
        assert loaded.status == "loaded", loaded.error
        assert con.execute("select application_id from raw.outcomes").fetchall() == [("A1",)]
