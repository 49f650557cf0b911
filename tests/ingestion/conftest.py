import duckdb
import pytest

from mlops_assets.ingestion.loader import ensure_schema


@pytest.fixture
def con():
    """An in-memory warehouse with the raw, quarantine and audit tables."""
    connection = duckdb.connect()
    ensure_schema(connection)
    yield connection
    connection.close()
