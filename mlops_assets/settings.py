"""Where the platform keeps its state, resolved once from the environment.

Everything the platform writes lives under ``MLOPS_HOME`` (default ``.mlops/`` in the working
directory). ``dbt_project/profiles.yml`` resolves the warehouse path with the same rule, so the dbt
CLI and Dagster always talk to the same DuckDB file. The one exception is the Dagster history when
``MLOPS_DAGSTER_PG_URL`` is set: then runs, event logs and schedules live in that PostgreSQL
database, shared by everyone (and every daemon) that sets the same URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"

DEFAULT_HOME = ".mlops"
DEFAULT_FIRST_LANDING_DATE = "2025-01-01"
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
_DAGSTER_YAML_SQLITE = "# Storage: SQLite under this directory (runs, event logs, schedules).\n"
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
# What mlops wrote before the PostgreSQL variant existed: still mlops's, so it follows too.
_EARLIER_DAGSTER_YAMLS = (
    """\
# Written by mlops on first use; edit freely. Storage defaults to SQLite under this directory.
"""
    + _DAGSTER_YAML_COMMON,
)


def dagster_yaml(postgres: bool) -> str:
    """The dagster.yaml mlops writes: PostgreSQL or SQLite storage, the same everything else."""
    storage = _DAGSTER_YAML_POSTGRES if postgres else _DAGSTER_YAML_SQLITE
    return _DAGSTER_YAML_HEAD + storage + _DAGSTER_YAML_COMMON


@dataclass(frozen=True)
class Settings:
    home: Path
    first_landing_date: str = DEFAULT_FIRST_LANDING_DATE  # first daily partition of raw assets
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
        (either variant, or an earlier version's). Such a file is rewritten whenever the
        variable was set or unset since, so the storage always follows the environment. Any
        edit makes the file the user's: it is then kept as it is, whatever the variable says.
        """
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        config = self.dagster_home / "dagster.yaml"
        wanted = dagster_yaml(self.dagster_postgres)
        current = config.read_text() if config.exists() else None
        generated = {dagster_yaml(True), dagster_yaml(False), *_EARLIER_DAGSTER_YAMLS}
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
        keyring_override=(
            Path(os.environ["MLOPS_KEYRING"]).expanduser().resolve()
            if os.environ.get("MLOPS_KEYRING")
            else None
        ),
        dagster_postgres=bool(os.environ.get(DAGSTER_PG_URL_VARIABLE)),
    )
