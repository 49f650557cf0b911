import duckdb
import pytest

from mlops_assets import catalogue
from mlops_assets.ingestion.commit import ensure_schema
from mlops_assets.ingestion.sources import identifier_names
from mlops_assets.security.keyring import Keyring
from mlops_assets.security.vault import associated_data

# The declared feeds, and the identifier names of all of them (what wiring hands the stages).
SOURCES = catalogue.sources()
IDENTIFIERS = identifier_names(SOURCES.values())


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Every feed's raw and quarantine tables, and the ledger."""
    for spec in SOURCES.values():
        ensure_schema(con, spec)


@pytest.fixture
def con():
    """An in-memory warehouse with the raw, quarantine and audit tables."""
    connection = duckdb.connect()
    ensure_tables(connection)
    yield connection
    connection.close()


def quarantined_lines(con, keyring: Keyring, source: str = "outcomes") -> list[tuple]:
    """(line_number, reason, line) of every quarantined line of ``source``, the line decrypted;
    asserts that no line is stored in plaintext."""
    rows = con.execute(
        "select source_file, line_number, reason, raw_line, raw_line_encrypted, key_version "
        f"from quarantine.{source} order by source_file, line_number"
    ).fetchall()
    assert all(raw is None for _, _, _, raw, _, _ in rows)
    return [
        (
            line,
            reason,
            keyring.decrypt(
                blob, version, associated_data(f"quarantine.{source}", "raw_line", f"{file}:{line}")
            ),
        )
        for file, line, reason, _, blob, version in rows
    ]
