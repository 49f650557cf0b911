"""Commit: a staged file's rows written in one transaction with its ledger row, and the files
of a load committed strictly in file order while the next is parsed.

Files are pipelined (:func:`commit_in_order`): while one file's transaction commits, the next
is parsed on another cursor (DuckDB runs both at once). Transactions still run one at a time
and in file order, so a later file's rows (and vault entries) win exactly as in a sequential
load. An error other than a bad file (the warehouse lost, the disk full) stops the load: files
after it are not committed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import duckdb

from mlops_assets.faults import crash_point
from mlops_assets.ingestion.files import FILE_CONTENT_ERRORS, IngestionError, out_of_space
from mlops_assets.ingestion.ledger import FileResult, ensure_ledger, record_file
from mlops_assets.ingestion.sources import LINEAGE_COLUMNS, SourceSpec
from mlops_assets.ingestion.staging import extra_json_sql
from mlops_assets.security.sealing import Sealed, write_sealed
from mlops_assets.security.vault import VaultKeys
from mlops_assets.sql import ident, qualified

PIPELINE_THREADS = 2


def ensure_schema(con: duckdb.DuckDBPyConnection, spec: SourceSpec) -> None:
    """Create the feed's raw and quarantine tables and the ledger if they do not exist
    (idempotent)."""
    for schema in ("raw", "quarantine"):
        con.execute(f"create schema if not exists {qualified(schema)}")
    columns = {**spec.raw_columns, **LINEAGE_COLUMNS}
    ddl_sql = ", ".join(f"{ident(c)} {t}" for c, t in columns.items())
    con.execute(f"create table if not exists {qualified('raw', spec.name)} ({ddl_sql})")
    # A quarantined line is unparsed and may hold anything: raw_line_encrypted is set, for
    # every feed; raw_line stays null.
    con.execute(
        f"create table if not exists {qualified('quarantine', spec.name)} ("
        "source_file varchar not null, line_number bigint, reason varchar not null, "
        "raw_line varchar, raw_line_encrypted blob using compression uncompressed, "
        "key_version integer, "
        "quarantined_at timestamp not null)"
    )
    ensure_ledger(con)


def replace_rows(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    spec: SourceSpec,
    extras: dict[str, str],
    sealed: Sealed,
    *,
    replacing: bool = False,
    vault_keys: VaultKeys | None = None,
) -> None:
    """Inside the caller's transaction: swap the file's earlier rows (``replacing``: the ledger
    records an earlier version) for the staged ones.

    Quarantined lines are written only as ciphertext; for a source with personal data, only
    pseudonyms and generalised values are written to raw, identifiers only as ciphertext
    (``sealed``, made from the in-memory staging tables by ``security.sealing.seal``).
    """
    raw_sql, quarantine_sql = qualified("raw", spec.name), qualified("quarantine", spec.name)
    if replacing:  # else the ledger has no row for the file, so no table has its rows
        con.execute(f"delete from {raw_sql} where _source_file = ?", [rel])
        con.execute(f"delete from {quarantine_sql} where source_file = ?", [rel])
    write_sealed(con, rel, spec, sealed, replacing=replacing, vault_keys=vault_keys)
    # Unknown columns of a personal-data feed may identify: they go to the vault instead.
    extras_sql = "null" if spec.has_personal_data else extra_json_sql(extras)
    values_sql = ", ".join(
        spec.generalised[c].sql() if c in spec.generalised else ident(c) for c in spec.raw_columns
    )
    target_sql = ", ".join(ident(c) for c in [*spec.raw_columns, *LINEAGE_COLUMNS])
    # The records' lineage (and pseudonyms) line up with _records row for row, in file order.
    con.register("_sealed_records", sealed.records)
    try:
        con.execute(
            f"""
            insert into {raw_sql} ({target_sql})
            select {values_sql}, {extras_sql}, ?, _line_number, now()
            from _records positional join _sealed_records where _good
            """,
            [rel],
        )
    finally:
        con.unregister("_sealed_records")


def commit_file(
    con: duckdb.DuckDBPyConnection,
    result: FileResult,
    sha256: str,
    spec: SourceSpec,
    extras: dict[str, str],
    sealed: Sealed,
    *,
    replacing: bool,
    turn: contextlib.AbstractContextManager | None = None,
    vault_keys: VaultKeys | None = None,
) -> None:
    """One transaction, taken in the file's ``turn``: its rows replace its earlier ones and the
    ledger records ``result`` for content ``sha256``; on any error nothing of it is written."""
    with turn or contextlib.nullcontext():
        con.execute("begin transaction")
        try:
            replace_rows(
                con,
                result.path,
                spec,
                extras,
                sealed,
                replacing=replacing,
                vault_keys=vault_keys,
            )
            crash_point("ingest.in_transaction")
            record_file(con, result, sha256)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        crash_point("ingest.committed")


class InOrder:
    """Turns taken strictly in task order: task ``i`` enters only after tasks ``0..i-1`` have
    taken and left theirs (or given them up). Once a task fails for good, later turns raise
    instead of letting their task commit."""

    def __init__(self) -> None:
        self._next = 0
        self._taken: set[int] = set()
        self._condition = threading.Condition()
        self.failure: BaseException | None = None

    @contextlib.contextmanager
    def turn(self, index: int) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: self._next == index)
            self._taken.add(index)
        try:
            if self.failure is not None:
                raise Abandoned from self.failure
            yield
        except BaseException as error:
            # Recorded before the next task's turn begins: it must see the failure and not
            # commit (recording it after the turn let a waiting task slip through).
            files_fault = isinstance(error, (IngestionError, Abandoned, *FILE_CONTENT_ERRORS))
            if not files_fault or out_of_space(error):
                self.failure = self.failure or error
            raise
        finally:
            with self._condition:
                self._next += 1
                self._condition.notify_all()

    def give_up(self, index: int) -> None:
        """Let the tasks after ``index`` go on when task ``index`` ends without its turn."""
        if index not in self._taken:
            with self.turn(index):
                pass


class Abandoned(Exception):
    """A file not committed because an earlier one failed for good."""


Load = Callable[[duckdb.DuckDBPyConnection, Path, contextlib.AbstractContextManager], FileResult]


def commit_in_order(
    con: duckdb.DuckDBPyConnection, paths: Sequence[Path], load: Load
) -> list[FileResult]:
    """``load(cursor, path, turn)`` for every path, :data:`PIPELINE_THREADS` at a time on
    cursors of ``con``, each holding ``turn`` around its transaction so that files commit in
    the order of ``paths``. ``load`` reports a bad file in its result; anything it raises stops
    the load (no later file commits) and is raised here."""
    order = InOrder()
    local = threading.local()
    cursors: list[duckdb.DuckDBPyConnection] = []

    def task(index: int, path: Path) -> FileResult:
        if order.failure is not None:  # an earlier file failed for good: do not even parse
            order.give_up(index)
            raise Abandoned from order.failure
        if not hasattr(local, "cursor"):
            local.cursor = con.cursor()
            cursors.append(local.cursor)
        try:
            return load(local.cursor, path, order.turn(index))
        except Abandoned:
            raise
        except BaseException as error:
            order.failure = order.failure or error
            raise
        finally:
            order.give_up(index)

    try:
        with ThreadPoolExecutor(PIPELINE_THREADS, thread_name_prefix="ingest") as pool:
            futures = [pool.submit(task, i, path) for i, path in enumerate(paths)]
            wait(futures)
    finally:
        for cursor in cursors:
            cursor.close()
    if order.failure is not None:
        raise order.failure
    return [future.result() for future in futures]
