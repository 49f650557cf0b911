"""The one place that turns untrusted text into SQL text.

Values go to DuckDB as parameters (``con.execute(sql, [value])``) wherever DuckDB accepts a
parameter. Where it does not — identifiers (column, table and schema names), and the arguments of
table functions such as ``read_csv`` inside a ``create table as`` — text is quoted here and
nowhere else. ``tests/security/test_sql_building.py`` fails when a module builds SQL from an
interpolated value that does not come through these helpers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import duckdb

# What DuckDB's file readers (read_csv, read_parquet) take as glob syntax in a path.
GLOB_CHARACTERS = re.compile(r"([\[\]*?])")


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier: any text, double quotes doubled, NUL refused."""
    if "\x00" in name:
        raise ValueError("an SQL identifier cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'


def qualified(*parts: str) -> str:
    """A dotted, quoted name: ``qualified("raw", "customers")`` -> ``"raw"."customers"``."""
    return ".".join(ident(p) for p in parts)


def table(dotted: str) -> str:
    """A ``schema.table`` name, quoted: ``table("raw.customers")`` -> ``"raw"."customers"``."""
    return qualified(*dotted.split("."))


def literal(text: str) -> str:
    """``text`` as an SQL string literal (single quotes doubled, NUL refused). Only where DuckDB
    takes no parameter; prefer ``?``."""
    if "\x00" in text:
        raise ValueError("an SQL string literal cannot contain a NUL character")
    return "'" + text.replace("'", "''") + "'"


def idents(names: Iterable[str]) -> str:
    """Comma-separated quoted identifiers."""
    return ", ".join(ident(n) for n in names)


def glob_literal(path: str | Path) -> str:
    """``path`` as the pattern DuckDB's file readers take, matching that one file only: they
    expand ``[1]``, ``*`` and ``?`` anywhere in a path (``lit[12].csv`` would read ``lit1.csv``
    and ``lit2.csv``), so each such character is put in a bracket class of its own."""
    return GLOB_CHARACTERS.sub(r"[\1]", str(path))


def confine(con: duckdb.DuckDBPyConnection, folders: Iterable[str] = ()) -> None:
    """Switch the database's access to other files off for good: from here on its connections
    reach only the folders in ``folders`` (besides the database itself and its spill files).
    DuckDB refuses to switch external access back on while the database is open, so SQL that
    slips through cannot read the keyring or write a file elsewhere.

    The setting belongs to the database instance, which every connection of this process to the
    same file shares: confine only a connection that owns its database for the step.

    DuckDB checks a reader's pattern as well as the files it names, so a folder is allowed in
    its :func:`glob_literal` form too."""
    allowed = sorted({p.rstrip("/") + "/" for f in folders for p in (str(f), glob_literal(f))})
    if allowed:
        con.execute("set allowed_directories = ?", [allowed])
    con.execute("set enable_external_access = false")
