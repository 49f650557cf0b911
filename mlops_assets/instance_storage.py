"""The embedded Dagster instance's event log: SQLite files under ``$DAGSTER_HOME/history/runs``,
as Dagster's own ``SqliteEventLogStorage`` keeps them, written through one SQLAlchemy engine per
file instead of a new engine per write, with the file held open between writes.

Dagster's storage creates an engine, connects (SQLAlchemy then initialises its dialect with a
handful of PRAGMA queries) and disposes of the engine for every event it stores, and a run over
90 landing days stores ~800 events. Three costs per write, each removed here:

- the engine set-up (16 ms -> 8 ms per materialization on the reference machine): one engine per
  file is kept;
- the checkpoint on close: the files are in WAL mode, and the connection that closes a file
  last copies the write-ahead log into the database and syncs it, on every write. A *keeper*
  connection holds each file open while its engine is kept, so a write's connection is never the
  last (SQLite checkpoints on its own as the log grows);
- the sync on commit: write connections use ``synchronous=NORMAL``, which in WAL mode keeps every
  commit through a killed process and never corrupts the file; a power cut or kernel crash may
  lose the last events of the run history (the warehouse, its ledger and the vault are DuckDB's
  and not affected).

Measured on the reference machine: a write transaction 20.7 ms -> 0.7 ms.

Two more costs per event: a connection opened for each transaction (the engine keeps one now,
``pool_size=1``: the storage's lock lets one transaction at a time use it), and two or three
transactions per event where Dagster hands over a batch (a run's planned materializations and
checks, a step's materializations of many partitions: :meth:`store_event_batch` writes one on the
run's file and one on the index, the same rows as event by event). In the main thread of a 100k
run, storing events took 3.45 s before both, 1.69 s after (py-spy, 2026-12-02).

One more cost, of the run's start: for every asset check a run plans, Dagster stores a row per
partition, and serialized the whole event again for each row. Here it is serialized once per
check, and the rows go in as one prepared statement: the 76 checks of a run over 40 landing days
took 2.30 s before its first step, 0.22 s here (2026-12-02).

With the file held open, a write reaches the database file itself only at a checkpoint: the
watchers that stream a run's events (the webserver's run page) react to its write-ahead log too.

Everything else is Dagster's: the same files, schema, migrations, watchers and locking. A kept
connection holds no transaction between writes, so other processes (webserver, daemon, runs)
see every commit at once, as before.

dagster.yaml names this class (``mlops_assets.run.instance.dagster_yaml``); PostgreSQL storage
(``MLOPS_DAGSTER_PG_URL``) does not use it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events import ASSET_EVENTS, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import serialize_value
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool
from watchdog.events import FileSystemEvent, PatternMatchingEventHandler
from watchdog.observers import Observer

KEPT_ENGINES = 64  # the most recently used files' engines (a webserver reads many runs)
# The kinds of event store_event_batch writes itself: every kind Dagster batches (its
# BATCH_WRITABLE_EVENTS, which a test compares with this); a batch with any other goes event by
# event.
BATCHED_EVENTS = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_FAILED_TO_MATERIALIZE,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
    }
)


def _sync_normal(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class _Kept:
    """One file's engine and the keeper connection that holds the file open."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.keeper: sqlite3.Connection | None = None

    def hold(self, path: str) -> None:
        if self.keeper is None:
            keeper = sqlite3.connect(
                path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, check_same_thread=False
            )
            keeper.execute("SELECT count(*) FROM sqlite_master").fetchone()  # maps the WAL index
            self.keeper = keeper

    def close(self) -> None:
        if self.keeper is not None:
            self.keeper.close()
            self.keeper = None
        self.engine.dispose()


class _RunLogWatchdog(sqlite_event_log.SqliteEventLogStorageWatchdog):
    """Dagster's watcher of one run's file, which also wakes when the run's write-ahead log
    changes (the only file a write touches between checkpoints)."""

    def __init__(self, event_log_storage, run_id, callback, cursor, **kwargs) -> None:
        super().__init__(event_log_storage, run_id, callback, cursor, **kwargs)
        # The handler's patterns again, with the log's (the one thing Dagster's init fixes).
        path = self._log_path
        PatternMatchingEventHandler.__init__(self, patterns=[path, f"{path}-wal"], **kwargs)

    def on_modified(self, event: FileSystemEvent) -> None:
        self._process_log()


class SqliteEventLogStorage(sqlite_event_log.SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data=None) -> None:
        self._engines: OrderedDict[str, _Kept] = OrderedDict()
        self._tables: set[str] = set()  # index tables seen: migrations add tables, never drop
        super().__init__(base_dir, inst_data=inst_data)
        # Reentrant: wipe() holds it around Dagster's wipe, which connects to the index.
        self._db_lock = threading.RLock()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> SqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _kept(self, shard: str) -> _Kept:
        kept = self._engines.pop(shard, None)
        if kept is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool,
                pool_size=1,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            event.listen(engine, "connect", _sync_normal)
            kept = _Kept(engine)
        self._engines[shard] = kept  # most recently used last
        while len(self._engines) > KEPT_ENGINES:
            self._engines.popitem(last=False)[1].close()
        return kept

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's _connect, with the engine kept instead of created and disposed of.
        with self._db_lock:
            kept = self._kept(shard)
            if shard not in self._initialized_dbs:  # emptied again by wipe() and upgrade()
                self._initdb(kept.engine)
                self._initialized_dbs.add(shard)
            kept.hold(self.path_for_shard(shard))  # after _initdb: the file is in WAL mode
            with kept.engine.connect() as conn:
                try:
                    with conn.begin():
                        yield conn
                except BaseException:
                    # Not back to the pool: a connection whose rollback failed (an I/O error,
                    # a failed commit) could go on holding the file's write lock.
                    conn.invalidate()
                    raise

    def has_table(self, table_name: str) -> bool:
        # Dagster asks before many queries, with a new engine each time (9 ms here).
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        # Dagster's store_event for every event of a batch (the run's planned materializations
        # and checks; a step's materializations of many partitions), in one transaction on the
        # run's file and one on the index, instead of two or three per event.
        kinds = {event.dagster_event_type for event in events}
        if (
            len({event.run_id for event in events}) != 1
            or not kinds <= BATCHED_EVENTS
            # Dagster's store_event says why a planned check cannot be stored (no migration).
            or (
                DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED in kinds
                and not self.supports_asset_checks
            )
        ):
            super().store_event_batch(events)
            return
        statements = [self.prepare_insert_event(event) for event in events]
        run_id = events[0].run_id
        with self.run_connection(run_id) as conn:
            stored = [conn.execute(statement).inserted_primary_key[0] for statement in statements]
        try:
            self._index_batch(events, statements)
        except Exception:
            # Dagster stores a batch that failed again, event by event: the run's file gives
            # this attempt's rows back first, so that none is there twice.
            with contextlib.suppress(Exception), self.run_connection(run_id) as conn:
                table = SqlEventLogStorageTable
                conn.execute(table.delete().where(table.c.id.in_(stored)))
            raise

    def _index_batch(self, events: Sequence[EventLogEntry], statements: list) -> None:
        # The index mirrors every one of these events (all asset or check events).
        with self.index_connection() as conn:
            ids = [conn.execute(statement).inserted_primary_key[0] for statement in statements]
            if None in ids:
                raise DagsterInvariantViolationError("an event stored without an id")
            assets = [
                i for i, event in enumerate(events) if event.dagster_event_type in ASSET_EVENTS
            ]
            self._store_asset_event_tags(
                conn, [events[i] for i in assets], [ids[i] for i in assets]
            )
            for i in assets:
                self._store_asset_event(conn, events[i], ids[i])
            for event, event_id in zip(events, ids, strict=True):
                if event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
                    self._insert_check_planned(conn, event, event_id)

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id) -> None:
        with self.index_connection() as conn:
            self._insert_check_planned(conn, event, event_id)

    def _insert_check_planned(self, conn: Connection, event: EventLogEntry, event_id) -> None:
        # Dagster's _store_asset_check_evaluation_planned, on the caller's connection, with the
        # event serialized once for all its partitions' rows instead of once per row, and the
        # rows inserted as one prepared statement: a check of a table
        # partitioned by landing day plans a row per day (90 in the demo), and a run plans every
        # check at its start, before its first step.
        planned = event.dagster_event.event_specific_data
        subset = planned.partitions_subset
        row = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        partitions = subset.get_partition_keys() if subset else [None]
        conn.execute(
            AssetCheckExecutionsTable.insert(),
            [{**row, "partition": partition} for partition in partitions],
        )

    def watch(self, run_id: str, cursor: str | None, callback) -> None:
        # Dagster's watch, with the watcher that also follows the write-ahead log.
        if not self._obs:
            self._obs = Observer()
            self._obs.start()
        watchdog = _RunLogWatchdog(self, run_id, callback, cursor)
        self._watchers[run_id][callback] = (
            watchdog,
            self._obs.schedule(watchdog, self._base_dir, recursive=True),
        )

    def _close_all(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].close()

    def wipe(self) -> None:
        # Dagster's wipe deletes the files: let go of them first, so a new file at the same path
        # is never paired with a write-ahead log a keeper still holds, nor written through a
        # kept connection to the deleted one (no other thread connects until the files are gone).
        with self._db_lock:
            self._close_all()
            super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_all()
