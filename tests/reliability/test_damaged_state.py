"""Damaged state is refused or reported where it is, and costs nothing else: a vault row whose
ciphertext was altered is reported for that row only; a model file altered after registration
is refused at load, and scoring writes nothing with it."""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb
import pandas as pd
import pytest

from mlops_assets.security.keyring import DecryptionError, Keyring
from mlops_assets.security.sealing import record_cell
from mlops_assets.security.vault import (
    IDENTIFIERS,
    PII_TABLE,
    bind_keyring,
    encrypt_cells,
    ensure_vault,
    reveal,
    store_customer_pii,
    write_sealed_pii,
)
from tests.conftest import mlops

COLUMNS = ["full_name", "email", "phone"]


def _vault(path, keyring: Keyring) -> list[str]:
    """A warehouse at ``path`` whose vault holds two customers' identifiers, and the extras of
    an event record of the first; returns their keys."""
    frame = pd.DataFrame(
        {
            "customer_key": [keyring.pseudonym(f"CUS-{i}") for i in range(2)],
            "full_name": ["Ada Lovelace", "Alan Turing"],
            "email": ["ada@example.com", "alan@example.com"],
            "phone": ["+44 20 1111", "+44 20 2222"],
        }
    )
    keys = list(frame["customer_key"])
    extras = record_cell("applications/2025-01-01.csv", 2)
    with duckdb.connect(str(path)) as con:
        ensure_vault(con)
        store_customer_pii(con, keyring, frame, COLUMNS)
        cells = encrypt_cells(keyring, PII_TABLE, keys[:1], [extras], ['{"loyalty":"LC-1"}'])
        write_sealed_pii(con, keyring, cells)
        bind_keyring(con, keyring)
    return keys


def _damage(path, customer_key: str, row: str = IDENTIFIERS) -> None:
    """Flip one bit of one vault row's ciphertext, as a bad disk block or a careless edit
    would."""
    with duckdb.connect(str(path)) as con:
        (blob,) = con.execute(
            f"select ciphertext from {PII_TABLE} where customer_key = ? and column_name = ?",
            [customer_key, row],
        ).fetchone()
        damaged = blob[:-1] + bytes([blob[-1] ^ 1])
        con.execute(
            f"update {PII_TABLE} set ciphertext = ? where customer_key = ? and column_name = ?",
            [damaged, customer_key, row],
        )


def test_a_damaged_vault_row_is_reported_for_that_row_only(tmp_path, keyring):
    warehouse = tmp_path / "warehouse.duckdb"
    first, second = _vault(warehouse, keyring)
    _damage(warehouse, first)
    extras = record_cell("applications/2025-01-01.csv", 2)
    with duckdb.connect(str(warehouse)) as con:
        revealed = reveal(con, keyring, first, "complaint 12")
        assert revealed == {extras: '{"loyalty":"LC-1"}'}
        assert set(revealed.unreadable) == {IDENTIFIERS}
        assert "failed authentication" in revealed.unreadable[IDENTIFIERS]
        assert reveal(con, keyring, second, "complaint 13").unreadable == {}  # untouched
        audited = con.execute("select columns from audit.pii_access order by 1").fetchall()
    assert sorted(audited) == [([extras],), (["email", "full_name", "phone"],)]


def test_a_customer_with_every_row_damaged_is_an_error_not_an_empty_answer(tmp_path, keyring):
    warehouse = tmp_path / "warehouse.duckdb"
    first, _ = _vault(warehouse, keyring)
    _damage(warehouse, first)
    _damage(warehouse, first, record_cell("applications/2025-01-01.csv", 2))
    with duckdb.connect(str(warehouse)) as con, pytest.raises(DecryptionError, match=first):
        reveal(con, keyring, first, "complaint 14")


def test_the_cli_shows_the_readable_rows_and_names_the_damaged_one(tmp_path):
    keyring = Keyring.create(tmp_path / "keys" / "keyring.json")  # where MLOPS_HOME keeps it
    first, _ = _vault(tmp_path / "warehouse.duckdb", keyring)
    _damage(tmp_path / "warehouse.duckdb", first)
    result = mlops(
        "pii", "reveal", "--customer", first, "--reason", "dsar 3", "--json", home=tmp_path
    )
    assert result.returncode == 1
    shown = json.loads(result.stdout)
    assert shown[record_cell("applications/2025-01-01.csv", 2)] == '{"loyalty":"LC-1"}'
    assert "phone" not in shown and "email" not in shown
    assert set(shown["unreadable"]) == {IDENTIFIERS}
    assert IDENTIFIERS in result.stderr and "unreadable" in result.stderr
    assert "+44" not in result.stderr and "ada@" not in result.stderr


def test_the_cli_drops_a_customers_unreadable_rows_only_and_says_so(tmp_path):
    keyring = Keyring.create(tmp_path / "keys" / "keyring.json")
    first, second = _vault(tmp_path / "warehouse.duckdb", keyring)
    _damage(tmp_path / "warehouse.duckdb", first)
    untouched = mlops("pii", "drop-unreadable", "--customer", second, home=tmp_path)
    assert untouched.returncode == 1 and "fails authentication" in untouched.stderr
    hostile = mlops("pii", "drop-unreadable", "--customer", "\x1b[31mx", home=tmp_path)
    assert hostile.returncode == 1 and "\x1b" not in hostile.stderr  # shown escaped
    dropped = mlops("pii", "drop-unreadable", "--customer", first, home=tmp_path)
    assert dropped.returncode == 0, dropped.stderr
    assert f"dropped 1 unreadable vault row(s) of customer {first}: {IDENTIFIERS}" in (
        dropped.stderr
    )
    result = mlops("pii", "reveal", "--customer", first, "--reason", "t", "--json", home=tmp_path)
    assert result.returncode == 0  # what is left reads
    assert json.loads(result.stdout)["unreadable"] == {}


def test_scoring_refuses_a_model_file_altered_after_registration_and_writes_nothing(tmp_path):
    from mlops_assets import catalogue
    from mlops_assets.training.dataset import load_training_data
    from mlops_assets.training.registry import RegistryError
    from mlops_assets.training.scoring import score_model
    from mlops_assets.training.trainer import TrainingConfig, train_model
    from tests.training.conftest import feature_warehouse, home_registry

    con = feature_warehouse()
    registry = home_registry(tmp_path)
    # One cheap candidate: the refusal is about the registered file, not the estimator.
    spec = replace(catalogue.model("default_classifier"), candidates=("logistic_l2",))
    data = load_training_data(con, spec)
    version = train_model(data, registry, TrainingConfig(folds=2, bootstrap_rounds=20)).card.version
    score_model(con, registry, spec)
    scores = f"select count(*), sum(score), any_value(model_version) from {spec.scores}"
    before = con.execute(scores).fetchone()
    with (tmp_path / "models" / "default_classifier" / version / "model.skops").open("r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))  # same size, one byte different
    with pytest.raises(RegistryError, match=f"{version}.*modified after registration"):
        score_model(con, registry, spec)
    assert con.execute(scores).fetchone() == before
    con.close()
