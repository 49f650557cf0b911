"""Sealing a staged landing file's personal data before its transaction: pseudonyms for the
id column, identifiers and unknown columns encrypted for the vault, and every quarantined line
encrypted (unparsed, a line may hold anything, whatever the feed).

The work runs on the staging tables (:mod:`mlops_assets.ingestion.staging`) outside the
file's commit turn — it is the slow Python part of a customers file — and
:func:`write_sealed` writes the result inside the file's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from mlops_assets.ingestion.sources import SourceSpec
from mlops_assets.ingestion.staging import Staged, extra_json_sql
from mlops_assets.security.keyring import Keyring
from mlops_assets.security.vault import (
    EXTRA_CELL,
    PII_TABLE,
    VaultKeys,
    encrypt_cells,
    identifiers_sql,
    seal_identifiers,
    write_sealed_pii,
)
from mlops_assets.sql import ident, qualified

# The columns the loader writes to a quarantine table, named in its insert: erasure adds
# ``erased_at`` (security/vault.py) to the tables of feeds with personal data.
QUARANTINE_COLUMNS_SQL = (
    "source_file, line_number, reason, raw_line, raw_line_encrypted, key_version, quarantined_at"
)


@dataclass
class Sealed:
    """A file's vault rows (feeds with personal data) and quarantined lines, encrypted, and its
    records' lineage: ``records`` is the staged one (one row per record of ``_records``, in
    order: ``_line_number``, ``_good``) with ``customer_key`` for a pseudonymised feed."""

    pii: pa.Table | None
    quarantine: pa.Table
    records: pa.Table
    # What sealed them: folds a customer's earlier identifiers into theirs (its keys are kept
    # out of repr, as Keyring's own repr does).
    keyring: Keyring = field(repr=False)


def record_cell(rel: str, line: int | str) -> str:
    """The vault column of an event feed's record extras: ``_extra_columns@<file>:<line>``."""
    return f"{EXTRA_CELL}{rel}:{line}"


def seal(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    spec: SourceSpec,
    keyring: Keyring,
    extras: dict[str, str],
    staged: Staged,
) -> Sealed:
    """Quarantined lines encrypted (of every feed: an unparsed line may hold anything); for a
    feed with personal data also pseudonyms (``customer_key`` of ``records``) and identifiers
    and extra columns encrypted.

    A feed with identifiers (one row per customer) seals a customer's identifiers and extras
    as one vault row, the latest value of each column winning; an event feed keeps each
    record's extras as a row of its customer named by the record's line (:func:`record_cell`)."""
    pii = None
    records = staged.records
    if spec.pseudonymise:
        # A feed with identifiers seals each customer's as one record (their extras with
        # them); an event feed, each record's extras as a row of its own.
        if spec.identifiers:
            values = {c: ident(c) for c in spec.identifiers}
            if extras:  # no object of nulls: a line without any value has no record
                present_sql = ", ".join(ident(name) for name in extras.values())
                values["_extra_columns"] = (
                    f"case when coalesce({present_sql}) is null then null "
                    f"else {extra_json_sql(extras)} end"
                )
            sealed_sql = identifiers_sql(values)
        else:
            sealed_sql = f"cast({extra_json_sql(extras)} as varchar)"
        con.register("_staged_records", records)
        try:
            table = con.sql(
                f"select {ident(spec.pseudonymise)}, {sealed_sql} "
                "from _records positional join _staged_records where _good"
            ).to_arrow_table()
        finally:
            con.unregister("_staged_records")
        # One HMAC per id: pseudonyms are per value by nature (hashlib does the work in C).
        keys = keyring.pseudonyms(table.column(0).to_pylist())
        good = records["_good"].to_numpy(zero_copy_only=False)
        # Each record's key, null for the records not loaded.
        taken = pa.array(np.cumsum(good) - 1, pa.int64(), mask=~good)
        key_array = pa.array(keys, pa.string())
        records = records.append_column("customer_key", key_array.take(taken))
        if spec.identifiers:
            pii = seal_identifiers(keyring, key_array, table.column(1))
        elif extras:
            lines = records["_line_number"].filter(records["_good"]).to_pylist()
            pii = encrypt_cells(
                keyring,
                PII_TABLE,
                keys,
                [record_cell(rel, line) for line in lines],
                table.column(1).to_pylist(),
            )
    lines = staged.quarantine
    cells = encrypt_cells(
        keyring,
        f"quarantine.{spec.name}",
        [f"{rel}:{n}" for n, _, _ in lines],
        ["raw_line"] * len(lines),
        [raw for _, _, raw in lines],
    )
    quarantine = pa.table(
        {
            "line_number": pa.array([n for n, _, _ in lines], pa.int64()),
            "reason": pa.array([reason for _, reason, _ in lines], pa.string()),
            "ciphertext": cells["ciphertext"],
            "key_version": cells["key_version"],
        }
    )
    return Sealed(pii, quarantine, records, keyring)


def write_sealed(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    spec: SourceSpec,
    sealed: Sealed,
    *,
    replacing: bool = False,
    vault_keys: VaultKeys | None = None,
) -> None:
    """Inside the file's transaction, after its earlier rows are deleted: its quarantined lines
    (ciphertext only) and vault rows. ``replacing``: the earlier version's record extras go
    first (their lines may have moved). ``vault_keys``: the load's, if any
    (:class:`~mlops_assets.security.vault.VaultKeys`)."""
    if replacing and spec.pseudonymise and not spec.identifiers:
        con.execute(
            f"delete from {PII_TABLE} where starts_with(column_name, ?)", [record_cell(rel, "")]
        )
    if sealed.quarantine.num_rows:
        con.register("_sealed_lines", sealed.quarantine)
        try:
            con.execute(
                f"""
                insert into {qualified("quarantine", spec.name)} ({QUARANTINE_COLUMNS_SQL})
                select ?, line_number, reason, null, ciphertext, key_version, now()
                from _sealed_lines order by line_number
                """,
                [rel],
            )
        finally:
            con.unregister("_sealed_lines")
    if sealed.pii is not None:
        write_sealed_pii(con, sealed.keyring, sealed.pii, vault_keys)
