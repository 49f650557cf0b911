"""Dagster resources shared by every stage: the warehouse file and the landing zone."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb

from mlops_assets import warehouse
from mlops_assets.security.keyring import Keyring
from mlops_assets.settings import get_settings

# DuckDB allows one writing process per file: every asset that writes runs in this pool, whose
# limit is 1 (set in the instance's dagster.yaml).
WRITER_POOL = "duckdb_writer"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. Writers run in the `duckdb_writer` pool (one at a time)."""

    path: str

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connection(Path(self.path), read_only=read_only) as con:
            yield con


class LandingZone(dg.ConfigurableResource):
    """Where landing files arrive: ``<path>/<source>/<YYYY-MM-DD>.csv``."""

    path: str

    @property
    def directory(self) -> Path:
        return Path(self.path)


class KeyringResource(dg.ConfigurableResource):
    """The keyring file (pseudonym key and vault keys); see mlops_assets.security.keyring."""

    path: str

    def load(self) -> Keyring:
        return Keyring.load(Path(self.path))


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources bound to $MLOPS_HOME, resolved when the code location loads."""
    from mlops_assets.transform.assets import dbt_resource

    settings = get_settings()
    return {
        "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
        "landing": LandingZone(path=str(settings.landing_dir)),
        "keyring": KeyringResource(path=str(settings.keyring_path)),
        "dbt": dbt_resource(),
    }
