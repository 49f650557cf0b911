"""Where the platform keeps its state, resolved from the environment by :func:`get_settings`.

Everything the platform writes lives under ``MLOPS_HOME`` (default ``.mlops/`` in the working
directory). Dagster's dbt step hands dbt its warehouse file; ``dbt_project/profiles.yml``
resolves the same path from MLOPS_HOME when dbt runs by hand. The one exception is the Dagster
history when ``MLOPS_DAGSTER_PG_URL`` is set: then runs, event logs and schedules live in that
PostgreSQL database, shared by everyone (and every daemon) that sets the same URL.
"""

from __future__ import annotations

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
# DuckDB's memory budget per connection (the platform's and dbt's): above it, joins, sorts and
# aggregations spill to <warehouse>.tmp/ instead of growing. DuckDB's own default is 80% of RAM,
# which leaves nothing for the Dask workers beside it.
MEMORY_LIMIT_VARIABLE = "MLOPS_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "2GB"
# Rows per chunk of the stages that fan out (validation, scoring): the memory of one task. A
# table of one chunk is processed in-process.
CHUNK_ROWS_VARIABLE = "MLOPS_CHUNK_ROWS"
DEFAULT_CHUNK_ROWS = 250_000

# The Dagster instance: SQLite under $MLOPS_HOME/dagster (embedded default), or PostgreSQL when
# this variable holds a URL (mlops_assets.run.instance writes the dagster.yaml naming it).
DAGSTER_PG_URL_VARIABLE = "MLOPS_DAGSTER_PG_URL"


@dataclass(frozen=True)
class Settings:
    home: Path
    first_landing_date: str = DEFAULT_FIRST_LANDING_DATE  # first daily partition of raw assets
    landing_horizon_days: int = DEFAULT_LANDING_HORIZON_DAYS  # MLOPS_LANDING_HORIZON_DAYS
    keyring_override: Path | None = None  # MLOPS_KEYRING: keep the keys away from the data
    dagster_postgres: bool = False  # MLOPS_DAGSTER_PG_URL is set: a shared Dagster instance
    dask_scheduler_address: str | None = None  # DASK_SCHEDULER_ADDRESS: a running Dask cluster
    duckdb_memory_limit: str = DEFAULT_MEMORY_LIMIT  # MLOPS_DUCKDB_MEMORY_LIMIT
    chunk_rows: int = DEFAULT_CHUNK_ROWS  # MLOPS_CHUNK_ROWS
    alert_webhook: str | None = None  # MLOPS_ALERT_WEBHOOK: where alerts are posted

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


def get_settings() -> Settings:
    """Resolve the environment's settings now (not at import), so tests and CLIs can point
    MLOPS_HOME elsewhere. Only entry points call this (the CLI, `mlops run`, the definitions
    a code location loads), once; steps get what they need through resources."""
    # Set but empty is unset, as for every other variable here (not the working directory).
    home = Path(os.environ.get("MLOPS_HOME") or DEFAULT_HOME).expanduser()
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
        dask_scheduler_address=os.environ.get("DASK_SCHEDULER_ADDRESS") or None,
        duckdb_memory_limit=os.environ.get(MEMORY_LIMIT_VARIABLE) or DEFAULT_MEMORY_LIMIT,
        chunk_rows=_chunk_rows(os.environ.get(CHUNK_ROWS_VARIABLE)),
        alert_webhook=os.environ.get("MLOPS_ALERT_WEBHOOK") or None,
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


def _chunk_rows(text: str | None) -> int:
    """MLOPS_CHUNK_ROWS: a positive number of rows (250,000 when unset)."""
    if not text:
        return DEFAULT_CHUNK_ROWS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{CHUNK_ROWS_VARIABLE} must be a positive number of rows, not {text!r}")
    return int(text)
