"""The Dagster instance of a home: ``$MLOPS_HOME/dagster`` and the dagster.yaml mlops writes
there. SQLite under that directory, or PostgreSQL when MLOPS_DAGSTER_PG_URL holds a URL:
dagster.yaml names the variable; the URL (with its password) stays in the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import MutableMapping
from pathlib import Path

from mlops_assets.settings import DAGSTER_PG_URL_VARIABLE, Settings

# Dagster stores the events it marks as one batch (a run's planned materializations and checks,
# a step's materializations of many partitions) together only when this variable, which it reads
# from the environment alone, is set: two transactions per batch on SQLite
# (``instance_storage.SqliteEventLogStorage.store_event_batch``) instead of two or three per event.
EVENT_BATCH_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = "1000"


def batch_event_writes(environ: MutableMapping[str, str]) -> None:
    """Let Dagster store batches of events together: ``environ`` is this process's environment
    (``mlops run``), which the processes it starts inherit (``mlops ui``). A value the user set
    is kept."""
    environ.setdefault(EVENT_BATCH_VARIABLE, EVENT_BATCH_SIZE)


_DAGSTER_YAML_HEAD = f"""\
# Written by mlops. While this file is unchanged, mlops rewrites it to follow
# {DAGSTER_PG_URL_VARIABLE} (set: PostgreSQL storage, unset: SQLite here). Edit it and it is yours:
# mlops then leaves it alone, storage included.
"""
# SQLite event logs go through mlops_assets.instance_storage (one database engine per file, not
# one per event: 2x faster writes); its directory is written out, as Dagster's `storage: sqlite`
# would be.
_DAGSTER_YAML_SQLITE = """\
# Storage: SQLite under this directory (runs, event logs, schedules). Event logs are written
# through one database engine per file instead of a new one per event (2x faster writes).
event_log_storage:
  module: mlops_assets.instance_storage
  class: SqliteEventLogStorage
  config:
    base_dir: {event_logs}
"""
_DAGSTER_YAML_POSTGRES = f"""\
# Storage: runs, event logs and schedules in the PostgreSQL database at ${DAGSTER_PG_URL_VARIABLE}.
storage:
  postgres:
    postgres_url:
      env: {DAGSTER_PG_URL_VARIABLE}
"""
_DAGSTER_YAML_POOLS = """\
telemetry:
  enabled: false
concurrency:
  pools:
    # Every DuckDB writer runs in the pool `duckdb_writer`: one writer at a time.
    default_limit: 1
"""
_DAGSTER_YAML_COMMON = (
    _DAGSTER_YAML_POOLS
    + """\
run_queue:
  # A run launched from the UI, a schedule or a sensor starts within a second of its turn
  # (Dagster's default: every 5 s).
  dequeue_interval_seconds: 1
"""
)
# What earlier versions of mlops wrote: still mlops's, so it follows too.
_EARLIER_DAGSTER_YAMLS = (
    """\
# Written by mlops on first use; edit freely. Storage defaults to SQLite under this directory.
"""
    + _DAGSTER_YAML_POOLS,
    _DAGSTER_YAML_HEAD
    + "# Storage: SQLite under this directory (runs, event logs, schedules).\n"
    + _DAGSTER_YAML_POOLS,
)


def dagster_yaml(postgres: bool, dagster_home: Path, common: str = _DAGSTER_YAML_COMMON) -> str:
    """The dagster.yaml mlops writes in ``dagster_home``: PostgreSQL or SQLite storage, the
    same everything else (``common``: the settings of this version, or an earlier one's)."""
    if postgres:
        storage = _DAGSTER_YAML_POSTGRES
    else:  # a JSON string is a YAML string, whatever the path holds
        event_logs = json.dumps(str(dagster_home / "history" / "runs"))
        storage = _DAGSTER_YAML_SQLITE.format(event_logs=event_logs)
    return _DAGSTER_YAML_HEAD + storage + common


def _generated_dagster_yamls(text: str | None, dagster_home: Path) -> set[str]:
    """Every text mlops could have written into ``dagster_home``, including for the SQLite
    directory named in ``text`` (the home was moved or copied since)."""
    homes = {dagster_home}
    found = re.search(r"^    base_dir: (.+)$", text or "", re.MULTILINE)
    if found:
        with contextlib.suppress(ValueError, TypeError):
            homes.add(Path(json.loads(found.group(1))).parent.parent)
    return {
        *(
            dagster_yaml(postgres, home, common)
            for postgres in (True, False)
            for home in homes
            for common in (_DAGSTER_YAML_COMMON, _DAGSTER_YAML_POOLS)
        ),
        *_EARLIER_DAGSTER_YAMLS,
    }


def ensure_dagster_home(settings: Settings) -> Path:
    """Create the Dagster home of ``settings`` with a dagster.yaml for this environment, and
    return it (for ``DagsterInstance.from_config``, or as DAGSTER_HOME of a process mlops
    starts).

    With ``dagster_postgres`` (MLOPS_DAGSTER_PG_URL set) the instance keeps runs, event logs
    and schedules in that PostgreSQL database; otherwise in SQLite under this directory.

    The switch rule: dagster.yaml is mlops's while its text is exactly one mlops writes
    (either variant, or an earlier version's, for this or another directory). Such a file is
    rewritten whenever the variable was set or unset or the home moved since, so the storage
    always follows the environment. Any edit makes the file the user's: it is then kept as it
    is, whatever the variable says.
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = dagster_yaml(settings.dagster_postgres, home)
    current = config.read_text() if config.exists() else None
    generated = _generated_dagster_yamls(current, home)
    if current is None or (current != wanted and current in generated):
        # Write then rename: a daemon or webserver reading the file never sees half of it.
        partial = config.with_name(f".dagster.yaml.{os.getpid()}")
        partial.write_text(wanted)
        partial.replace(config)
    return home


def dagster_instance(settings: Settings):
    """The Dagster instance of ``settings``' home (its dagster.yaml written first), without
    going through the DAGSTER_HOME variable."""
    import dagster as dg

    return dg.DagsterInstance.from_config(str(ensure_dagster_home(settings)))
