"""Data reaches the terminal as text: no Rich markup is interpreted, control characters are
shown escaped — in decrypted values, quarantined lines, arguments and paths."""

from __future__ import annotations

import duckdb
import pytest

from mlops_assets.text import printable
from tests.security.conftest import CLEAN, FILE, build_home

NAME = "[/b]Eve [link=https://evil.example]click[/link]\x1b[2J\u202eevil"
HOSTILE = CLEAN.replace("CUS-0000001", "CUS-0000003").replace("Ada Lovelace", NAME)
# Quarantined (dependents is not a number), with an escape sequence that would clear the screen.
HOSTILE_LINE = HOSTILE.replace(",0,", ",\x1b[2Jmany,").replace("CUS-0000003", "CUS-0000004")


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    return build_home(tmp_path / "home", [HOSTILE, HOSTILE_LINE], monkeypatch)


def test_printable_escapes_controls_and_keeps_text():
    assert printable("Ada Lovelace, Zoë 李") == "Ada Lovelace, Zoë 李"
    assert printable("a\x1b[2Jb\tc\nd\\e\u202ef\x00") == "a\\x1b[2Jb\\tc\\nd\\\\e\\u202ef\\x00"


def test_reveal_prints_a_markup_name_as_text_and_escapes_controls(hostile):
    key = hostile.key("CUS-0000003")
    shown = hostile.invoke("pii", "reveal", "--customer", key, "--reason", "ticket 1")
    assert shown.exit_code == 0, shown.output
    assert "[/b]Eve" in shown.output
    assert "[link=https://evil.example]click[/link]" in shown.output
    assert "\\x1b[2J" in shown.output and "\\u202eevil" in shown.output
    assert "\x1b" not in shown.output and "\u202e" not in shown.output
    with duckdb.connect(str(hostile.warehouse), read_only=True) as con:  # audited once
        assert con.execute("select count(*) from audit.pii_access").fetchone()[0] == 1
    # --json gives the exact value (JSON escapes the controls itself).
    exact = hostile.invoke("pii", "reveal", "--customer", key, "--reason", "t", "--json")
    assert exact.exit_code == 0 and "\x1b" not in exact.output and "\\u001b" in exact.output


def test_a_quarantined_line_is_printed_with_its_controls_escaped(hostile):
    shown = hostile.invoke(
        "pii", "quarantined-line", "--source", "customers", "--file", FILE, "--line", "3",
        "--reason", "fix the feed",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\\x1b[2Jmany" in shown.output
    assert "[link=https://evil.example]" in shown.output


def test_an_argument_with_markup_is_shown_not_parsed(hostile):
    refused = hostile.invoke("pii", "reveal", "--customer", "[/x]", "--reason", "r")
    assert refused.exit_code == 1
    assert isinstance(refused.exception, SystemExit)
    assert "no personal data in the vault for customer_key [/x]" in refused.output


def test_a_home_with_markup_in_its_path_works(tmp_path, monkeypatch):
    home = build_home(tmp_path / "we[/b]ird [red]home", [CLEAN], monkeypatch)
    status = home.invoke("keys", "status")
    assert status.exit_code == 0, status.output
    assert "we[/b]ird [red]home" in status.output
    forgotten = home.invoke("pii", "forget", "--customer", home.key("CUS-0000001"))
    assert forgotten.exit_code == 0, forgotten.output
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "no[/b]where"))
    missing = home.invoke("pii", "reveal", "--customer", "x", "--reason", "r")
    assert missing.exit_code == 1 and isinstance(missing.exception, SystemExit)
    assert "no[/b]where" in missing.output


def test_the_run_summary_prints_names_and_findings_as_text(capsys, tmp_path):
    from types import SimpleNamespace

    from mlops_assets.cli.pipeline import print_report

    check = SimpleNamespace(
        passed=False,
        blocking=True,
        asset="raw/customers",
        name="no_direct_identifiers",
        detail="- raw.customers.[/b]\x1b]8;;https://evil.example\x07x: email (1 rows)",
    )
    report = SimpleNamespace(
        notices=["created a new keyring in [/b]home"],
        refused_files=[printable("customers/[/x]\x1b[2J.csv: not a date")],  # as the runner
        ingested_days=["2025-01-01"],
        tables={"raw.customers": 1},
        stage_seconds={"ingestion": 1.0},
        seconds=1.0,
        checks=[check],
        failed_blocking_checks=[check],
        quarantined={"quarantine.customers": 0},
        drifted_days={},
        failed_steps=[],
        log_path=tmp_path / "[/b]run.log",
        ok=False,
        run_id="r1",
    )
    settings = SimpleNamespace(warehouse_path=tmp_path / "w[/i].duckdb", reports_dir=tmp_path)
    print_report(report, settings)
    shown = capsys.readouterr().err
    assert "\x1b" not in shown
    assert "created a new keyring in [/b]home" in shown
    assert "customers/[/x]\\x1b[2J.csv" in shown
    assert "raw.customers.[/b]\\x1b]8;;https://evil.example\\x07x" in shown
