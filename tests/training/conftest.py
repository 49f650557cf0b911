from pathlib import Path

import duckdb
import pytest

from mlops_assets.features.engineering import stage_features
from mlops_assets.features.validation import apply_contract, publish
from mlops_assets.sample_data.marts import load_synthetic_mart
from mlops_assets.security.keyring import Keyring
from mlops_assets.training.registry import Registry


def home_registry(home: Path) -> Registry:
    """The registry of a new ``$MLOPS_HOME`` (models/ and its keyring where the CLI finds them)."""
    keyring = Keyring.create(home / "keys" / "keyring.json")
    return Registry(home / "models", keyring.path)


def feature_warehouse(rows: int = 1_500, seed: int = 21) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse with a published feature table."""
    con = duckdb.connect()
    load_synthetic_mart(con, rows, seed=seed)
    stage_features(con)
    apply_contract(con)
    publish(con)
    return con


@pytest.fixture(scope="session")
def features_con():
    con = feature_warehouse()
    yield con
    con.close()


@pytest.fixture(scope="session")
def dask_client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
