import duckdb
import pytest

from mlops_assets.features.engineering import stage_features
from tests.sample_data.marts import load_synthetic_mart

ROWS = 600  # enough labelled rows (> 200) for the statistical check to judge


@pytest.fixture
def staged():
    """An in-memory warehouse with a synthetic mart and its features staged in ``_features``."""
    con = duckdb.connect()
    load_synthetic_mart(con, ROWS, seed=3)
    stage_features(con)
    yield con
    con.close()
