"""Where the platform keeps its state, resolved once from the environment.

Everything the platform writes lives under ``MLOPS_HOME`` (default ``.mlops/`` in the working
directory). ``dbt_project/profiles.yml`` resolves the warehouse path with the same rule, so the dbt
CLI and Dagster always talk to the same DuckDB file. The one exception is the Dagster history when
``MLOPS_DAGSTER_PG_URL`` is set: then runs, event logs and schedules live in that PostgreSQL
database, shared by everyone (and every daemon) that sets the same URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"

DEFAULT_HOME = ".mlops"
DEFAULT_FIRST_LANDING_DATE = "2025-01-01"
# A landing file dated later than today (UTC) plus this many days is refused, not ingested.
DEFAULT_LANDING_HORIZON_DAYS = 1
WAREHOUSE_FILE = "warehouse.duckdb"

# The Dagster instance: SQLite under $MLOPS_HOME/dagster (embedded default), or PostgreSQL when
# this variable holds a URL. dagster.yaml names the variable; the URL (with its password) stays
# in the environment.
DAGSTER_PG_URL_VARIABLE = "MLOPS_DAGSTER_PG_URL"

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
_DAGSTER_YAML_COMMON = """\
telemetry:
  enabled: false
concurrency:
  pools:
    # Every DuckDB writer runs in the pool `duckdb_writer`: one writer at a time.
    default_limit: 1
"""
# What earlier versions of mlops wrote: still mlops's, so it follows too.
_EARLIER_DAGSTER_YAMLS = (
    """\
# Written by mlops on first use; edit freely. Storage defaults to SQLite under this directory.
"""
    + _DAGSTER_YAML_COMMON,
    _DAGSTER_YAML_HEAD
    + "# Storage: SQLite under this directory (runs, event logs, schedules).\n"
    + _DAGSTER_YAML_COMMON,
)


def dagster_yaml(postgres: bool, dagster_home: Path) -> str:
    """The dagster.yaml mlops writes in ``dagster_home``: PostgreSQL or SQLite storage, the
    same everything else."""
    if postgres:
        storage = _DAGSTER_YAML_POSTGRES
    else:  # a JSON string is a YAML string, whatever the path holds
        event_logs = json.dumps(str(dagster_home / "history" / "runs"))
        storage = _DAGSTER_YAML_SQLITE.format(event_logs=event_logs)
    return _DAGSTER_YAML_HEAD + storage + _DAGSTER_YAML_COMMON


def _generated_dagster_yamls(text: str | None, dagster_home: Path) -> set[str]:
    """Every text mlops could have written into ``dagster_home``, including for the SQLite
    directory named in ``text`` (the home was moved or copied since)."""
    homes = {dagster_home}
    found = re.search(r"^    base_dir: (.+)$", text or "", re.MULTILINE)
    if found:
        with contextlib.suppress(ValueError, TypeError):
            homes.add(Path(json.loads(found.group(1))).parent.parent)
    return {
        *(dagster_yaml(postgres, home) for postgres in (True, False) for home in homes),
        *_EARLIER_DAGSTER_YAMLS,
    }


@dataclass(frozen=True)
class Settings:
    home: Path
    first_landing_date: str = DEFAULT_FIRST_LANDING_DATE  # first daily partition of raw assets
    landing_horizon_days: int = DEFAULT_LANDING_HORIZON_DAYS  # MLOPS_LANDING_HORIZON_DAYS
    keyring_override: Path | None = None  # MLOPS_KEYRING: keep the keys away from the data
    dagster_postgres: bool = False  # MLOPS_DAGSTER_PG_URL is set: a shared Dagster instance

    @property
    def warehouse_path(self) -> Path:
        return self.home / WAREHOUSE_FILE

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def dbt_target_dir(self) -> Path:
        """Where dbt builds started by the platform write compiled SQL and run results."""
        return self.home / "dbt" / "target"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def keyring_path(self) -> Path:
        return self.keyring_override or self.keys_dir / "keyring.json"

    def ensure_dagster_home(self) -> Path:
        """Create DAGSTER_HOME with a dagster.yaml for this environment, and export DAGSTER_HOME.

        With ``dagster_postgres`` (MLOPS_DAGSTER_PG_URL set) the instance keeps runs, event logs
        and schedules in that PostgreSQL database; otherwise in SQLite under this directory.

        The switch rule: dagster.yaml is mlops's while its text is exactly one mlops writes
        (either variant, or an earlier version's, for this or another directory). Such a file is
        rewritten whenever the variable was set or unset or the home moved since, so the storage
        always follows the environment. Any
        edit makes the file the user's: it is then kept as it is, whatever the variable says.
        """
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        config = self.dagster_home / "dagster.yaml"
        wanted = dagster_yaml(self.dagster_postgres, self.dagster_home)
        current = config.read_text() if config.exists() else None
        generated = _generated_dagster_yamls(current, self.dagster_home)
        if current is None or (current != wanted and current in generated):
            # Write then rename: a daemon or webserver reading the file never sees half of it.
            partial = config.with_name(f".dagster.yaml.{os.getpid()}")
            partial.write_text(wanted)
            partial.replace(config)
        os.environ["DAGSTER_HOME"] = str(self.dagster_home)
        return self.dagster_home


def get_settings() -> Settings:
    """Resolve MLOPS_HOME now (not at import), so tests and CLIs can point it elsewhere."""
    home = Path(os.environ.get("MLOPS_HOME", DEFAULT_HOME)).expanduser()
    return Settings(
        home=home.resolve(),
        first_landing_date=os.environ.get("MLOPS_FIRST_LANDING_DATE", DEFAULT_FIRST_LANDING_DATE),
        landing_horizon_days=_horizon_days(os.environ.get("MLOPS_LANDING_HORIZON_DAYS")),
        keyring_override=(
            Path(os.environ["MLOPS_KEYRING"]).expanduser().resolve()
            if os.environ.get("MLOPS_KEYRING")
            else None
        ),
        dagster_postgres=bool(os.environ.get(DAGSTER_PG_URL_VARIABLE)),
    )


def _horizon_days(text: str | None) -> int:
    """MLOPS_LANDING_HORIZON_DAYS: a whole number of days from 0 (the default when unset)."""
    if not text:
        return DEFAULT_LANDING_HORIZON_DAYS
    if not re.fullmatch(r"[0-9]{1,4}", text.strip(), re.ASCII):
        raise ValueError(
            f"MLOPS_LANDING_HORIZON_DAYS must be a whole number of days (0 to 9999), not {text!r}"
        )
    return int(text)
