"""Every data line's fate is told by its physical line number — quoted line breaks, blank lines
and CRLF included — blank required values are empty, and quarantined lines are encrypted in
every feed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_assets.ingestion.loader import ingest_file, ingest_source
from mlops_assets.sample_data.generator import CUSTOMER_COLUMNS, OUTCOME_COLUMNS
from mlops_assets.security.keyring import KeyringError
from mlops_assets.security.vault import forget
from tests.ingestion.conftest import IDENTIFIERS, SOURCES, ensure_tables, quarantined_lines

HEADER = ",".join([*OUTCOME_COLUMNS, "note"])
DAY = "2025-01-01"
BAD = "defaulted: not a valid integer"
BROKEN = "line break inside the value of note"
EMPTY = "application_id is empty"

# A record of the outcomes feed by kind: its physical lines, each with its fate (None: a blank
# line, no data line; "raw": loaded; else the quarantine reason).
LAYOUTS = {
    "good": lambda i: [(f"APP-{i},{DAY},0,0,fine", "raw")],
    "bad": lambda i: [(f"APP-{i},{DAY},notanint,0,x", BAD)],
    "blank": lambda i: [("", None)],
    "spaces": lambda i: [("   ", None)],
    "tab": lambda i: [("\t", "missing columns")],
    "too_many": lambda i: [(f"APP-{i},{DAY},0,0,x,surplus", "too many columns")],
    "spaces_id": lambda i: [(f"   ,{DAY},0,0,x", EMPTY)],
    "quoted_space_id": lambda i: [(f'" ",{DAY},0,0,x', EMPTY)],
    "two_lines": lambda i: [(f'APP-{i},{DAY},0,0,"two', BROKEN), ('lines"', BROKEN)],
    "blank_inside": lambda i: [(f'APP-{i},{DAY},0,0,"a', BROKEN), ("", None), ('b"', BROKEN)],
    "spaces_inside": lambda i: [(f'APP-{i},{DAY},0,0,"a', BROKEN), ("  ", None), ('b"', BROKEN)],
    "bad_two_lines": lambda i: [(f'APP-{i},{DAY},nope,0,"two', BAD), ('lines"', BAD)],
    "three_lines": lambda i: [(f'APP-{i},{DAY},0,0,"a', BROKEN), ("b", BROKEN), ('c"', BROKEN)],
}


def load_outcomes(content: bytes, keyring) -> tuple[duckdb.DuckDBPyConnection, object]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        path = tmp / "outcomes" / f"{DAY}.csv"
        path.parent.mkdir()
        path.write_bytes(content)
        con = duckdb.connect()
        ensure_tables(con)
        return con, ingest_file(con, tmp, path, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kinds=st.lists(st.sampled_from(sorted(LAYOUTS)), min_size=1, max_size=8),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_every_line_is_loaded_or_quarantined_under_its_physical_line_number(kinds, eol, keyring):
    lines = [(HEADER, None)] + [line for i, kind in enumerate(kinds) for line in LAYOUTS[kind](i)]
    content = "".join(text + eol for text, _ in lines).encode()
    con, result = load_outcomes(content, keyring)
    numbered = list(enumerate(lines, 1))

    loaded = con.execute(
        "select _line_number, application_id, defaulted, _extra_columns ->> 'note' "
        "from raw.outcomes order by 1"
    ).fetchall()
    assert loaded == [
        (n, text.split(",")[0], 0, "fine") for n, (text, fate) in numbered if fate == "raw"
    ]
    assert quarantined_lines(con, keyring) == [
        (n, fate, text) for n, (text, fate) in numbered if fate not in (None, "raw")
    ]
    data_lines = sum(fate is not None for _, fate in lines)
    assert (result.data_lines, result.rows_loaded + result.rows_quarantined) == (data_lines,) * 2


def test_a_good_line_after_a_quoted_line_break_keeps_its_number_and_the_bad_line_its_own(keyring):
    """The attacker's layout: DuckDB numbered APP-BAD's record 4 (it is on line 5)."""
    con, _ = load_outcomes(
        f'{HEADER}\nAPP-A,{DAY},0,0,"two\nlines"\nAPP-GOOD,{DAY},0,0,fine\n'
        f"APP-BAD,{DAY},notanint,0,x\n".encode(),
        keyring,
    )
    assert con.execute("select application_id, _line_number from raw.outcomes").fetchall() == [
        ("APP-GOOD", 4)
    ]
    assert quarantined_lines(con, keyring)[-1] == (5, BAD, f"APP-BAD,{DAY},notanint,0,x")


@pytest.mark.parametrize("blank", ["   ", '" "', '"\t"', '"\u00a0"', '""'])
def test_a_required_value_that_is_blank_is_empty_and_quarantined(tmp_path, keyring, blank):
    """Two customers whose ids are blanks shared the pseudonym of the empty string."""
    landing = tmp_path / "landing"
    (landing / "customers").mkdir(parents=True)
    ada = f"{blank},Ada Lovelace,ada@example.com,+1-555-123-4567,123-45-6789,1985-12-10,"
    alan = f"{blank},Alan Turing,alan@example.com,+1-555-765-4321,987-65-4321,1982-06-23,"
    rest = "12 Oak Street,Salem,north,master,single,0,2025-02-01 08:00:00"
    (landing / "customers" / f"{DAY}.csv").write_text(
        f"{','.join(CUSTOMER_COLUMNS)}\n{ada}{rest}\n{alan}{rest}\n"
    )
    with duckdb.connect() as con:
        ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
        assert con.execute("select count(*) from raw.customers").fetchone()[0] == 0
        assert con.execute("select count(*) from vault.customer_pii").fetchone()[0] == 0
        assert [(n, r) for n, r, _ in quarantined_lines(con, keyring, "customers")] == [
            (2, "customer_id is empty"),
            (3, "customer_id is empty"),
        ]
    con, result = load_outcomes(f"{HEADER}\n{blank},{DAY},0,0,x\n".encode(), keyring)
    assert (result.rows_loaded, [r for _, r, _ in quarantined_lines(con, keyring)]) == (0, [EMPTY])


def test_quarantined_lines_of_a_feed_without_personal_data_are_stored_encrypted(tmp_path, keyring):
    """A customer line pasted into the outcomes feed is quarantined, never kept in plaintext,
    and erasing the customer shreds it."""
    landing = tmp_path / "landing"
    (landing / "outcomes").mkdir(parents=True)
    pasted = "CUS-0000001,Ada Lovelace,ada@example.com,+1-555-123-4567"
    (landing / "outcomes" / f"{DAY}.csv").write_text(f"{HEADER}\n{pasted},x\n")
    with duckdb.connect() as con:
        with pytest.raises(KeyringError, match="keyring is required"):
            ingest_source(con, landing, SOURCES["outcomes"], IDENTIFIERS)
        [loaded] = ingest_source(
            con, landing, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring
        ).files
        assert (loaded.status, loaded.rows_quarantined) == ("loaded", 1)
        stored = con.execute("select * from quarantine.outcomes").fetchall()
        assert "Ada" not in repr(stored) and "CUS-0000001" not in repr(stored)
        [(line, reason, text)] = quarantined_lines(con, keyring)
        assert (line, text) == (2, f"{pasted},x") and "Ada" not in reason

        erased = forget(con, keyring, keyring.pseudonym("CUS-0000001"), "asked to be forgotten")
        assert erased.lines == 1
        assert con.execute(
            "select raw_line_encrypted is null and erased_at is not null from quarantine.outcomes"
        ).fetchall() == [(True,)]
