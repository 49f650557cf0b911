"""The one place that turns untrusted text into SQL text.

Values go to DuckDB as parameters (``con.execute(sql, [value])``) wherever DuckDB accepts a
parameter. Where it does not — identifiers (column, table and schema names), and the arguments of
table functions such as ``read_csv`` inside a ``create table as`` — text is quoted here and
nowhere else. ``tests/security/test_sql_building.py`` fails when a module builds SQL from an
interpolated value that does not come through these helpers.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier: any text, double quotes doubled, NUL refused."""
    if "\x00" in name:
        raise ValueError("an SQL identifier cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'


def qualified(*parts: str) -> str:
    """A dotted, quoted name: ``qualified("raw", "customers")`` -> ``"raw"."customers"``."""
    return ".".join(ident(p) for p in parts)


def literal(text: str) -> str:
    """``text`` as an SQL string literal (single quotes doubled, NUL refused). Only where DuckDB
    takes no parameter; prefer ``?``."""
    if "\x00" in text:
        raise ValueError("an SQL string literal cannot contain a NUL character")
    return "'" + text.replace("'", "''") + "'"


def idents(names: Iterable[str]) -> str:
    """Comma-separated quoted identifiers."""
    return ", ".join(ident(n) for n in names)


def confine(con: duckdb.DuckDBPyConnection, folders: Iterable[str] = ()) -> None:
    """Switch the database's access to other files off for good: from here on its connections
    reach only the folders in ``folders`` (besides the database itself and its spill files).
    DuckDB refuses to switch external access back on while the database is open, so SQL that
    slips through cannot read the keyring or write a file elsewhere.

    The setting belongs to the database instance, which every connection of this process to the
    same file shares: confine only a connection that owns its database for the step."""
    allowed = [str(f).rstrip("/") + "/" for f in folders]
    if allowed:
        con.execute("set allowed_directories = ?", [allowed])
    con.execute("set enable_external_access = false")
