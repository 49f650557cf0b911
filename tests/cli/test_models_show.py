"""`mlops models show MODEL [VERSION]`: a verified version's card summary and the path of its
HTML page, rebuilt from model.json when missing; a forged version is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlops_assets.cli import common
from mlops_assets.training.registry import Registry
from tests.cli.conftest import invoke
from tests.training.conftest import forge

MODEL = "default_classifier"
INTENDED = "Ranks applications [bold red]for review[/] \x1b[2J\u202e"  # markup and controls


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setattr(common.out, "_width", 300)  # one line per row


def _register(home, seed: int = 0) -> tuple[Registry, str]:
    registry = Registry(home / "models", home / "keys" / "keyring.json")
    x = np.random.default_rng(seed).normal(size=(40, 2))
    card, _ = registry.register(
        MODEL,
        LogisticRegression().fit(x, np.arange(40) % 2),
        {"candidate": "logistic_l1", "params": {"C": 0.1}, "seed": seed},
        {
            "metrics": {"roc_auc": 0.7949},
            "metric_intervals": {"roc_auc": [0.7806, 0.8098]},
            "card": {"intended_use": INTENDED},
        },
    )
    return registry, card.version


def test_show_prints_the_champions_card_summary_and_the_path_of_its_page(home):
    registry, version = _register(home)
    registry.promote(MODEL, version, reason="first model")
    test = {"metric": "roc_auc", "method": "delong", "difference": 0.01, "ci": [0.0, 0.02],
            "p_value": 0.031, "level": 0.95}  # fmt: skip
    registry.record_verdict(MODEL, version, True, "first model: no champion yet", test=test)
    page = home / "reports" / MODEL / version / "card.html"

    shown = invoke("models", "show", MODEL)
    assert shown.exit_code == 0, shown.output
    assert page.is_file() and (page.parent / "card.md").is_file()  # built: it was missing
    assert f"card: {page}" in shown.stdout.splitlines()
    lines = {line.split()[1]: line for line in shown.stdout.splitlines() if "│" in line}
    assert version in lines["version"] and "yes" in lines["champion"]
    assert "roc_auc 0.7949 [0.7806, 0.8098] (95% interval)" in shown.stdout
    assert "promoted: first model: no champion yet" in shown.stdout
    assert "0.031 (delong test of roc_auc)" in shown.stdout
    assert "fairness" in lines and "not measured" in lines["fairness"]
    # The intended use is data: its markup printed as text, its control characters escaped.
    assert "Ranks applications [bold red]for review[/] \\x1b[2J\\u202e" in shown.stdout
    assert "\x1b" not in shown.stdout

    summary = json.loads(invoke("models", "show", MODEL, version, "--json").stdout)
    assert summary["version"] == version and summary["champion"] == "yes"
    assert summary["intended use"] == INTENDED and summary["card"] == str(page)


def test_show_refuses_a_forged_version_and_an_unknown_one(home):
    registry, version = _register(home)
    forge(registry.root / MODEL / version, b"not a model", metrics={"roc_auc": 0.99})
    shown = invoke("models", "show", MODEL, version)
    assert shown.exit_code == 1 and "does not match its seal" in shown.output
    _, swapped = _register(home, seed=1)  # model.json intact, the artefact replaced
    (registry.root / MODEL / swapped / "model.skops").write_bytes(b"not a model")
    shown = invoke("models", "show", MODEL, swapped)
    assert shown.exit_code == 1 and "modified after registration" in shown.output
    assert not (home / "reports").exists()

    unknown = invoke("models", "show", MODEL, "0123456789abcdef")
    assert unknown.exit_code == 1 and f"{MODEL} has no version 0123456789abcdef" in unknown.output
    assert invoke("models", "show", MODEL, "../../etc").exit_code == 1
    (registry.root / MODEL / version).rename(home / "elsewhere")
    no_champion = invoke("models", "show", MODEL)
    assert no_champion.exit_code == 1 and "has no champion yet" in no_champion.output


def test_show_of_an_undeclared_model_is_a_usage_error(home):
    shown = invoke("models", "show", "no_such_model")
    assert shown.exit_code == 2 and "no model called 'no_such_model'" in shown.output


def test_a_hand_promotion_is_labelled_and_an_unwritable_reports_folder_is_said(home):
    """A champion promoted by hand has no gate verdict: its decision is labelled as the
    promotion history's word (not sealed), never as a verified gate decision; a reports folder
    that cannot be written ends the command with an error naming it, not a traceback."""
    registry, version = _register(home)
    registry.promote(MODEL, version, reason="by hand: regulator asked")
    (home / "reports").write_text("not a folder")
    shown = invoke("models", "show", MODEL)
    assert shown.exit_code == 1 and shown.exception.__class__ is SystemExit
    assert "error:" in shown.output and "reports" in shown.output
    (home / "reports").unlink()
    shown = invoke("models", "show", MODEL)
    assert shown.exit_code == 0, shown.output
    assert "from the promotion history (not sealed): promoted: by hand" in shown.stdout
