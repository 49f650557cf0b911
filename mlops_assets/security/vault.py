"""The vault: direct identifiers encrypted cell by cell, revealed one customer at a time, audited.

``vault.customer_pii`` holds one row per (customer_key, column): AES-256-GCM ciphertext (nonce
prefixed) and the key version. The associated data binds each ciphertext to its table, column
and row key, so a value copied to another cell fails authentication. Quarantined lines of
sources that carry identifiers are encrypted the same way (``raw_line_encrypted``).
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence

import duckdb
import pandas as pd

from mlops_assets.security.keyring import DecryptionError, Keyring, KeyringError
from mlops_assets.warehouse import scalar

PII_TABLE = "vault.customer_pii"


class VaultError(RuntimeError):
    """A vault operation was refused (unknown customer, key still in use, keyring mismatch)."""


def associated_data(table: str, column: str, row_key: str) -> bytes:
    return f"{table}|{column}|{row_key}".encode()


def ensure_vault(con: duckdb.DuckDBPyConnection) -> None:
    for schema in ("vault", "audit"):
        con.execute(f"create schema if not exists {schema}")
    # One row per (customer_key, column_name), kept so by store_customer_pii (delete, then
    # insert, in the caller's transaction). No primary key: DuckDB holds a key's index in
    # memory, and at 10M applications (44M cells) it would not fit the memory limit.
    con.execute(
        f"create table if not exists {PII_TABLE} ("
        "customer_key varchar not null, column_name varchar not null, ciphertext blob not null, "
        "key_version integer not null, updated_at timestamp not null)"
    )
    if scalar(
        con,
        "select count(*) from duckdb_constraints() where schema_name = ? and table_name = ? "
        "and constraint_type = 'PRIMARY KEY'",
        PII_TABLE.split("."),
    ):
        # A vault made before the key was dropped: same rows, without the index.
        con.execute(f"create table {PII_TABLE}_rebuilt as from {PII_TABLE}")
        con.execute(f"drop table {PII_TABLE}")
        con.execute(f"alter table {PII_TABLE}_rebuilt rename to {PII_TABLE.split('.')[1]}")
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


def encrypt_cells(
    keyring: Keyring,
    table: str,
    row_keys: Sequence[str],
    columns: Sequence[str],
    plaintexts: Sequence[str],
) -> pd.DataFrame:
    """Cells given as three parallel sequences -> frame of row_key, column_name, ciphertext,
    key_version. One AES-GCM call per value is inherent to per-cell encryption (fresh nonce,
    own AAD); everything around it is batched."""
    aads = [
        associated_data(table, column, key) for key, column in zip(row_keys, columns, strict=True)
    ]
    blobs, version = keyring.encrypt_many(plaintexts, aads)
    return pd.DataFrame(
        {
            "row_key": row_keys,
            "column_name": columns,
            "ciphertext": blobs,
            "key_version": version,
        },
        columns=["row_key", "column_name", "ciphertext", "key_version"],
    )


def store_customer_pii(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, frame: pd.DataFrame, columns: Sequence[str]
) -> int:
    """Upsert the identifiers in ``frame`` (one row per customer_key, later rows win) into the
    vault, except for customers who were erased. Call inside the caller's transaction."""
    return write_sealed_pii(con, seal_customer_pii(keyring, frame, columns))


def seal_customer_pii(
    keyring: Keyring, frame: pd.DataFrame, columns: Sequence[str]
) -> pd.DataFrame:
    """The vault cells of ``frame``'s ``columns``, encrypted: the latest row per customer_key,
    missing values left out. Needs no connection, so it can run before the transaction."""
    latest = frame.drop_duplicates("customer_key", keep="last")
    keys: list[str] = []
    names: list[str] = []
    values: list[str] = []
    for column in columns:
        present = latest[column].notna()
        keys += latest.loc[present, "customer_key"].tolist()
        values += latest.loc[present, column].astype(str).tolist()
        names += [column] * int(present.sum())
    return encrypt_cells(keyring, PII_TABLE, keys, names, values)


def write_sealed_pii(con: duckdb.DuckDBPyConnection, sealed: pd.DataFrame) -> int:
    """Replace the vault cells in ``sealed`` (from :func:`seal_customer_pii`), except those of
    erased customers; returns the cells written. Call inside the caller's transaction."""
    if sealed.empty:
        return 0
    con.register("_sealed_pii", sealed)
    try:
        con.execute(
            "create or replace temp table _sealed_kept as select * from _sealed_pii "
            "where row_key not in (select customer_key from vault.erased_customers)"
        )
        con.execute(
            f"delete from {PII_TABLE} as p using _sealed_kept as s "
            "where p.customer_key = s.row_key and p.column_name = s.column_name"
        )
        con.execute(
            f"insert into {PII_TABLE} "
            "select row_key, column_name, ciphertext, key_version, now() from _sealed_kept"
        )
        return con.execute("select count(*) from _sealed_kept").fetchone()[0]
    finally:
        con.execute("drop table if exists temp._sealed_kept")
        con.unregister("_sealed_pii")


def _audit(
    con: duckdb.DuckDBPyConnection, action: str, customer_key: str, columns: list[str], reason: str
) -> None:
    con.execute(
        "insert into audit.pii_access values (now(), ?, ?, ?, ?, ?)",
        [getpass.getuser(), action, customer_key, columns, reason],
    )


class Revealed(dict[str, str]):
    """A customer's decrypted identifiers (column -> value), and in ``unreadable`` the cells
    that failed authentication (column -> why): a damaged cell costs that cell only."""

    def __init__(self, values: dict[str, str], unreadable: dict[str, str]) -> None:
        super().__init__(values)
        self.unreadable = unreadable


def reveal(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, customer_key: str, reason: str
) -> Revealed:
    """Decrypt one customer's identifiers and record who asked and why. No bulk path exists.

    A cell whose ciphertext fails authentication (damaged or moved) is reported in
    ``unreadable`` and the others are still revealed; when no cell decrypts, the keyring is
    the likelier culprit and :class:`DecryptionError` is raised."""
    if not reason.strip():
        raise VaultError("a reason is required to reveal personal data")
    ensure_vault(con)
    rows = con.execute(
        f"select column_name, ciphertext, key_version from {PII_TABLE} "
        "where customer_key = ? order by column_name",
        [customer_key],
    ).fetchall()
    if not rows:
        raise VaultError(f"no personal data in the vault for customer_key {customer_key}")
    values, unreadable = {}, {}
    for column, blob, version in rows:
        try:
            values[column] = keyring.decrypt(
                blob, version, associated_data(PII_TABLE, column, customer_key)
            )
        except DecryptionError as error:
            unreadable[column] = str(error)
    if not values:
        raise DecryptionError(
            f"no vault cell of customer {customer_key} decrypts with the keyring "
            f"{keyring.path}: wrong keyring, or every cell damaged"
        )
    _audit(con, "reveal", customer_key, sorted(values), reason)
    return Revealed(values, unreadable)


def reveal_quarantined_line(
    con: duckdb.DuckDBPyConnection, keyring: Keyring, source: str, path: str, line: int, reason: str
) -> str:
    """Decrypt one quarantined line of a personal-data feed (to fix the feed), audited."""
    if not reason.strip():
        raise VaultError("a reason is required to reveal personal data")
    ensure_vault(con)
    table = f"quarantine.{source}"
    row = con.execute(
        f"select raw_line_encrypted, key_version from {table} "
        "where source_file = ? and line_number = ? and raw_line_encrypted is not null",
        [path, line],
    ).fetchone()
    if row is None:
        raise VaultError(f"no encrypted quarantined line {path}:{line} in {table}")
    text = keyring.decrypt(row[0], row[1], associated_data(table, "raw_line", f"{path}:{line}"))
    # The audit row names the line in place of a customer: the line's customer is unknown.
    _audit(con, "reveal_quarantined_line", f"{path}:{line}", [f"{table}.raw_line"], reason)
    return text


def forget(con: duckdb.DuckDBPyConnection, customer_key: str, reason: str) -> int:
    """Right to erasure: delete the customer's vault entry and keep them out of it for good."""
    ensure_vault(con)
    con.execute("begin transaction")
    try:
        columns = [
            c
            for (c,) in con.execute(
                f"select column_name from {PII_TABLE} where customer_key = ? order by 1",
                [customer_key],
            ).fetchall()
        ]
        if not columns:
            raise VaultError(f"no personal data in the vault for customer_key {customer_key}")
        con.execute(f"delete from {PII_TABLE} where customer_key = ?", [customer_key])
        con.execute(
            "insert or replace into vault.erased_customers values (?, now())", [customer_key]
        )
        _audit(con, "forget", customer_key, columns, reason)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return len(columns)


# Every encrypted column in the warehouse: (table, key expression, ciphertext col, version col,
# AAD column name). Rotation re-encrypts all of them.
def encrypted_locations(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str, str]]:
    locations = [(PII_TABLE, "customer_key", "column_name", "ciphertext", "key_version")]
    quarantined = con.execute(
        "select table_schema || '.' || table_name from information_schema.columns "
        "where table_schema = 'quarantine' and column_name = 'raw_line_encrypted'"
    ).fetchall()
    locations += [
        (
            table,
            "source_file || ':' || line_number",
            "'raw_line'",
            "raw_line_encrypted",
            "key_version",
        )
        for (table,) in quarantined
    ]
    return locations


def key_usage(con: duckdb.DuckDBPyConnection) -> dict[int, int]:
    """How many encrypted values use each key version."""
    ensure_vault(con)
    usage: dict[int, int] = {}
    for table, _, _, blob, version in encrypted_locations(con):
        for v, n in con.execute(
            f"select {version}, count(*) from {table} where {blob} is not null group by 1"
        ).fetchall():
            usage[v] = usage.get(v, 0) + n
    return usage


def rotate(con: duckdb.DuckDBPyConnection, keyring: Keyring) -> tuple[int, int]:
    """Add a key version and re-encrypt every value under it, in one transaction.

    The keyring is saved (old versions kept) before the warehouse changes, so a crash at any
    point leaves every value decryptable. Returns (new version, values re-encrypted).
    """
    bind_keyring(con, keyring)
    version = keyring.add_version()
    keyring.save()
    total = 0
    con.execute("begin transaction")
    try:
        for table, key, column, blob, version_col in encrypted_locations(con):
            rows = con.execute(
                f"select rowid, {key}, {column}, {blob}, {version_col} from {table} "
                f"where {blob} is not null"
            ).fetchall()
            resealed = []
            for rowid, row_key, column_name, ciphertext, old_version in rows:
                aad = associated_data(table, column_name, row_key)
                plain = keyring.decrypt(ciphertext, old_version, aad)
                new_blob, new_version = keyring.encrypt(plain, aad)
                resealed.append((rowid, new_blob, new_version))
            if not resealed:
                continue
            frame = pd.DataFrame(resealed, columns=["row_id", "blob", "version"])
            con.register("_resealed", frame)
            con.execute(
                f"update {table} set {blob} = r.blob, {version_col} = r.version "
                f"from _resealed r where {table}.rowid = r.row_id"
            )
            con.unregister("_resealed")
            total += len(resealed)
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
            f"key version {version} still encrypts {in_use} value(s): run `mlops keys rotate` first"
        )
    keyring.remove_version(version)
    keyring.save()
