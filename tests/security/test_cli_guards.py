"""What a careless operator can get wrong is refused with a message that says what is wrong,
never a traceback, never an empty warehouse created, never a harmful command advised."""

from __future__ import annotations

import json
import os

import duckdb
import pytest

from mlops_assets.resources import WarehouseResource
from mlops_assets.security.keyring import Keyring, KeyringError
from mlops_assets.security.vault import VaultError, reveal_quarantined_line
from mlops_assets.warehouse import WarehouseMissingError, connect
from tests.security.conftest import FILE


def test_an_unknown_source_is_a_usage_error(home):
    shown = home.invoke(
        "pii", "quarantined-line", "--source", "nosuch", "--file", FILE, "--line", "3",
        "--reason", "r",
    )  # fmt: skip
    assert shown.exit_code == 2
    assert "nosuch" in shown.output and "customers" in shown.output


def test_a_source_is_never_pasted_into_sql(home):
    hostile = "customers where 1 = 1; drop table raw.customers; --"
    with duckdb.connect(str(home.warehouse)) as con:
        with pytest.raises(VaultError, match="has no encrypted quarantined lines"):
            reveal_quarantined_line(con, home.keyring, hostile, FILE, 3, "r")
        assert con.execute("select count(*) from raw.customers").fetchone()[0] == 1


@pytest.mark.parametrize(
    "command",
    [
        ("pii", "forget", "--customer", "abc"),
        ("pii", "reveal", "--customer", "abc", "--reason", "r"),
        ("pii", "quarantined-line", "--source", "customers", "--file", FILE, "--line", "3",
         "--reason", "r"),
        ("keys", "rotate"),
        ("keys", "retire", "1"),
    ],
)  # fmt: skip
def test_a_mistyped_home_is_refused_and_gets_no_warehouse(home, tmp_path, monkeypatch, command):
    typo = tmp_path / "hoem"
    monkeypatch.setenv("MLOPS_HOME", str(typo))
    monkeypatch.setenv("MLOPS_KEYRING", str(home.keyring.path))
    refused = home.invoke(*command)
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit)
    assert f"no warehouse at {typo / 'warehouse.duckdb'}" in refused.output
    assert not typo.exists()


def test_only_a_creating_writer_makes_a_warehouse(tmp_path):
    with pytest.raises(WarehouseMissingError, match="check MLOPS_HOME"):
        connect(tmp_path / "a" / "w.duckdb")
    assert not (tmp_path / "a").exists()
    connect(tmp_path / "a" / "w.duckdb", create=True).close()
    # The pipeline's writers build it (`mlops run` goes through them).
    with WarehouseResource(path=str(tmp_path / "b" / "w.duckdb")).connect() as con:
        con.execute("select 1")
    assert (tmp_path / "b" / "w.duckdb").exists()


def test_a_directory_as_keyring_is_named_as_such_and_nothing_is_advised(home, tmp_path):
    with pytest.raises(KeyringError) as error:
        Keyring.load(tmp_path)
    assert "is a directory, not a keyring file" in str(error.value)
    assert "chmod" not in str(error.value)


def test_the_cli_says_what_is_wrong_with_mlops_keyring(home, tmp_path, monkeypatch):
    os.chmod(tmp_path, 0o777)
    monkeypatch.setenv("MLOPS_KEYRING", str(tmp_path))
    shown = home.invoke("keys", "status")
    assert shown.exit_code == 1
    assert "is a directory, not a keyring file" in shown.output
    assert "chmod" not in shown.output


def test_an_open_file_that_is_not_a_keyring_gets_no_chmod_advice(tmp_path):
    other = tmp_path / "passwd"
    other.write_text("root:x:0:0:root:/root:/bin/bash\n")
    os.chmod(other, 0o644)
    with pytest.raises(KeyringError) as error:
        Keyring.load(other)
    assert "not a valid keyring file" in str(error.value) and "chmod" not in str(error.value)


def test_the_chmod_advice_for_an_open_keyring_quotes_its_path(tmp_path):
    path = tmp_path / "my keys; rm -rf ~" / "keyring.json"
    Keyring.create(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError) as error:
        Keyring.load(path)
    assert f"`chmod 600 '{path}'`" in str(error.value)
    assert json.loads(path.read_text())["pseudonym_key"]  # untouched


@pytest.mark.parametrize(
    "command",
    [
        ("keys", "init"),
        ("pii", "reveal", "--customer", "abc", "--reason", "check"),
        ("pii", "forget", "--customer", "abc"),
        ("keys", "status"),
    ],
)
def test_a_lost_keyring_of_a_built_warehouse_is_to_be_restored_never_replaced(
    home, tmp_path, monkeypatch, command
):
    # MLOPS_KEYRING points at a missing file; the warehouse remembers its keyring's fingerprint.
    monkeypatch.setenv("MLOPS_KEYRING", str(tmp_path / "lost" / "keyring.json"))
    result = home.invoke(*command)
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "restore that keyring" in said and home.keyring.fingerprint in said
    assert "keys init" not in said
    assert not (tmp_path / "lost").exists()
