"""The ledger ``audit.ingested_files``: which content of each landing file is loaded, and how
its data lines were accounted for (``rows_loaded + rows_quarantined = data_lines``).

A file whose sha256 is recorded is not loaded again; a file whose content changed replaces its
earlier rows. The ledger row is written in the file's transaction (:mod:`.commit`), so it names
exactly what raw and quarantine hold; :func:`unbalanced_ledger_rows` checks that they do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import duckdb

from mlops_assets.ingestion.sources import SourceSpec
from mlops_assets.sql import qualified

LEDGER_TABLE = "audit.ingested_files"

Status = Literal["loaded", "replaced", "unchanged", "failed"]


@dataclass(frozen=True)
class FileResult:
    path: str  # relative to the landing directory, e.g. applications/2025-03-02.csv
    source: str
    status: Status
    partition_key: str | None = None
    data_lines: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    extra_columns: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class SourceResult:
    source: str
    files: list[FileResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def total(self, attribute: str) -> int:
        return sum(getattr(f, attribute) for f in self.files if f.status != "unchanged")


def ensure_ledger(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ledger if it does not exist (idempotent)."""
    con.execute("create schema if not exists audit")
    con.execute(
        f"create table if not exists {LEDGER_TABLE} ("
        "path varchar primary key, source varchar not null, sha256 varchar not null, "
        "data_lines bigint not null, rows_loaded bigint not null, "
        "rows_quarantined bigint not null, "
        "extra_columns varchar[], partition_key varchar, loaded_at timestamp not null)"
    )


def loaded_sha256(con: duckdb.DuckDBPyConnection, rel: str) -> str | None:
    """The sha256 of the content of landing file ``rel`` the ledger says is loaded, if any."""
    row = con.execute(f"select sha256 from {LEDGER_TABLE} where path = ?", [rel]).fetchone()
    return row[0] if row else None


def record_file(con: duckdb.DuckDBPyConnection, result: FileResult, sha256: str) -> None:
    """Inside the file's transaction: the ledger row of a loaded (or replaced) file. A file
    loaded for the first time has no row to replace (a plain insert costs less)."""
    verb = "insert" if result.status == "loaded" else "insert or replace"
    con.execute(
        f"{verb} into {LEDGER_TABLE} values (?, ?, ?, ?, ?, ?, ?, ?, now())",
        [
            result.path,
            result.source,
            sha256,
            result.data_lines,
            result.rows_loaded,
            result.rows_quarantined,
            list(result.extra_columns),
            result.partition_key,
        ],
    )


def unbalanced_ledger_rows(con: duckdb.DuckDBPyConnection, spec: SourceSpec) -> list[tuple]:
    """Ledger rows where loaded + quarantined differs from the file's data lines, or from the
    rows actually present in raw/quarantine for that file. Empty when the books balance."""
    return con.execute(
        f"""
        with raw_rows as (
            select _source_file as path, count(*) as n
            from {qualified("raw", spec.name)} group by 1
        ),
        quarantined as (
            select source_file as path, count(*) as n
            from {qualified("quarantine", spec.name)} group by 1
        )
        select l.path, l.data_lines, l.rows_loaded, l.rows_quarantined,
               coalesce(r.n, 0) as in_raw, coalesce(q.n, 0) as in_quarantine
        from {LEDGER_TABLE} l
        left join raw_rows r using (path) left join quarantined q using (path)
        where l.source = ? and (l.rows_loaded + l.rows_quarantined <> l.data_lines
               or coalesce(r.n, 0) <> l.rows_loaded or coalesce(q.n, 0) <> l.rows_quarantined)
        order by l.path
        """,
        [spec.name],
    ).fetchall()
