"""The DuckDB warehouse file: connections that wait politely for the single-writer lock.

DuckDB lets one process write a database file at a time. A second writer (a `dbt build` from the
CLI racing a Dagster run, say) gets an IO error at connect time; we retry for a while and then fail
with a message that says what holds the lock and what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from mlops_assets.settings import DEFAULT_MEMORY_LIMIT
from mlops_assets.sql import ident, literal, qualified

LOCK_WAIT_SECONDS = 60.0
# How far a load lets the write-ahead log grow between checkpoints (checkpoints_deferred).
LOAD_CHECKPOINT_BYTES = 1 << 30


class WarehouseLockedError(RuntimeError):
    """Another process holds the DuckDB write lock for longer than we were willing to wait."""


def is_lock_error(error: BaseException | str) -> bool:
    """Whether ``error`` (or an error message) is DuckDB refusing the file lock: transient."""
    return "could not set lock" in str(error).lower()


class WarehouseMissingError(FileNotFoundError):
    """No warehouse file where one was expected: MLOPS_HOME is wrong, or nothing ran yet."""


def require_warehouse(path: Path) -> None:
    """Refuse a home without a warehouse (a command that does not build one, under a mistyped
    MLOPS_HOME or before the first run)."""
    if not Path(path).exists():
        raise WarehouseMissingError(
            f"no warehouse at {path}: check MLOPS_HOME, or run `mlops run` first to build it"
        )


def connect(
    path: Path,
    *,
    read_only: bool = False,
    create: bool = False,
    wait_seconds: float = LOCK_WAIT_SECONDS,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, retrying while another process holds the lock. DuckDB spills to
    disk beyond ``memory_limit`` (the MLOPS_DUCKDB_MEMORY_LIMIT setting).

    Only a writer that builds the warehouse (``create``: the pipeline's steps) makes a missing
    file; every other caller is refused, so a mistyped MLOPS_HOME never gains an empty one."""
    path = Path(path)
    if not path.exists():
        if read_only or not create:
            require_warehouse(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    delay = 0.1
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            con.execute("set enable_progress_bar = false")  # no bars in run logs
            con.execute("set memory_limit = ?", [memory_limit])
            return con
        except duckdb.IOException as error:
            if not is_lock_error(error) or time.monotonic() >= deadline:
                if is_lock_error(error):
                    holder = re.search(r"PID (\d+)", str(error))
                    who = f"process {holder.group(1)}" if holder else "another process"
                    raise WarehouseLockedError(
                        f"warehouse {path} is locked by {who} (DuckDB allows one writer at a "
                        f"time); waited {wait_seconds:.0f}s — retry when it has finished"
                    ) from error
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


@contextlib.contextmanager
def connection(
    path: Path,
    *,
    read_only: bool = False,
    create: bool = False,
    wait_seconds: float = LOCK_WAIT_SECONDS,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that is always closed, so the file lock is released deterministically."""
    con = connect(
        path,
        read_only=read_only,
        create=create,
        wait_seconds=wait_seconds,
        memory_limit=memory_limit,
    )
    try:
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def checkpoints_deferred(
    con: duckdb.DuckDBPyConnection, threshold_bytes: int = LOAD_CHECKPOINT_BYTES
) -> Iterator[None]:
    """Let the write-ahead log grow to ``threshold_bytes`` before DuckDB checkpoints, while the
    block runs; then put the database's threshold back (as DuckDB reports it: rounded to a
    tenth of its unit) and checkpoint, so that a checkpoint the disk cannot hold fails here,
    not silently at close.

    A load commits once per file; past DuckDB's default of 16 MB, each commit would checkpoint,
    writing the vault and the raw tables into the database file over and over. Every commit is
    still in the log, on disk, before it returns: a crash loses nothing, the next open replays
    the log. Until the checkpoint, what the log holds also counts against DuckDB's memory limit
    (beyond it, DuckDB spills to its temporary file). The threshold is not lowered for a disk
    nearly full: a checkpoint needs room for new blocks before it frees the old ones, and one
    that fails inside a commit invalidates the database, where a commit the log cannot hold
    fails alone. The setting is the database's, shared by every connection of this process to
    it: not for two loads of one database at once."""
    before = scalar(con, "select current_setting('checkpoint_threshold')")
    con.execute("set checkpoint_threshold = ?", [f"{threshold_bytes} bytes"])
    try:
        yield
    except BaseException:
        # The error in flight is the one to see: a database it invalidated refuses the reset.
        with contextlib.suppress(duckdb.Error):
            con.execute("set checkpoint_threshold = ?", [before])
        raise
    con.execute("set checkpoint_threshold = ?", [before])
    con.execute("checkpoint")


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The single value of a one-row, one-column query. The result is read to the end, so the
    connection is free for the next statement (DuckDB refuses new work on a connection whose
    result was left half-read)."""
    return con.execute(sql, params or []).fetchall()[0][0]


def table_row_counts(con: duckdb.DuckDBPyConnection, schemas: tuple[str, ...]) -> dict[str, int]:
    """Exact row counts of every table and view in ``schemas``, keyed ``schema.table``."""
    names = con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_schema in (select unnest(?)) order by 1, 2",
        [list(schemas)],
    ).fetchall()
    return {
        f"{schema}.{table}": scalar(con, f"select count(*) from {qualified(schema, table)}")
        for schema, table in names
    }


def column_types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column name -> DuckDB type of ``table`` (``schema.name`` or a temporary table's name)."""
    table_sql = qualified(*table.split("."))
    return dict(
        con.execute(f"select column_name, column_type from (describe {table_sql})").fetchall()
    )


def table_version(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """A content hash of ``table`` (``schema.name``): its columns and types, and the sum of its
    row hashes (so the order of rows does not matter). Same content, same version; one scan."""
    table_sql = qualified(*table.split("."))
    columns = con.execute(f"describe {table_sql}").fetchall()
    rows, total = con.execute(
        f"select count(*), sum(hash(t)::hugeint) from {table_sql} t"
    ).fetchone()
    digest = hashlib.sha256(repr((columns, rows, str(total))).encode()).hexdigest()
    return digest[:16]


def replace_rows(
    con: duckdb.DuckDBPyConnection,
    frames: dict[str, tuple[str, object]],
    where_sql: str,
    params: list,
) -> None:
    """In one transaction, for each ``schema.table -> (column DDL, frame)``: create the table if
    it is missing, delete its rows matching ``where_sql`` (with ``params``), insert the frame's
    rows by column name. Re-recording the same keys replaces them; a failure changes nothing.
    The DDL and condition are the caller's own SQL text, never data."""
    con.execute("begin")
    try:
        for table, (columns_sql, frame) in frames.items():
            schema, name = table.split(".")
            table_sql = qualified(schema, name)
            con.execute(f"create schema if not exists {qualified(schema)}")
            con.execute(f"create table if not exists {table_sql} ({columns_sql})")
            con.execute(f"delete from {table_sql} where {where_sql}", params)
            con.register("_frame", frame)
            con.execute(f"insert into {table_sql} by name select * from _frame")
            con.unregister("_frame")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def _file_state(path: Path) -> tuple[int, int, int, int]:
    """What changes when a process writes the file: inode, size, modification and change time."""
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def rewrite_file(
    path: Path,
    *,
    wait_seconds: float = LOCK_WAIT_SECONDS,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> None:
    """Rewrite the warehouse into a new file and put it in place of the old one, so no freed
    block of the old file survives: DuckDB neither zeroes nor returns the blocks of deleted
    rows (VACUUM and CHECKPOINT included), and erased ciphertexts would stay in its bytes.

    ``COPY FROM DATABASE`` carries schemas, tables, views, sequences, macros, types and
    constraints. Between closing DuckDB and the rename the old file stays locked the way DuckDB
    locks it (``fcntl``), so no writer slips in a change that the new file would lose; a writer
    that took the lock first, or wrote the file between DuckDB closing it and our lock (its
    size or times changed), makes us copy again. The new file keeps the old one's mode."""
    path = Path(path)
    require_warehouse(path)
    fresh = path.with_name(f".{path.name}.rewrite")
    deadline = time.monotonic() + wait_seconds
    while True:
        for leftover in (fresh, Path(f"{fresh}.wal")):  # from an interrupted rewrite
            leftover.unlink(missing_ok=True)
        wait = max(deadline - time.monotonic(), 0.0)
        with connection(path, wait_seconds=wait, memory_limit=memory_limit) as con:
            database = scalar(con, "select current_database()")
            con.execute(f"attach {literal(str(fresh))} as _rewrite")
            try:
                con.execute(f"copy from database {ident(database)} to _rewrite")
                con.execute("checkpoint _rewrite")
            finally:
                con.execute("detach _rewrite")
        copied = _file_state(path)  # as the copy left it, taken the moment DuckDB let go
        descriptor = os.open(path, os.O_RDWR)
        try:
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _file_state(path) != copied:  # a writer came and went before our lock
                    raise BlockingIOError
            except OSError:
                if time.monotonic() >= deadline:
                    fresh.unlink(missing_ok=True)
                    raise WarehouseLockedError(
                        f"warehouse {path} was reopened by another process before its rewrite "
                        f"took its place; waited {wait_seconds:.0f}s — retry when it has finished"
                    ) from None
                continue
            os.chmod(fresh, stat.S_IMODE(os.fstat(descriptor).st_mode))
            with open(fresh, "rb+") as handle:
                os.fsync(handle.fileno())
            # Closing DuckDB checkpointed; a write-ahead log left over would be replayed on
            # the new file, so it goes before the rename.
            Path(f"{path}.wal").unlink(missing_ok=True)
            os.replace(fresh, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            return
        finally:
            os.close(descriptor)
