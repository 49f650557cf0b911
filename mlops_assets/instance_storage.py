"""The embedded Dagster instance's event log: SQLite files under ``$DAGSTER_HOME/history/runs``,
as Dagster's own ``SqliteEventLogStorage`` keeps them, written through one SQLAlchemy engine per
file instead of a new engine per write.

Dagster's storage creates an engine, connects (SQLAlchemy then initialises its dialect with a
handful of PRAGMA queries) and disposes of the engine for every event it stores. A run over 90
landing days stores ~800 events; the engine set-up was half of each write (16 ms -> 8 ms per
materialization here). Everything else is Dagster's: the same files, schema, migrations,
watchers and locking; connections are still opened per transaction (``NullPool``), so other
processes (webserver, daemon, runs) see every commit at once, as before.

dagster.yaml names this class (``mlops_assets.run.instance.dagster_yaml``); PostgreSQL storage
(``MLOPS_DAGSTER_PG_URL``) does not use it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

KEPT_ENGINES = 64  # the most recently used files' engines (a webserver reads many runs)


class SqliteEventLogStorage(sqlite_event_log.SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data=None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> SqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=NullPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
        self._engines[shard] = engine  # most recently used last
        while len(self._engines) > KEPT_ENGINES:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's _connect, with the engine kept instead of created and disposed of.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:  # emptied again by wipe() and upgrade()
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
