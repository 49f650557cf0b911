from __future__ import annotations

import duckdb
import pytest
from typer.testing import CliRunner

from mlops_assets.cli import app
from mlops_assets.security.keyring import Keyring


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty ``$MLOPS_HOME`` with a keyring and a warehouse file."""
    Keyring.create(tmp_path / "keys" / "keyring.json")
    duckdb.connect(str(tmp_path / "warehouse.duckdb")).close()
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MLOPS_KEYRING", raising=False)
    return tmp_path


def invoke(*args: str):
    """Run the `mlops` command line in-process."""
    return CliRunner().invoke(app, list(args))
