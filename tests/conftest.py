"""Shared fixtures: small generated landing data and one real `mlops run` per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_assets.sample_data.generator import GeneratorConfig, generate
from mlops_assets.security.keyring import Keyring

BIN = Path(sys.executable).parent

# 40 days so that outcomes (4-12 weeks after the application) exist for the first days;
# drift from day 30 so both regimes are present.
SMALL = GeneratorConfig(days=40, rows_per_day=150, seed=7, drift_from_day=30)


def mlops(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `mlops` console script as a user would, against ``home``."""
    env = {**os.environ, "MLOPS_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [str(BIN / "mlops"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def keyring(tmp_path) -> Keyring:
    """A fresh keyring (0600 file) for tests that pseudonymise or encrypt."""
    return Keyring.create(tmp_path / "keys" / "keyring.json")


@dataclass(frozen=True)
class PipelineRun:
    home: Path
    summary: dict

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """A home with generated landing files and one full `mlops run --json` over them."""
    home = tmp_path_factory.mktemp("mlops_home")
    generate(SMALL, home / "landing")
    result = mlops("run", "--json", home=home)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[:3000])
    return PipelineRun(home, json.loads(result.stdout))
