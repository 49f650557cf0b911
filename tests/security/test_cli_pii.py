"""`mlops keys` and `mlops pii` as a data-protection officer would use them."""

from __future__ import annotations

import json
import stat
from functools import partial

import duckdb

from tests.conftest import QUARANTINED_CUSTOMER_FILE, QUARANTINED_CUSTOMER_LINE, mlops, mlops_here


def test_keys_init_creates_a_private_keyring_once(tmp_path):
    first = mlops("keys", "init", home=tmp_path)
    assert first.returncode == 0, first.stderr
    keyring = tmp_path / "keys" / "keyring.json"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    again = mlops("keys", "init", home=tmp_path)
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr


def test_first_run_created_the_keyring_and_said_so(pipeline_run, monkeypatch):
    assert any("created a new keyring" in notice for notice in pipeline_run.summary["notices"])
    status = mlops_here("keys", "status", "--json", home=pipeline_run.home, monkeypatch=monkeypatch)
    versions = json.loads(status.stdout)["versions"]
    assert list(versions) == ["1"] and versions["1"] > 1000


def test_reveal_and_forget_one_customer_with_an_audit_trail(pipeline_run, monkeypatch):
    cli = partial(mlops_here, home=pipeline_run.home, monkeypatch=monkeypatch)
    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        key = con.execute("select customer_key from raw.customers order by 1 limit 1").fetchone()[0]

    revealed = cli("pii", "reveal", "--customer", key, "--reason", "ticket 4711", "--json")
    assert revealed.returncode == 0, revealed.stderr
    values = json.loads(revealed.stdout)
    assert values["customer_key"] == key
    assert "@" in values["email"] and values["full_name"]

    forgotten = cli("pii", "forget", "--customer", key)
    assert forgotten.returncode == 0, forgotten.stderr
    again = cli("pii", "reveal", "--customer", key, "--reason", "x")
    assert again.returncode == 1
    assert "no personal data in the vault" in again.stderr

    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        audit = con.execute(
            "select action, reason from audit.pii_access where customer_key = ? order by 1",
            [key],
        ).fetchall()
    assert audit == [("forget", "right to erasure request"), ("reveal", "ticket 4711")]


def test_reveal_requires_a_reason(pipeline_run, monkeypatch):
    result = mlops_here(
        "pii", "reveal", "--customer", "abc", home=pipeline_run.home, monkeypatch=monkeypatch
    )
    assert result.returncode != 0
    assert "--reason" in result.stderr


def test_a_lost_keyring_is_not_silently_replaced(reference_home, tmp_path, monkeypatch):
    home = reference_home.copy(tmp_path / "home")  # a home with data pseudonymised by its keys
    keyring = home / "keys" / "keyring.json"
    keyring.rename(tmp_path / "elsewhere.json")
    result = mlops_here("run", home=home, monkeypatch=monkeypatch)
    assert result.returncode == 2
    assert "restore that keyring" in result.stderr.replace("\n", " ")
    assert not keyring.exists()


def test_a_quarantined_customer_line_is_readable_only_through_the_audited_command(
    reference_home, tmp_path
):
    """The reference run quarantined QUARANTINED_CUSTOMER_LINE: its personal data is nowhere
    in clear in the warehouse, and the audited command gives the line back as it landed."""
    home = reference_home.copy(tmp_path / "home")
    assert QUARANTINED_CUSTOMER_LINE.encode() not in (home / "warehouse.duckdb").read_bytes()
    assert b"grace@example.com" not in (home / "warehouse.duckdb").read_bytes()
    shown = mlops(
        "pii",
        "quarantined-line",
        "--source",
        "customers",
        "--file",
        QUARANTINED_CUSTOMER_FILE,
        "--line",
        str(reference_home.quarantined_line),
        "--reason",
        "fix the feed",
        home=home,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == QUARANTINED_CUSTOMER_LINE
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        audit = con.execute("select action, reason from audit.pii_access").fetchall()
    assert audit == [("reveal_quarantined_line", "fix the feed")]
