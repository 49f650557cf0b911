"""Where the platform keeps its state, resolved once from the environment.

Everything the platform writes lives under ``MLOPS_HOME`` (default ``.mlops/`` in the working
directory). ``dbt_project/profiles.yml`` resolves the warehouse path with the same rule, so the dbt
CLI and Dagster always talk to the same DuckDB file.
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

# The embedded Dagster instance: SQLite storage under $MLOPS_HOME/dagster.
DAGSTER_YAML = """\
# Written by mlops on first use; edit freely. Storage defaults to SQLite under this directory.
telemetry:
  enabled: false
concurrency:
  pools:
    # Every DuckDB writer runs in the pool `duckdb_writer`: one writer at a time.
    default_limit: 1
"""


@dataclass(frozen=True)
class Settings:
    home: Path
    first_landing_date: str = DEFAULT_FIRST_LANDING_DATE  # first daily partition of raw assets
    keyring_override: Path | None = None  # MLOPS_KEYRING: keep the keys away from the data

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
        """Create DAGSTER_HOME with its dagster.yaml (kept if the user edited it) and export it."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        config = self.dagster_home / "dagster.yaml"
        if not config.exists():
            config.write_text(DAGSTER_YAML)
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
    )
