"""The vault: direct identifiers encrypted, revealed one customer at a time, audited.

``vault.customer_pii`` holds a customer's identifiers as one row, ``column_name``
:data:`IDENTIFIERS`: one JSON object (column -> value, the latest value of each column), sealed
with AES-256-GCM (nonce prefixed) under a key version. An event feed's unknown columns are a row
per record (``_extra_columns@<file>:<line>``). The associated data binds each ciphertext to its
table, row name and customer, so a ciphertext copied to another row fails authentication.
Quarantined lines are encrypted the same way (``raw_line_encrypted``).

One AES-GCM call per customer, not per value: sealing each identifier on its own (a call each,
seven for the customers feed) was most of a customers load. A vault written so (one row per
identifier, named by its column) is still revealed and rotated; a customer's rows are folded
into their record when a later file names them.

Erasure (:func:`forget`) deletes a customer's rows and the ciphertext of every quarantined line
that names them — whichever column holds their id —, keeping the line's row (``erased_at``) so
the ingestion ledger still balances.
"""

from __future__ import annotations

import contextlib
import csv
import getpass
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_assets.security.keyring import DecryptionError, Keyring, KeyringError
from mlops_assets.sql import ident, literal, qualified
from mlops_assets.warehouse import connection, scalar

# The vault table: its name in the associated data, and quoted for SQL.
PII_TABLE = "vault.customer_pii"
PII_SCHEMA, PII_NAME = PII_TABLE.split(".")
PII_TABLE_SQL = qualified(PII_SCHEMA, PII_NAME)
# The row name of a customer's identifiers sealed together (a declared column's name starts with
# a letter, so none is named so), and the prefix of an event feed's record extras.
IDENTIFIERS = "_identifiers"
EXTRA_CELL = "_extra_columns@"
# A customers feed's unknown columns, one JSON object in their record.
EXTRAS = "_extra_columns"

logger = logging.getLogger(__name__)


class VaultError(RuntimeError):
    """A vault operation was refused (unknown customer, key still in use, keyring mismatch)."""


def associated_data(table: str, column: str, row_key: str) -> bytes:
    return f"{table}|{column}|{row_key}".encode()


def ensure_vault(con: duckdb.DuckDBPyConnection) -> None:
    for schema in ("vault", "audit"):
        con.execute(f"create schema if not exists {ident(schema)}")
    # One row per (customer_key, column_name), kept so by store_customer_pii (delete, then
    # insert, in the caller's transaction). No primary key: DuckDB holds a key's index in
    # memory, and at 10M applications (millions of rows) it would not fit the memory limit.
    # Ciphertext is random bytes: no method compresses it, and DuckDB's search for one made an
    # insert of 172k cells take 0.67 s instead of 0.19 s, for the same file size.
    con.execute(
        f"create table if not exists {PII_TABLE_SQL} ("
        "customer_key varchar not null, column_name varchar not null, "
        "ciphertext blob using compression uncompressed not null, "
        "key_version integer not null, updated_at timestamp not null)"
    )
    if scalar(
        con,
        "select count(*) from duckdb_constraints() where schema_name = ? and table_name = ? "
        "and constraint_type = 'PRIMARY KEY'",
        [PII_SCHEMA, PII_NAME],
    ):
        # A vault made before the key was dropped: same rows, without the index.
        rebuilt_sql = qualified(PII_SCHEMA, PII_NAME + "_rebuilt")
        con.execute(f"create table {rebuilt_sql} as from {PII_TABLE_SQL}")
        con.execute(f"drop table {PII_TABLE_SQL}")
        con.execute(f"alter table {rebuilt_sql} rename to {ident(PII_NAME)}")
    con.execute(
        "create table if not exists vault.erased_customers ("
        "customer_key varchar primary key, erased_at timestamp not null)"
    )
    con.execute(
        "create table if not exists vault.keyring_binding ("
        "fingerprint varchar not null, bound_at timestamp not null)"
    )
    con.execute(
        "create table if not exists audit.pii_access ("
        "accessed_at timestamp not null, os_user varchar not null, action varchar not null, "
        "customer_key varchar not null, columns varchar[], reason varchar not null)"
    )
    # Erasure marks the quarantined lines whose ciphertext it deleted: the encrypted quarantine
    # tables (made by the loader) get the column here, older ones included.
    marked = {
        name
        for (name,) in con.execute(
            "select table_name from information_schema.columns "
            "where table_schema = ? and column_name = 'erased_at'",
            [QUARANTINE_SCHEMA],
        ).fetchall()
    }
    for location in quarantine_locations(con):
        if location.name not in marked:
            con.execute(f"alter table {location.table_sql} add column erased_at timestamp")


def bind_keyring(con: duckdb.DuckDBPyConnection, keyring: Keyring) -> None:
    """Refuse a keyring other than the one this warehouse's pseudonyms were made with."""
    ensure_vault(con)
    bound = con.execute("select fingerprint from vault.keyring_binding").fetchone()
    if bound is None:
        con.execute("insert into vault.keyring_binding values (?, now())", [keyring.fingerprint])
    elif bound[0] != keyring.fingerprint:
        raise KeyringError(
            f"keyring {keyring.path} (fingerprint {keyring.fingerprint}) is not the one this "
            f"warehouse was built with (fingerprint {bound[0]}): restore that keyring or set "
            "MLOPS_KEYRING to its path — nothing was written"
        )


def bound_fingerprint(warehouse: Path) -> str | None:
    """Fingerprint of the keyring the warehouse at ``warehouse`` was built with (None: no
    warehouse, or none bound yet)."""
    if not Path(warehouse).exists():
        return None
    with connection(warehouse, read_only=True) as con:
        if not scalar(
            con,
            "select count(*) from information_schema.tables "
            "where table_schema = 'vault' and table_name = 'keyring_binding'",
        ):
            return None
        row = con.execute("select fingerprint from vault.keyring_binding").fetchone()
    return row[0] if row else None


def refuse_lost_keyring(keyring_path: Path, warehouse: Path) -> None:
    """A missing keyring of a warehouse bound to one is to be restored, never replaced: a new
    keyring could neither read the vault nor make the same pseudonyms."""
    if keyring_path.exists():
        return
    bound = bound_fingerprint(warehouse)
    if bound:
        raise KeyringError(
            f"no keyring at {keyring_path}, but the warehouse {warehouse} was built with keyring "
            f"{bound}: restore that keyring file from its backup or set MLOPS_KEYRING to its "
            "path (a new keyring would not match)"
        )


def ensure_keyring(keyring_path: Path, warehouse: Path) -> str | None:
    """Create the keyring of a fresh home and return what to tell the user (None: it exists).
    A lost keyring of a warehouse bound to one is refused (:func:`refuse_lost_keyring`)."""
    if keyring_path.exists():
        return None
    refuse_lost_keyring(keyring_path, warehouse)
    Keyring.create(keyring_path)
    return (
        f"created a new keyring at {keyring_path} — back it up, apart from the "
        "warehouse: without it the vault cannot be read and new pseudonyms will not match"
    )


def _cell_table(
    row_keys: pa.Array, columns: pa.Array, blobs: list[bytes], version: int
) -> pa.Table:
    """The vault's cells as Arrow: row_key, column_name, ciphertext (binary), key_version. They
    go to DuckDB as Arrow buffers (a pandas column of bytes objects costs four times as much)."""
    return pa.table(
        {
            "row_key": row_keys,
            "column_name": columns,
            "ciphertext": pa.array(blobs, pa.binary()),
            "key_version": pa.array(np.full(len(blobs), version, np.int32)),
        }
    )


def encrypt_cells(
    keyring: Keyring,
    table: str,
    row_keys: Sequence[str],
    columns: Sequence[str],
    plaintexts: Sequence[str],
) -> pa.Table:
    """Cells given as three parallel sequences -> Arrow table of row_key, column_name,
    ciphertext (binary), key_version. One AES-GCM call per value is inherent to per-cell
    encryption (fresh nonce, own AAD); everything around it is batched."""
    prefixes = {column: f"{table}|{column}|" for column in set(columns)}
    aads = [
        (prefixes[column] + key).encode()  # associated_data(table, column, key)
        for key, column in zip(row_keys, columns, strict=True)
    ]
    blobs, version = keyring.encrypt_many(plaintexts, aads)
    return _cell_table(
        pa.array(row_keys, pa.string()), pa.array(columns, pa.string()), blobs, version
    )


def encrypt_column(
    keyring: Keyring, table: str, column: str, row_keys: pa.Array, plaintexts: Sequence[str]
) -> pa.Table:
    """:func:`encrypt_cells` of one column's values, the row keys given as Arrow strings: the
    associated data joined and the column names repeated by Arrow instead of a Python string
    built per cell. A missing row key is refused: its cell would have no associated data."""
    if row_keys.null_count:
        raise VaultError(f"{column}: {row_keys.null_count} cells without a row key")
    aads = pc.binary_join_element_wise(f"{table}|{column}|", row_keys, "")
    blobs, version = keyring.encrypt_many(plaintexts, aads.cast(pa.binary()).to_pylist())
    names = pa.repeat(pa.scalar(column, pa.string()), len(blobs))
    return _cell_table(row_keys.cast(pa.string()), names, blobs, version)


def identifiers_sql(values: dict[str, str]) -> str:
    """SQL for a row's identifiers as one JSON object text: ``values`` maps each column name to
    its SQL expression; every value as text, null where missing. Null when every value is
    missing: a customer without identifiers gets no vault row. (``json_object`` of a flat list:
    a seventh of the time of building a map without the nulls.)"""
    if not values:
        return "null::varchar"
    texts_sql = [f"cast({expression} as varchar)" for expression in values.values()]
    present_sql = ", ".join(texts_sql)
    pairs_sql = ", ".join(
        f"{literal(name)}, {text_sql}" for name, text_sql in zip(values, texts_sql, strict=True)
    )
    return (
        f"case when coalesce({present_sql}) is null then null "
        f"else cast(json_object({pairs_sql}) as varchar) end"
    )


def store_customer_pii(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, frame: pd.DataFrame, columns: Sequence[str]
) -> int:
    """Upsert the identifiers ``columns`` of ``frame`` (by ``customer_key``; the latest row of a
    customer wins, column by column over what the vault holds) into the vault, except for
    customers who were erased; returns the vault rows written. Call inside the caller's
    transaction."""
    con.register("_pii_frame", frame)
    try:
        table = con.sql(
            "select cast(customer_key as varchar) as customer_key, "
            f"{identifiers_sql({c: ident(c) for c in columns})} as identifiers from _pii_frame"
        ).to_arrow_table()
    finally:
        con.unregister("_pii_frame")
    sealed = seal_identifiers(keyring, table["customer_key"], table["identifiers"])
    return write_sealed_pii(con, keyring, sealed)


def _flat(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _overlay(older: dict[str, str], newer: dict[str, str | None]) -> dict[str, str]:
    """``newer``'s present values over ``older``'s; the extra columns' object (``_extra_columns``,
    JSON) key by key, so a later file without an extra column keeps its earlier value. An
    extras text that is not a JSON object (no writer makes one) is taken whole, newer first."""
    merged = older | {k: v for k, v in newer.items() if v is not None and k != EXTRAS}
    if newer.get(EXTRAS) is None:
        return merged
    earlier, later = _extras(older.get(EXTRAS)), _extras(newer[EXTRAS])
    if earlier is None or later is None:
        merged[EXTRAS] = newer[EXTRAS]
        return merged
    extras = earlier | {k: v for k, v in later.items() if v is not None}
    if extras:
        merged[EXTRAS] = _record_text(extras)
    return merged


def _extras(text: str | None) -> dict | None:
    """The extra columns' object of ``text`` ({} for none), None if it is not one."""
    if text is None:
        return {}
    try:
        extras = json.loads(text)
    except ValueError:
        return None
    return extras if isinstance(extras, dict) else None


def _record_text(values: dict[str, str]) -> str:
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def seal_identifiers(
    keyring: Keyring, keys: pa.Array | pa.ChunkedArray, records: pa.Array | pa.ChunkedArray
) -> pa.Table:
    """The vault rows of customers ``keys`` whose identifiers are ``records`` (JSON object texts
    from :func:`identifiers_sql`, in file order, null: no value): one per customer, each column's
    latest value in the file (the few customers on several lines are merged in Python), one
    AES-GCM call each. Needs no connection, so it runs before the transaction."""
    keys, records = _flat(keys), _flat(records)
    codes = keys.dictionary_encode(null_encoding="encode").indices.to_numpy()
    # Each customer's last line (first from the end) carries their record.
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    last = np.zeros(len(codes), bool)
    last[len(codes) - 1 - first_from_end] = True
    texts = records.to_pylist()
    repeated = np.flatnonzero(np.bincount(codes)[codes] > 1)
    merged: dict[int, dict[str, str]] = {}
    for i in repeated.tolist():  # file order: later lines over earlier ones
        if texts[i] is not None:
            merged[codes[i]] = _overlay(merged.get(codes[i], {}), json.loads(texts[i]))
    kept = last & records.is_valid().to_numpy(zero_copy_only=False)
    for i in repeated[last[repeated]].tolist():
        texts[i] = _record_text(merged[codes[i]]) if merged.get(codes[i]) else None
        kept[i] = texts[i] is not None
    chosen = np.flatnonzero(kept)
    return encrypt_column(
        keyring, PII_TABLE, IDENTIFIERS, keys.take(chosen), [texts[i] for i in chosen.tolist()]
    )


def _row_values(
    keyring: Keyring, customer_key: str, column: str, blob: bytes, version: int
) -> dict[str, str]:
    """The identifiers a vault row holds (column -> value): a record's present values, or a
    cell's one value. Raises :class:`DecryptionError` for a damaged row."""
    text = keyring.decrypt(blob, version, associated_data(PII_TABLE, column, customer_key))
    if column != IDENTIFIERS:
        return {column: text}
    return {name: value for name, value in json.loads(text).items() if value is not None}


# A customer's rows holding identifiers: all but an event feed's record extras.
IDENTIFIER_ROWS_SQL = f"not starts_with(p.column_name, {literal(EXTRA_CELL)})"


def _fold_earlier(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, kept_sql: str
) -> tuple[list[int], pa.Table | None]:
    """For the customers of ``kept_sql`` (sealed rows) who already have identifiers in the vault:
    the rowids of the earlier rows that fail authentication, and the new records with the
    earlier values folded in (each column's latest value wins; cells of a vault written one
    row per identifier first, then records, oldest first). A row that fails authentication
    (damaged, or sealed under another keyring's key of the same version) is kept as it is,
    beside the new record: nothing is deleted that could not be read, and reveal names it. A
    row under a key version the keyring lacks stops the load (:class:`KeyringError`)."""
    rows = con.execute(
        f"""
        select p.rowid, p.customer_key, p.column_name, p.ciphertext, p.key_version,
               s.ciphertext, s.key_version
        from {PII_TABLE_SQL} as p
        join {kept_sql} as s on p.customer_key = s.row_key and s.column_name = ?
        where {IDENTIFIER_ROWS_SQL}
        order by p.customer_key, p.column_name = ?, p.updated_at, p.rowid
        """,
        [IDENTIFIERS, IDENTIFIERS],
    ).fetchall()
    earlier: dict[str, dict[str, str]] = {}
    new: dict[str, tuple[bytes, int]] = {}
    damaged = []
    for rowid, key, column, blob, version, new_blob, new_version in rows:
        try:
            earlier[key] = _overlay(
                earlier.get(key, {}), _row_values(keyring, key, column, blob, version)
            )
        except DecryptionError:
            damaged.append(rowid)
        new[key] = (new_blob, new_version)
    if damaged:
        logger.warning(
            "%d earlier vault rows of this file's customers fail authentication (damaged, or "
            "sealed with another keyring): kept as they are beside the new identifiers; "
            "`mlops pii reveal` names them",
            len(damaged),
        )
    if not earlier:
        return damaged, None
    keys = list(earlier)
    texts = [
        _record_text(_overlay(earlier[key], _row_values(keyring, key, IDENTIFIERS, *new[key])))
        for key in keys
    ]
    return damaged, encrypt_column(
        keyring, PII_TABLE, IDENTIFIERS, pa.array(keys, pa.string()), texts
    )


class VaultKeys:
    """The customers that have vault rows, as DuckDB ``hash()`` values, for one load: read from
    the vault once (at the load's first rows), then kept up to date with the rows the load
    writes. A file none of whose customers is among them has no earlier rows to replace, and
    skips the delete that would scan the whole vault (per file, so with the square of the
    history over a load). A hash shared by chance costs only that scan.

    Valid while the load is the only writer of new rows (its files are written one at a time;
    erasure and rotation add none): a key it does not know would get a second row."""

    def __init__(self) -> None:
        self._known: np.ndarray | None = None  # sorted, unique
        self._added: set[int] = set()

    def may_hold(self, con: duckdb.DuckDBPyConnection, hashes: np.ndarray) -> bool:
        """Whether a customer of ``hashes`` (of ``hash(customer_key)``) may have a row."""
        if self._known is None:
            self._known = _hashes(con, f"select distinct hash(customer_key) from {PII_TABLE_SQL}")
        found = np.searchsorted(self._known, hashes)
        in_known = found < len(self._known)
        if np.any(self._known[found[in_known]] == hashes[in_known]):
            return True
        return not self._added.isdisjoint(hashes.tolist())

    def add(self, hashes: np.ndarray) -> None:
        self._added.update(hashes.tolist())


def _hashes(con: duckdb.DuckDBPyConnection, sql: str) -> np.ndarray:
    """The first column of ``sql`` (UBIGINT), sorted and unique."""
    return np.unique(np.asarray(con.execute(sql).fetchnumpy().popitem()[1], dtype=np.uint64))


def write_sealed_pii(
    con: duckdb.DuckDBPyConnection,
    keyring: Keyring,
    sealed: pa.Table,
    known: VaultKeys | None = None,
) -> int:
    """Write the vault rows in ``sealed`` (from :func:`seal_identifiers` or
    :func:`encrypt_cells`), except those of erased customers; returns the rows written. Call
    inside the caller's transaction. A customer's earlier identifiers are folded into their new
    record, each column's latest value winning (``keyring`` decrypts them; see
    :func:`_fold_earlier`); any other row replaces the one of the same customer and name.
    ``sealed`` holds at most one identifiers row per customer (as :func:`seal_identifiers`
    makes them). ``known``: the load's :class:`VaultKeys` (without: always look for earlier
    rows)."""
    if not sealed.num_rows:
        return 0
    con.register("_sealed_pii", sealed)
    # The rows are written straight from Arrow unless someone was erased (a temporary table
    # of the rows kept costs more than the insert of a demo file).
    erased = scalar(con, "select count(*) from vault.erased_customers")
    kept_sql = "_sealed_kept" if erased else "_sealed_pii"
    new_sql = kept_sql
    try:
        if erased:
            con.execute(
                "create or replace temp table _sealed_kept as select * from _sealed_pii "
                "where row_key not in (select customer_key from vault.erased_customers)"
            )
        hashes = None
        if known is not None:
            hashes = _hashes(con, f"select distinct hash(row_key) from {kept_sql}")
        if known is None or known.may_hold(con, hashes):
            damaged, folded = _fold_earlier(con, keyring, kept_sql)
            # Two statements, each a join on its full key: the customers' earlier identifiers
            # (all but the unreadable), then the rows of the same name (an event record's).
            con.execute(
                f"""
                delete from {PII_TABLE_SQL} as p
                using (select row_key from {kept_sql} where column_name = ?) as s
                where p.customer_key = s.row_key and {IDENTIFIER_ROWS_SQL}
                    and p.rowid not in (select unnest(?::bigint[]))
                """,
                [IDENTIFIERS, damaged],
            )
            con.execute(
                f"""
                delete from {PII_TABLE_SQL} as p
                using (select row_key, column_name from {kept_sql} where column_name <> ?) as s
                where p.customer_key = s.row_key and p.column_name = s.column_name
                """,
                [IDENTIFIERS],
            )
            if folded is not None:
                con.register("_folded_pii", folded)
                new_sql = (
                    f"(select * from {kept_sql} where column_name <> ? or row_key not in "
                    "(select row_key from _folded_pii) union all by name from _folded_pii)"
                )
        params = [IDENTIFIERS] if new_sql != kept_sql else []
        con.execute(
            f"insert into {PII_TABLE_SQL} "
            f"select row_key, column_name, ciphertext, key_version, now() from {new_sql}",
            params,
        )
        if known is not None:
            known.add(hashes)
        return scalar(con, "select count(*) from _sealed_kept") if erased else sealed.num_rows
    finally:
        # After a failed statement the transaction refuses even these: the caller's rollback
        # drops what was registered, and the first error is the one raised.
        with contextlib.suppress(duckdb.TransactionException):
            if erased:
                con.execute("drop table if exists temp._sealed_kept")
            if new_sql != kept_sql:
                con.unregister("_folded_pii")
            con.unregister("_sealed_pii")


def _names_in(
    keyring: Keyring, customer_key: str, column: str, blob: bytes, version: int
) -> list[str]:
    """The columns a vault row holds; its own name if it cannot be read."""
    if column != IDENTIFIERS:
        return [column]
    try:
        return list(_row_values(keyring, customer_key, column, blob, version))
    except (DecryptionError, KeyringError):
        return [column]


def _audit(
    con: duckdb.DuckDBPyConnection, action: str, customer_key: str, columns: list[str], reason: str
) -> None:
    con.execute(
        "insert into audit.pii_access values (now(), ?, ?, ?, ?, ?)",
        [getpass.getuser(), action, customer_key, columns, reason],
    )


class Revealed(dict[str, str]):
    """A customer's decrypted identifiers (column -> value), and in ``unreadable`` the vault
    rows that failed authentication (row name -> why): a damaged row costs that row only."""

    def __init__(self, values: dict[str, str], unreadable: dict[str, str]) -> None:
        super().__init__(values)
        self.unreadable = unreadable


def reveal(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, customer_key: str, reason: str
) -> Revealed:
    """Decrypt one customer's identifiers and record who asked and why. No bulk path exists.

    A row whose ciphertext fails authentication (damaged or moved) is reported in
    ``unreadable`` under its name (:data:`IDENTIFIERS` for the customer's identifiers) and the
    others are still revealed; when no row decrypts, the keyring is the likelier culprit and
    :class:`DecryptionError` is raised."""
    if not reason.strip():
        raise VaultError("a reason is required to reveal personal data")
    ensure_vault(con)
    # As the fold reads them: cells of a vault written one row per identifier first, then
    # records, oldest first (the newest value wins).
    rows = con.execute(
        f"select column_name, ciphertext, key_version from {PII_TABLE_SQL} "
        "where customer_key = ? order by column_name = ?, updated_at, rowid",
        [customer_key, IDENTIFIERS],
    ).fetchall()
    if not rows:
        raise VaultError(f"no personal data in the vault for customer_key {customer_key}")
    values: dict[str, str] = {}
    unreadable = {}
    for column, blob, version in rows:
        try:
            values = _overlay(values, _row_values(keyring, customer_key, column, blob, version))
        except DecryptionError as error:
            unreadable[column] = str(error)
    if len(unreadable) == len(rows):
        raise DecryptionError(
            f"no vault row of customer {customer_key} decrypts with the keyring "
            f"{keyring.path}: wrong keyring, or every row damaged"
        )
    _audit(con, "reveal", customer_key, sorted(values), reason)
    return Revealed(values, unreadable)


@dataclass(frozen=True)
class EncryptedColumn:
    """A column of ciphertext, and SQL for the parts of each value's associated data that vary
    by row (the row key and the column name)."""

    schema: str
    name: str
    blob: str
    row_key_sql: str
    column_sql: str

    @property
    def table(self) -> str:
        """The table's name as the associated data spells it."""
        return f"{self.schema}.{self.name}"

    @property
    def table_sql(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def blob_sql(self) -> str:
        return ident(self.blob)


QUARANTINE_SCHEMA = "quarantine"
VAULT_CELLS = EncryptedColumn(PII_SCHEMA, PII_NAME, "ciphertext", "customer_key", "column_name")


def quarantine_locations(con: duckdb.DuckDBPyConnection) -> list[EncryptedColumn]:
    """The quarantine tables of the loaded feeds (every feed's lines are stored encrypted)."""
    names = con.execute(
        "select table_name from information_schema.columns "
        "where table_schema = ? and column_name = 'raw_line_encrypted' order by 1",
        [QUARANTINE_SCHEMA],
    ).fetchall()
    return [
        EncryptedColumn(
            QUARANTINE_SCHEMA,
            name,
            "raw_line_encrypted",
            "source_file || ':' || line_number",
            "'raw_line'",
        )
        for (name,) in names
    ]


def encrypted_locations(con: duckdb.DuckDBPyConnection) -> list[EncryptedColumn]:
    """Every encrypted column in the warehouse: rotation re-encrypts all of them."""
    return [VAULT_CELLS, *quarantine_locations(con)]


def _quarantine_location(con: duckdb.DuckDBPyConnection, source: str) -> EncryptedColumn:
    locations = {location.name: location for location in quarantine_locations(con)}
    if source not in locations:
        raise VaultError(
            f"{source!r} has no encrypted quarantined lines: the loaded feeds are "
            f"{', '.join(locations) or 'none yet'}"
        )
    return locations[source]


def reveal_quarantined_line(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, source: str, path: str, line: int, reason: str
) -> str:
    """Decrypt one quarantined line of a personal-data feed (to fix the feed), audited.
    A line erased with its customer (:func:`forget`) is refused, saying so."""
    if not reason.strip():
        raise VaultError("a reason is required to reveal personal data")
    ensure_vault(con)
    location = _quarantine_location(con, source)
    row = con.execute(
        f"select {location.blob_sql}, key_version, erased_at from {location.table_sql} "
        "where source_file = ? and line_number = ?",
        [path, line],
    ).fetchone()
    if row is not None and row[2] is not None:
        raise VaultError(
            f"quarantined line {path}:{line} was erased on {row[2]:%Y-%m-%d %H:%M} with its "
            "customer's personal data (`mlops pii forget`): nothing left to show"
        )
    if row is None or row[0] is None:
        raise VaultError(f"no encrypted quarantined line {path}:{line} in {location.table}")
    key = f"{path}:{line}"
    text = keyring.decrypt(row[0], row[1], associated_data(location.table, "raw_line", key))
    # The audit row names the line in place of a customer: the line's customer is unknown.
    _audit(con, "reveal_quarantined_line", key, [f"{location.table}.raw_line"], reason)
    return text


def _records_naming(keyring: Keyring, lines: list[str]) -> list[tuple[int, int, set[str]]]:
    """Consecutive quarantined lines of one file -> their records as (first, end) line indexes
    with the pseudonyms of every field: a quoted field spanning lines (``"First\nSecond"``)
    makes one record of them, so a continuation line without the id is still its customer's.
    From a line that does not parse as CSV, the rest of ``lines`` is one record of its
    comma-separated fields, erased together (erasing too much beats missing a line)."""
    records: list[tuple[int, list[str]]] = []  # (first line, fields)
    reader = csv.reader(lines)
    start = 0
    try:
        for fields in reader:
            records.append((start, fields))
            start = reader.line_num
    except csv.Error:
        records.append((start, [f for line in lines[start:] for f in line.split(",")]))
    ends = [first for first, _ in records[1:]] + [len(lines)]
    return [
        (first, end, {keyring.pseudonym(value) for value in _values(fields, lines[first:end])})
        for (first, fields), end in zip(records, ends, strict=True)
    ]


# A quarantined line did not parse the way the loader reads CSV: besides its CSV fields, every
# token between separators DuckDB or a careless export may use, with quotes and blanks stripped,
# may be the id (`;` or tab as separator, ` "CUS-1"` quoted after a space, a stray quote that
# makes Python's reader fold the lines after it into one field).
_LOOSE_SEPARATORS = re.compile(r"[,;\t|]")
_LOOSE_STRIP = " \t\r\"'"


def _values(fields: list[str], lines: list[str]) -> set[str]:
    """Every value that may be a customer id in a record: its CSV fields and its lines' loose
    tokens."""
    tokens = (t.strip(_LOOSE_STRIP) for line in lines for t in _LOOSE_SEPARATORS.split(line))
    return {v for v in (*fields, *tokens) if v.strip()}


class Erasure(NamedTuple):
    vault_rows: int  # vault rows deleted (the identifiers, an event feed's record extras)
    lines: int  # quarantined lines whose ciphertext was deleted
    unreadable_lines: int  # quarantined lines that failed authentication: not checked
    already_erased: bool = False  # erased before, nothing of theirs left


def _quarantined_lines_naming(
    con: duckdb.DuckDBPyConnection,
    keyring: Keyring,
    customer_keys: set[str],
    sources: Sequence[str] | None = None,
) -> tuple[dict[EncryptedColumn, list[tuple[int, str]]], int]:
    """The encrypted quarantined lines (of ``sources``, default all) of the records that name
    one of ``customer_keys``, per table as (rowid, ``file:line``), and how many lines did not
    decrypt. The loader keeps one row per physical line: a file's consecutive quarantined lines
    are parsed together, so every line of a record spanning several is found (a line that did
    not decrypt ends the run). One AES-GCM call per line: the quarantine is small."""
    found: dict[EncryptedColumn, list[tuple[int, str]]] = {}
    unreadable = 0
    for location in quarantine_locations(con):
        if sources is not None and location.name not in sources:
            continue
        rows = con.execute(
            f"select rowid, source_file, line_number, {location.row_key_sql}, "
            f"{location.blob_sql}, key_version from {location.table_sql} "
            f"where {location.blob_sql} is not null order by source_file, line_number"
        ).fetchall()
        runs: list[list[tuple[int, str, str]]] = []  # (rowid, file:line, text), consecutive
        previous = None
        for rowid, source_file, line_number, row_key, blob, version in rows:
            aad = associated_data(location.table, "raw_line", row_key)
            try:
                text = keyring.decrypt(blob, version, aad)
            except DecryptionError:
                unreadable += 1
                previous = None
                continue
            if line_number is None or previous != (source_file, line_number - 1):
                runs.append([])
            runs[-1].append((rowid, row_key, text))
            previous = (source_file, line_number)
        for run in runs:
            for first, end, keys in _records_naming(keyring, [text for *_, text in run]):
                if customer_keys & keys:
                    found.setdefault(location, []).extend(
                        (rowid, row_key) for rowid, row_key, _ in run[first:end]
                    )
    return found, unreadable


def _erase_lines(
    con: duckdb.DuckDBPyConnection, lines: dict[EncryptedColumn, list[tuple[int, str]]]
) -> list[str]:
    """Delete the ciphertext of ``lines`` and mark them erased; returns ``table:file:line``
    of each. Call inside the caller's transaction."""
    for location, rows in lines.items():
        con.execute(
            f"update {location.table_sql} set {location.blob_sql} = null, key_version = null, "
            "erased_at = now() where rowid in (select unnest(?))",
            [[rowid for rowid, _ in rows]],
        )
    return [f"{location.table}:{key}" for location, rows in lines.items() for _, key in rows]


def shred_erased_lines(con: duckdb.DuckDBPyConnection, keyring: Keyring, source: str) -> int:
    """Erase the quarantined lines of ``source`` that name a customer erased before (a later
    file that names them again): erasure stays complete. Free while nobody was erased.
    Returns the lines erased."""
    ensure_vault(con)
    erased = {
        k for (k,) in con.execute("select customer_key from vault.erased_customers").fetchall()
    }
    if not erased:
        return 0
    con.execute("begin transaction")
    try:
        lines, _ = _quarantined_lines_naming(con, keyring, erased, [source])
        count = len(_erase_lines(con, lines))
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return count


def forget(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, customer_key: str, reason: str
) -> Erasure:
    """Right to erasure: delete the customer's vault entry and the ciphertext of every
    quarantined line that names them, and keep them out for good (later loads: the vault
    skips them, :func:`shred_erased_lines` erases their new quarantined lines).

    An erased line keeps its row (file, line number, reason, ``erased_at``), so the ledger's
    counts still balance."""
    if not reason.strip():
        raise VaultError("a reason is required to erase personal data")
    bind_keyring(con, keyring)
    con.execute("begin transaction")
    try:
        rows = [row[1:] for row in _customer_rows(con, customer_key)]
        # The audit names what was erased: a record's columns (its name, if it cannot be read).
        columns = sorted(
            {
                name
                for column, blob, version in rows
                for name in _names_in(keyring, customer_key, column, blob, version)
            }
        )
        lines, unreadable = _quarantined_lines_naming(con, keyring, {customer_key})
        if not rows and not lines:
            if scalar(
                con,
                "select count(*) from vault.erased_customers where customer_key = ?",
                [customer_key],
            ):
                con.execute("rollback")
                return Erasure(0, 0, unreadable, already_erased=True)
            raise VaultError(
                f"no personal data in the vault or the quarantine for customer_key {customer_key}"
            )
        con.execute(f"delete from {PII_TABLE_SQL} where customer_key = ?", [customer_key])
        erased_lines = _erase_lines(con, lines)
        con.execute(
            "insert or replace into vault.erased_customers values (?, now())", [customer_key]
        )
        _audit(con, "forget", customer_key, [*columns, *erased_lines], reason)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return Erasure(len(rows), len(erased_lines), unreadable)


def _customer_rows(con: duckdb.DuckDBPyConnection, customer_key: str) -> list[tuple]:
    """The customer's vault rows as (rowid, column_name, ciphertext, key_version)."""
    return con.execute(
        f"select rowid, column_name, ciphertext, key_version from {PII_TABLE_SQL} "
        "where customer_key = ? order by column_name, rowid",
        [customer_key],
    ).fetchall()


def drop_unreadable(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, customer_key: str, reason: str
) -> list[str]:
    """Delete the customer's vault rows that fail authentication with ``keyring`` (damaged for
    good: a load keeps them beside the new record, and rotation refuses to run past them);
    audited; returns their names. A row under a key version the keyring lacks is refused
    (:class:`KeyringError`: restore the keyring), never deleted."""
    if not reason.strip():
        raise VaultError("a reason is required to drop personal data")
    bind_keyring(con, keyring)
    con.execute("begin transaction")
    try:
        failing = []
        for rowid, column, blob, version in _customer_rows(con, customer_key):
            try:
                _row_values(keyring, customer_key, column, blob, version)
            except DecryptionError:
                failing.append((rowid, column))
        if failing:
            con.execute(
                f"delete from {PII_TABLE_SQL} where rowid in (select unnest(?::bigint[]))",
                [[rowid for rowid, _ in failing]],
            )
            _audit(con, "drop_unreadable", customer_key, [c for _, c in failing], reason)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return [column for _, column in failing]


def key_usage(con: duckdb.DuckDBPyConnection) -> dict[int, int]:
    """How many ciphertexts (vault rows, quarantined lines) use each key version."""
    ensure_vault(con)
    usage: dict[int, int] = {}
    for location in encrypted_locations(con):
        for v, n in con.execute(
            f"select key_version, count(*) from {location.table_sql} "
            f"where {location.blob_sql} is not null group by 1"
        ).fetchall():
            usage[v] = usage.get(v, 0) + n
    return usage


def rotate(con: duckdb.DuckDBPyConnection, keyring: Keyring) -> tuple[int, int]:
    """Add a key version and re-encrypt every value under it, in one transaction.

    The keyring is saved (old versions kept) before the warehouse changes, so a crash at any
    point leaves every value decryptable. Returns (new version, ciphertexts re-encrypted).
    """
    bind_keyring(con, keyring)
    version = keyring.add_version()
    keyring.save()
    total = 0
    unreadable: list[str] = []  # table, row key, name of each ciphertext that fails
    con.execute("begin transaction")
    try:
        for location in encrypted_locations(con):
            rows = con.execute(
                f"select rowid, {location.row_key_sql}, {location.column_sql}, "
                f"{location.blob_sql}, key_version from {location.table_sql} "
                f"where {location.blob_sql} is not null"
            ).fetchall()
            resealed = []
            for rowid, row_key, column_name, ciphertext, old_version in rows:
                aad = associated_data(location.table, column_name, row_key)
                try:
                    plain = keyring.decrypt(ciphertext, old_version, aad)
                except DecryptionError:
                    unreadable.append(f"{location.table} {row_key} {column_name}")
                    continue
                new_blob, new_version = keyring.encrypt(plain, aad)
                resealed.append((rowid, new_blob, new_version))
            if not resealed:
                continue
            frame = pd.DataFrame(resealed, columns=["row_id", "blob", "version"])
            con.register("_resealed", frame)
            con.execute(
                f"update {location.table_sql} set {location.blob_sql} = r.blob, "
                "key_version = r.version from _resealed r "
                f"where {location.table_sql}.rowid = r.row_id"
            )
            con.unregister("_resealed")
            total += len(resealed)
        if unreadable:
            raise DecryptionError(
                f"{len(unreadable)} ciphertext(s) fail authentication, nothing was rotated: "
                f"{'; '.join(unreadable[:5])}{' …' if len(unreadable) > 5 else ''}. Restore the "
                "keyring that sealed them; a vault row damaged for good is removed with "
                "`mlops pii drop-unreadable --customer KEY`"
            )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return version, total


def retire(con: duckdb.DuckDBPyConnection, keyring: Keyring, version: int) -> None:
    """Remove a key version from the keyring — only when no value is encrypted with it."""
    in_use = key_usage(con).get(version, 0)
    if in_use:
        raise VaultError(
            f"key version {version} still encrypts {in_use} ciphertext(s): run "
            "`mlops keys rotate` first"
        )
    keyring.remove_version(version)
    keyring.save()
