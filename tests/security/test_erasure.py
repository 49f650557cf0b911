"""Right to erasure reaches the quarantine: `mlops pii forget` shreds the quarantined records that
name the customer, whichever column holds their id and however many lines they span, and
`quarantined-line` says so; the warehouse file is rewritten so no erased ciphertext stays in its
bytes."""

from __future__ import annotations

import stat
from pathlib import Path

import duckdb

from mlops_assets import catalogue
from mlops_assets.ingestion.loader import ingest_source
from mlops_assets.ingestion.sources import identifier_names
from mlops_assets.security.vault import associated_data
from mlops_assets.warehouse import table_row_counts
from tests.security.conftest import CLEAN, FILE, HEADER, OTHER, SWAPPED, build_home

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
    assert "erased 1 vault row(s) and 1 quarantined line(s)" in forgotten.output
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
    assert "erased 0 vault row(s) and 1 quarantined line(s)" in forgotten.output
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
        sources = catalogue.sources()
        ingest_source(
            con,
            home.path / "landing",
            sources["customers"],
            identifier_names(sources.values()),
            keyring=home.keyring,
        )
    shown = quarantined(home, 2, "customers/2025-02-02.csv")
    assert shown.exit_code == 1 and "was erased" in shown.output
    assert not any(value in shown.output for value in ADA)


def ciphertexts(home, customer_id: str) -> list[bytes]:
    """The vault rows of the customer and every quarantined line's ciphertext that holds any
    of their identifiers, read before erasure."""
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        cells = con.execute(
            "select ciphertext from vault.customer_pii where customer_key = ?",
            [home.key(customer_id)],
        ).fetchall()
        lines = con.execute(
            "select source_file, line_number, raw_line_encrypted, key_version "
            "from quarantine.customers where raw_line_encrypted is not null"
        ).fetchall()
    named = [
        blob
        for file, line, blob, version in lines
        if any(
            value
            in home.keyring.decrypt(
                blob, version, associated_data("quarantine.customers", "raw_line", f"{file}:{line}")
            )
            for value in (customer_id, *ADA, "Grace", "Hopper", "grace@", "Navy Yard", "Arlington")
        )
    ]
    return [bytes(blob) for (blob,) in cells] + [bytes(blob) for blob in named]


def test_forget_leaves_no_erased_ciphertext_in_the_file_and_the_rest_intact(home):
    erased = ciphertexts(home, "CUS-0000001")
    assert len(erased) == 2  # the customer's identifiers (one vault row), the swapped line
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        counts = table_row_counts(con, ("raw", "quarantine", "vault", "audit"))
    home.warehouse.chmod(0o640)

    forgotten = home.invoke("pii", "forget", "--customer", home.key("CUS-0000001"))
    assert forgotten.exit_code == 0, forgotten.output

    data = home.warehouse.read_bytes()
    assert not [blob for blob in erased if blob in data]
    assert not Path(f"{home.warehouse}.wal").exists()
    assert stat.S_IMODE(home.warehouse.stat().st_mode) == 0o640
    assert not list(home.path.glob(".warehouse.duckdb.rewrite*"))
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        after = table_row_counts(con, ("raw", "quarantine", "vault", "audit"))
    # One audit row more (the forget), one vault row fewer, one customer erased: nothing else.
    assert after == counts | {
        "audit.pii_access": counts["audit.pii_access"] + 1,
        "vault.customer_pii": counts["vault.customer_pii"] - 1,
        "vault.erased_customers": 1,
    }
    assert "Alan Turing" in quarantined(home, 4).output
    # The message says what is true: the pseudonym remains, recomputable with the keyring.
    assert "can no longer be linked" not in forgotten.output
    assert "keyring" in forgotten.output and "Backups" in forgotten.output


GRACE = (
    'CUS-0000003,"Grace\nHopper",grace@example.com,+1-555-000-1111,111-22-3333,1906-12-09,'
    '"1 Navy Yard\nArlington",Arlington,south,doctorate,single,lots,2025-02-01 11:00:00'
)


def test_forget_erases_every_line_of_a_record_that_spans_lines(tmp_path, monkeypatch):
    # Grace's record covers lines 3-5 (quoted newlines); only line 3 holds her id. Alan's
    # quarantined line follows at 6 and is not hers.
    home = build_home(tmp_path / "home", [CLEAN, GRACE, OTHER], monkeypatch)
    assert "Hopper" in quarantined(home, 4).output
    erased = ciphertexts(home, "CUS-0000003")
    assert len(erased) == 3

    forgotten = home.invoke("pii", "forget", "--customer", home.key("CUS-0000003"))
    assert forgotten.exit_code == 0, forgotten.output
    assert "erased 0 vault row(s) and 3 quarantined line(s)" in forgotten.output
    for line in (3, 4, 5):
        shown = quarantined(home, line)
        assert shown.exit_code == 1 and "was erased" in shown.output
    assert "Alan Turing" in quarantined(home, 6).output
    data = home.warehouse.read_bytes()
    assert not [blob for blob in erased if blob in data]


def test_a_rewrite_that_fails_says_so_and_forgetting_again_rewrites(home, monkeypatch):
    # The erasure commits first; a writer holding the warehouse through the whole rewrite must
    # not leave the operator with a traceback or a false "rewrote", and the retry must work
    # although nothing of the customer is left to erase.
    import mlops_assets.warehouse as warehouse

    erased = ciphertexts(home, "CUS-0000001")
    rewrite = warehouse.rewrite_file

    def locked(path, **_):
        raise warehouse.WarehouseLockedError(f"warehouse {path} is locked by process 4242")

    monkeypatch.setattr(warehouse, "rewrite_file", locked)
    failed = home.invoke("pii", "forget", "--customer", home.key("CUS-0000001"))
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert "erasure is recorded" in failed.output and "Run this command again" in failed.output
    assert "rewrote" not in failed.output
    monkeypatch.setattr(warehouse, "rewrite_file", rewrite)
    again = home.invoke("pii", "forget", "--customer", home.key("CUS-0000001"))
    assert again.exit_code == 0, again.output
    assert "was erased before; rewrote the warehouse file" in again.output
    data = home.warehouse.read_bytes()
    assert not [blob for blob in erased if blob in data]
    unknown = home.invoke("pii", "forget", "--customer", home.key("CUS-9999999"))
    assert unknown.exit_code == 1 and "no personal data" in unknown.output


def test_forget_finds_the_id_however_a_quarantined_line_is_broken(tmp_path, monkeypatch):
    # Lines that Python's CSV reader does not read as the loader does: `;` as separator, the id
    # quoted after a space, and a line after a stray quote (Python folds everything after the
    # quote into one field). Each names CUS-0000001 and must be erased.
    semicolons = CLEAN.replace(",", ";")
    spaced = ' "CUS-0000001",' + CLEAN.split(",", 1)[1].replace(",0,", ",lots,")
    broken = 'CUS-0000777,"Broken quote,' + OTHER.split(",", 2)[2]
    after = CLEAN.replace(",0,", ",lots,")
    home = build_home(tmp_path / "home", [CLEAN, semicolons, spaced, broken, after], monkeypatch)
    for line in (3, 4, 6):
        assert "Ada Lovelace" in quarantined(home, line).output, line

    forgotten = home.invoke("pii", "forget", "--customer", home.key("CUS-0000001"))
    assert forgotten.exit_code == 0, forgotten.output
    for line in (3, 4, 6):
        shown = quarantined(home, line)
        assert shown.exit_code == 1 and "was erased" in shown.output, (line, shown.output)
