"""A small home for the CLI's security tests: a keyring and a warehouse with one customers file
(one clean line, quarantined lines), built in-process in well under a second."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from click.testing import Result
from typer.testing import CliRunner

from mlops_assets import catalogue
from mlops_assets.cli import app
from mlops_assets.ingestion.loader import ingest_source
from mlops_assets.ingestion.sources import identifier_names
from mlops_assets.sample_data.generator import CUSTOMER_COLUMNS
from mlops_assets.security.keyring import Keyring

HEADER = ",".join(CUSTOMER_COLUMNS)
CLEAN = (
    "CUS-0000001,Ada Lovelace,ada@example.com,+1-555-123-4567,123-45-6789,1985-12-10,"
    "12 Oak Street,Salem,north,master,single,0,2025-02-01 08:00:00"
)
# Ada again, with customer_id and dependents swapped: quarantined, the id in another column.
SWAPPED = (
    "0,Ada Lovelace,ada@example.com,+1-555-123-4567,123-45-6789,1985-12-10,"
    "12 Oak Street,Salem,north,master,single,CUS-0000001,2025-02-01 09:00:00"
)
OTHER = (
    "CUS-0000002,Alan Turing,alan@example.com,+1-555-765-4321,987-65-4321,1990-06-23,"
    "7 Elm Road,Dover,east,master,single,lots,2025-02-01 10:00:00"
)
FILE = "customers/2025-02-01.csv"


@dataclass(frozen=True)
class Home:
    path: Path
    keyring: Keyring
    invoke: Callable[..., Result]

    @property
    def warehouse(self) -> Path:
        return self.path / "warehouse.duckdb"

    def key(self, customer_id: str) -> str:
        return self.keyring.pseudonym(customer_id)


def build_home(path: Path, lines: list[str], monkeypatch: pytest.MonkeyPatch) -> Home:
    """``path`` as MLOPS_HOME: a keyring, and a warehouse holding one customers file made of
    ``lines`` (after the header)."""
    folder = path / "landing" / "customers"
    folder.mkdir(parents=True)
    (folder / "2025-02-01.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    keyring = Keyring.create(path / "keys" / "keyring.json")
    with duckdb.connect(str(path / "warehouse.duckdb")) as con:
        feeds = catalogue.sources()
        ingest_source(
            con, path / "landing", feeds["customers"], identifier_names(feeds.values()),
            keyring=keyring,
        )  # fmt: skip
    monkeypatch.setenv("MLOPS_HOME", str(path))
    monkeypatch.delenv("MLOPS_KEYRING", raising=False)
    runner = CliRunner()
    return Home(path, keyring, lambda *args: runner.invoke(app, list(args)))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Home:
    """Ada's clean line (in the vault), Ada's swapped line and Alan's line (quarantined)."""
    return build_home(tmp_path / "home", [CLEAN, SWAPPED, OTHER], monkeypatch)
