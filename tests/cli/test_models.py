"""`mlops models` and `mlops explain` know the models from the catalogue: an undeclared name is a
usage error naming the declared ones, and each model is listed with its own primary metric."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlops_assets import catalogue
from mlops_assets.cli import common
from mlops_assets.training.registry import Registry
from mlops_assets.training.spec import GateSpec
from tests.cli.conftest import invoke


@pytest.mark.parametrize(
    "command",
    [
        ("models", "promote", "no_such_model", "0123456789abcdef", "--reason", "r"),
        ("explain", "APP-1", "--model", "no_such_model"),
    ],
)
def test_an_undeclared_model_is_a_usage_error_naming_the_declared_ones(home, command):
    shown = invoke(*command)
    assert shown.exit_code == 2 and isinstance(shown.exception, SystemExit), shown.output
    assert "no model called 'no_such_model'" in shown.output
    for name in catalogue.models():
        assert name in shown.output
    assert not (home / "models" / "no_such_model").exists()


def test_each_model_is_listed_with_its_own_primary_metric(home, monkeypatch):
    """A classifier that is not the loan default model ranks on its own primary metric (here
    pr_auc), not on rmse because its name is not `default_classifier`."""
    declared = catalogue.models()
    classifier = next(s for s in declared.values() if s.is_classifier)
    churn = replace(classifier, name="churn_model", gate=GateSpec(primary="pr_auc"))
    monkeypatch.setattr(catalogue, "models", lambda: {**declared, churn.name: churn})
    registry = Registry(home / "models", home / "keys" / "keyring.json")
    x = np.random.default_rng(0).normal(size=(40, 2))
    metrics = {"roc_auc": 0.61, "pr_auc": 0.72, "rmse": 0.83, "mae": 0.94}
    for spec in catalogue.models().values():
        registry.register(
            spec.name,
            LogisticRegression().fit(x, np.arange(40) % 2),
            {"candidate": "tiny"},
            {"metrics": metrics, "training_data_version": "t"},
        )
    (home / "models" / "undeclared_model").mkdir()  # a folder no instance declares: not listed

    listed = json.loads(invoke("models", "list", "--json").stdout)
    primary = {row["model"]: row["primary_metric"] for row in listed}
    assert primary == {spec.name: spec.primary for spec in catalogue.models().values()}
    assert primary["churn_model"] == "pr_auc"

    monkeypatch.setattr(common.out, "_width", 200)  # one line per row
    shown = invoke("models", "list")
    assert shown.exit_code == 0, shown.output
    rows = {line.split()[1]: line for line in shown.output.splitlines() if line.count("│") > 2}
    for spec in catalogue.models().values():
        assert f"{spec.primary} {metrics[spec.primary]:.4f}" in rows[spec.name]


def test_explain_without_a_declared_model_says_so(home, monkeypatch):
    monkeypatch.setattr(catalogue, "models", dict)
    shown = invoke("explain", "APP-1")
    assert shown.exit_code == 2 and isinstance(shown.exception, SystemExit), shown.output
    assert "no model is declared" in shown.output
