"""Right to erasure reaches the quarantine: `mlops pii forget` shreds the quarantined lines that
name the customer, whichever column holds their id, and `quarantined-line` says so."""

from __future__ import annotations

import duckdb

from mlops_assets.ingestion.loader import ingest_source
from tests.security.conftest import FILE, HEADER, SWAPPED

ADA = ("Ada Lovelace", "ada@example.com", "+1-555-123-4567", "123-45-6789")


def quarantined(home, line: int, file: str = FILE):
    return home.invoke(
        "pii", "quarantined-line", "--source", "customers", "--file", file,
        "--line", str(line), "--reason", "fix the feed",
    )  # fmt: skip


def test_forget_erases_the_quarantined_lines_that_name_the_customer(home):
    assert "Ada Lovelace" in quarantined(home, 3).output  # the swapped line, before

    forgotten = home.invoke("pii", "forget", "--customer", home.key("CUS-0000001"))
    assert forgotten.exit_code == 0, forgotten.output

    shown = quarantined(home, 3)
    assert shown.exit_code == 1
    assert "was erased" in shown.output
    assert not any(value in shown.output for value in ADA)
    assert "erased 7 values and 1 quarantined lines" in forgotten.output
    # Another customer's quarantined line is untouched.
    assert "Alan Turing" in quarantined(home, 4).output
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        rows = con.execute(
            "select line_number, raw_line_encrypted is null, erased_at is not null "
            "from quarantine.customers order by 1"
        ).fetchall()
        ledger = con.execute("select rows_quarantined from audit.ingested_files").fetchone()
        audit = con.execute(
            "select columns from audit.pii_access where action = 'forget'"
        ).fetchone()
    # The row stays (the ledger still balances); only its ciphertext is gone.
    assert rows == [(3, True, True), (4, False, False)] and ledger == (2,)
    assert f"quarantine.customers:{FILE}:3" in audit[0]


def test_a_customer_known_only_from_a_quarantined_line_can_be_forgotten(home):
    forgotten = home.invoke("pii", "forget", "--customer", home.key("CUS-0000002"))
    assert forgotten.exit_code == 0, forgotten.output
    assert "erased 0 values and 1 quarantined lines" in forgotten.output
    shown = quarantined(home, 4)
    assert shown.exit_code == 1 and "Alan" not in shown.output


def test_forget_requires_a_reason(home):
    refused = home.invoke("pii", "forget", "--customer", home.key("CUS-0000001"), "--reason", " ")
    assert refused.exit_code == 1
    assert "a reason is required" in refused.output
    revealed = home.invoke(
        "pii", "reveal", "--customer", home.key("CUS-0000001"), "--reason", "still there?"
    )
    assert revealed.exit_code == 0 and "Ada Lovelace" in revealed.output


def test_a_later_file_naming_an_erased_customer_keeps_them_erased(home):
    assert home.invoke("pii", "forget", "--customer", home.key("CUS-0000001")).exit_code == 0
    later = home.path / "landing" / "customers" / "2025-02-02.csv"
    later.write_text(f"{HEADER}\n{SWAPPED}\n")
    with duckdb.connect(str(home.warehouse)) as con:
        ingest_source(con, home.path / "landing", "customers", keyring=home.keyring)
    shown = quarantined(home, 2, "customers/2025-02-02.csv")
    assert shown.exit_code == 1 and "was erased" in shown.output
    assert not any(value in shown.output for value in ADA)
