from __future__ import annotations

import os

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


@pytest.fixture
def ui_environment(tmp_path, monkeypatch):
    """``$MLOPS_HOME`` for `mlops ui` run in-process, and what it sets in this process's
    environment for its servers put back after the test (later tests of this worker start
    processes of their own)."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    for variable in ("DAGSTER_HOME", "PATH", "PYTHONPATH", "VIRTUAL_ENV"):
        if variable in os.environ:
            monkeypatch.setenv(variable, os.environ[variable])
        else:
            monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def quick_start(monkeypatch):
    """`mlops ui` up to its servers, without parsing the dbt project."""
    from mlops_assets.transform import parse

    monkeypatch.setattr(parse, "prepare_dbt_manifest", lambda environ, if_changed=False: None)
