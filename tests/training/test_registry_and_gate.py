"""Registry: content versions, verified loads, promotions; the gate; scoring with a shadow."""

import json
import os
import shutil
import subprocess
from dataclasses import replace
from functools import partial
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from mlops_assets import catalogue
from mlops_assets.cli import app
from mlops_assets.features.validation import FEATURE_TABLE
from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.registry import Registry, RegistryError
from mlops_assets.training.scoring import score_model
from mlops_assets.training.significance import PairedTest
from mlops_assets.training.trainer import TrainingConfig, gate, train_model, trained_before
from tests.conftest import BIN, mlops_here
from tests.training.conftest import (
    feature_warehouse,
    forge,
    home_registry,
    register_tiny,
    skip_robustness_and_shap,
    skops_call,
)

# The classifier's declaration with its two quickest candidates: what is registered, verified,
# gated and promoted does not depend on which candidates were searched (the search's own tests
# search them all), and a training takes 0.3 s instead of 4.7.
CLASSIFIER = replace(
    catalogue.model("default_classifier"), candidates=("logistic_l1", "logistic_l2")
)
REGRESSOR = catalogue.model("loss_regressor")
FAST = TrainingConfig(folds=2, bootstrap_rounds=20)
SECOND = TrainingConfig(folds=2, bootstrap_rounds=20, seed=1)  # another seed: another version


@pytest.fixture(autouse=True, scope="module")
def _no_robustness_or_shap(features_con):
    """Nothing here reads a version's robustness scenarios or SHAP values (the model card's and
    the explanations' tests do): the trainings here skip them."""
    columns = load_training_data(features_con, CLASSIFIER).spec.columns
    with pytest.MonkeyPatch.context() as patched:
        skip_robustness_and_shap(patched, columns)
        yield


@pytest.fixture(scope="module")
def trained(features_con, tmp_path_factory):
    registry = home_registry(tmp_path_factory.mktemp("home"))
    data = load_training_data(features_con, CLASSIFIER)
    first = train_model(data, registry, FAST)
    return registry, data, first


@pytest.fixture(scope="module")
def challenged(trained):
    """The registry with a second version (whatever the gate decided on it); registered once
    per worker, whichever test asks first."""
    registry, data, first = trained
    second = train_model(data, registry, SECOND)
    assert second.card.version != first.card.version
    return trained


def test_first_model_becomes_champion_with_a_complete_card(trained):
    registry, data, first = trained
    assert first.new and first.decision.promoted
    assert registry.champion("default_classifier") == first.card.version
    card = first.card.data
    for key in ("version", "params", "metrics", "signature", "training_data_version",
                "code_version", "libraries", "seed", "created_at", "sha256"):  # fmt: skip
        assert key in card
    assert card["signature"]["features"] == data.spec.columns
    # Lineage names what measured its fairness and explained it, beside what fitted it.
    assert {"scikit-learn", "fairlearn", "shap"} <= set(card["libraries"])
    assert set(card["metrics"]) == {
        "accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "brier", "log_loss"
    }  # fmt: skip
    low, high = card["metric_intervals"]["roc_auc"]
    assert low <= card["metrics"]["roc_auc"] <= high


def test_same_data_config_and_seed_add_no_version(trained, features_con):
    registry, data, first = trained
    # What `models/*` checks before searching: this data and config were trained on before.
    assert trained_before(registry, data, FAST, None).version == first.card.version
    assert (
        trained_before(registry, data, TrainingConfig(folds=3, bootstrap_rounds=20), None) is None
    )
    fewer = replace(data, version="another-training-data-version")
    assert trained_before(registry, fewer, FAST, None) is None
    registered = len(registry.versions("default_classifier"))
    again = train_model(data, registry, FAST)
    assert not again.new and again.card.version == first.card.version
    assert len(registry.versions("default_classifier")) == registered
    if trained_before(registry, data, SECOND, None) is None:  # `challenged` may have trained it
        assert train_model(data, registry, SECOND).new
    assert trained_before(registry, data, SECOND, None).version != first.card.version


def test_a_modified_model_file_is_refused(trained, tmp_path):
    registry, _, first = trained
    copy = Registry(tmp_path, registry.keyring_path)
    source = registry.root / "default_classifier" / first.card.version
    target = tmp_path / "default_classifier" / first.card.version
    shutil.copytree(source, target)
    assert copy.load("default_classifier", first.card.version) is not None
    with (target / "model.skops").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(RegistryError, match="modified after registration"):
        copy.load("default_classifier", first.card.version)


def test_gate_needs_the_margin_a_significant_gain_and_respects_the_guards():
    config = TrainingConfig(margin=0.01, guard_tolerance=0.005)
    significant = PairedTest("roc_auc", "delong", 0.02, (0.01, 0.03), 0.001)
    champion = {"roc_auc": 0.80, "pr_auc": 0.40, "brier": 0.12, "log_loss": 0.40}
    assert gate(CLASSIFIER, champion, None, config)[0]
    assert not gate(CLASSIFIER, {**champion, "roc_auc": 0.805}, champion, config, significant)[0]
    assert gate(CLASSIFIER, {**champion, "roc_auc": 0.82}, champion, config, significant)[0]
    for test in (None, replace(significant, p_value=0.2)):  # no test, or not significant
        promoted, reason = gate(CLASSIFIER, {**champion, "roc_auc": 0.82}, champion, config, test)
        assert not promoted and "not significant at 0.05" in reason
    worse_brier = {**champion, "roc_auc": 0.82, "brier": 0.13}
    promoted, reason = gate(CLASSIFIER, worse_brier, champion, config, significant)
    assert not promoted and "brier" in reason
    regressor = {"rmse": 100.0, "mae": 80.0, "r2": 0.3}
    rmse = PairedTest("rmse", "paired_bootstrap", 10.0, (5.0, 15.0), 0.005)
    assert gate(REGRESSOR, {**regressor, "rmse": 90.0}, regressor, config, rmse)[0]
    assert not gate(REGRESSOR, {**regressor, "rmse": 99.5}, regressor, config, rmse)[0]


def test_the_challenger_is_gated_on_the_champion_s_scores_of_the_same_holdout(challenged):
    """What train_model's gate recorded on the second version: DeLong's test against the
    champion evaluated on the same holdout rows, and the fairness comparison."""
    registry, _, first = challenged
    [second] = [
        c for c in registry.versions("default_classifier") if c.version != first.card.version
    ]
    verdict = registry.verdict("default_classifier", second.version)
    test = verdict["test"]
    assert test["method"] == "delong" and test["metric"] == "roc_auc" and test["level"] == 0.95
    assert test["difference"] == pytest.approx(
        second.metrics["roc_auc"] - first.card.metrics["roc_auc"]
    )
    assert test["ci"][0] <= test["difference"] <= test["ci"][1] and 0 <= test["p_value"] <= 1
    assert isinstance(verdict["fairness"]["worse"], list)
    # The champion it was gated against, with its metrics on that holdout (what the model
    # asset shows as "champion before"): the first version, evaluated on the same rows.
    assert verdict["champion"] == {"version": first.card.version, "metrics": first.card.metrics}
    by_gate = [
        e for e in registry.history("default_classifier")
        if e["to_version"] == second.version and e["by"] == "champion/challenger gate"
    ]  # fmt: skip
    assert verdict["promoted"] == bool(by_gate)


def test_scores_trace_to_the_champion_and_the_challenger_runs_in_shadow(challenged, features_con):
    registry, _, _ = challenged
    champion = registry.champion("default_classifier")
    report = score_model(features_con, registry, CLASSIFIER)
    rows = dict(
        features_con.execute(
            f"select mode, count(*) from {CLASSIFIER.scores} group by 1"
        ).fetchall()
    )
    features = features_con.execute("select count(*) from features.loan_features").fetchall()[0][0]
    assert rows == {"champion": features, "shadow": features}
    versions = dict(
        features_con.execute(
            f"select mode, any_value(model_version) from {CLASSIFIER.scores} group by 1"
        ).fetchall()
    )
    assert versions["champion"] == champion and versions["shadow"] == report.challenger != champion
    assert set(report.ab) == {"champion", "shadow"} and report.ab["champion"]["labelled"] > 0
    bad = features_con.execute(
        f"select count(*) from {CLASSIFIER.scores} where not (score between 0 and 1)"
    ).fetchall()[0][0]
    assert bad == 0


def test_cli_lists_and_promotes_with_a_reason(challenged):
    registry, _, _ = challenged
    champion = registry.champion("default_classifier")  # whichever the gate left in place
    duckdb.connect(str(registry.root.parent / "warehouse.duckdb")).close()  # a built home
    env = {**os.environ, "MLOPS_HOME": str(registry.root.parent)}
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(BIN / "mlops"), "models", *args], env=env, capture_output=True, text=True, timeout=120
    )
    listed = json.loads(run("list", "--json").stdout)
    assert {"model", "version", "is_champion", "sealed", "metrics", "training_data_version",
            "created_at"} <= set(listed[0])  # fmt: skip
    assert all(r["sealed"] for r in listed)
    other = next(r["version"] for r in listed if not r["is_champion"])
    promoted = run("promote", "default_classifier", other, "--reason", "manual review")
    assert promoted.returncode == 0, promoted.stderr
    assert registry.champion("default_classifier") == other
    last = registry.history("default_classifier")[-1]
    assert last["reason"] == "manual review" and last["from_version"] == champion
    assert last["metrics_before"] == registry.card("default_classifier", champion).data["metrics"]
    unknown = run("promote", "default_classifier", "0123456789abcdef", "--reason", "x")
    assert unknown.returncode == 1 and "no version 0123456789abcdef" in unknown.stderr


def test_scoring_without_a_champion_skips_instead_of_failing(tmp_path):
    """A new deployment: the daily pipeline runs before the first training."""
    import dagster as dg

    from mlops_assets.resources import DaskResource, RegistryResource, WarehouseResource
    from mlops_assets.training.assets import build_scores_asset

    result = dg.materialize(
        [build_scores_asset(CLASSIFIER)],
        resources={
            "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
            "registry": RegistryResource(
                path=str(tmp_path / "models"),
                keyring_path=str(tmp_path / "keyring.json"),
                reports_path=str(tmp_path / "reports"),
            ),
            "dask": DaskResource(),
        },
    )
    assert result.success
    assert result.asset_materializations_for_node("predictions__loan_default_scores") == []


def test_a_version_registered_by_a_run_that_died_before_the_gate_is_gated_next_run(
    features_con, tmp_path, monkeypatch
):
    from mlops_assets.training import trainer
    from mlops_assets.training.trainer import settle

    registry = home_registry(tmp_path)
    data = load_training_data(features_con, CLASSIFIER)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # the process ends between registering and deciding

    with monkeypatch.context() as patched:
        patched.setattr(trainer, "_decide", dies)
        with pytest.raises(KeyboardInterrupt):
            train_model(data, registry, FAST)
    card = trained_before(registry, data, FAST, None)
    assert card is not None and registry.champion("default_classifier") is None
    assert registry.verdict("default_classifier", card.version) is None
    decision = settle(registry, data, card, FAST)
    assert decision.promoted and registry.champion("default_classifier") == card.version
    assert registry.verdict("default_classifier", card.version)["promoted"] is True
    assert settle(registry, data, card, FAST) is None  # decided once
    again = train_model(data, registry, FAST)  # same data: registered, decided, unchanged
    assert not again.new and not again.decision.promoted
    assert len(registry.history("default_classifier")) == 1


def _home_copy(registry: Registry, tmp_path) -> tuple[Path, Registry]:
    """A copy of the fixture's $MLOPS_HOME (models and keyring) to tamper with."""
    home = tmp_path / "home"
    shutil.copytree(registry.root.parent, home)
    return home, Registry(home / "models", home / "keys" / "keyring.json")


def _forge_champion(registry: Registry, marker: Path) -> Path:
    """Replace the champion's model file with one that runs code on load, its sha256 recomputed
    in model.json (all an attacker who can write the registry, but has no key, can do)."""
    folder = registry.root / "default_classifier" / registry.champion("default_classifier")
    forge(folder, skops_call("builtins", "exec", f"open({str(marker)!r}, 'w').close()"))
    return folder / "model.json"


def test_cli_promote_takes_only_a_version_of_that_model(trained, tmp_path, monkeypatch):
    registry, _, _ = trained
    home, copy = _home_copy(registry, tmp_path)
    cli = partial(mlops_here, home=home, monkeypatch=monkeypatch)
    regressor = register_tiny(copy, "loss_regressor")
    champion = copy.champion("default_classifier")
    promote = ("models", "promote", "default_classifier")
    outside = cli(*promote, f"../loss_regressor/{regressor}", "--reason", "careless")
    assert outside.returncode == 1, outside.stderr
    assert "is not a version of default_classifier" in outside.stderr
    other = cli(*promote, regressor, "--reason", "x")
    assert other.returncode == 1 and f"no version {regressor}" in other.stderr
    assert copy.champion("default_classifier") == champion
    markup = cli(*promote, champion, "--reason", "[/b]")
    assert markup.returncode == 0, markup.stderr
    assert "[/b]" in markup.stderr and copy.history("default_classifier")[-1]["reason"] == "[/b]"


def test_explain_prints_data_as_text_and_refuses_a_forged_model(trained, tmp_path, monkeypatch):
    registry, _, _ = trained
    home, copy = _home_copy(registry, tmp_path)
    con = feature_warehouse(rows=300, database=str(home / "warehouse.duckdb"))
    con.execute(
        f"insert into {FEATURE_TABLE} select * replace ('[/x]' as application_id, "
        f"chr(27) || '[2J[/b]' as purpose) from {FEATURE_TABLE} limit 1"
    )
    con.close()
    cli = partial(mlops_here, home=home, monkeypatch=monkeypatch)
    shown = cli("explain", "[/x]")
    assert shown.returncode == 0, shown.stderr
    assert "[/x] scored" in shown.stdout
    # SHAP contributions that add up; a value is shown escaped, as text.
    assert "adds up" in shown.stdout and "DOES NOT" not in shown.stdout
    assert "\\x1b[2J[/b]" in shown.stdout and "\x1b" not in shown.stdout
    as_json = json.loads(cli("explain", "[/x]", "--json").stdout)
    assert as_json["additivity_error"] < 1e-6
    assert as_json["expected_value"] + sum(
        c["contribution"] for c in as_json["contributions"]
    ) == pytest.approx(as_json["output"], abs=1e-6)
    missing = cli("explain", "[/y]")
    assert missing.returncode == 1 and "no row with application_id [/y]" in missing.stderr
    marker = tmp_path / "payload-ran"
    card = _forge_champion(copy, marker)
    refused = cli("explain", "[/x]")
    assert refused.returncode == 1
    assert f"{card} does not match its seal" in refused.stderr
    assert not marker.exists()
    listed = json.loads(cli("models", "list", "--json").stdout)
    assert [r["sealed"] for r in listed if r["is_champion"]] == [False]
    assert all(r["sealed"] for r in listed if not r["is_champion"])


def test_a_forged_model_fails_scoring_and_keeps_the_previous_scores(
    challenged, features_con, tmp_path
):
    import dagster as dg

    from mlops_assets.resources import DaskResource, RegistryResource, WarehouseResource
    from mlops_assets.training.assets import build_scores_asset

    registry, _, _ = challenged
    home, copy = _home_copy(registry, tmp_path)
    score_model(features_con, copy, CLASSIFIER)
    scores = (
        f"select mode, model_version, count(*), sum(score) from {CLASSIFIER.scores} group by all"
    )
    before = sorted(features_con.execute(scores).fetchall())
    marker = tmp_path / "payload-ran"
    card = _forge_champion(copy, marker)
    with pytest.raises(RegistryError, match=f"{card} does not match its seal"):
        score_model(features_con, copy, CLASSIFIER)
    assert sorted(features_con.execute(scores).fetchall()) == before
    # In a run, the scoring step fails (so `mlops run` does not report success).
    feature_warehouse(rows=300, database=str(home / "warehouse.duckdb")).close()
    result = dg.materialize(
        [build_scores_asset(CLASSIFIER)],
        resources={
            "warehouse": WarehouseResource(path=str(home / "warehouse.duckdb")),
            "registry": RegistryResource(
                path=str(copy.root),
                keyring_path=str(copy.keyring_path),
                reports_path=str(home / "reports"),
            ),
            "dask": DaskResource(),
        },
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "does not match its seal" in failure.step_failure_data.error.cause.message
    assert not marker.exists()


def _attack(registry: Registry, version: str, tmp_path: Path) -> None:
    """What an attacker who can write the registry, but has no key, does to ``version``: a
    model of trusted types that predicts one class, its sha256 recomputed, metrics faked, the
    seal deleted."""
    import skops.io as sio
    from sklearn.dummy import DummyClassifier

    dummy = tmp_path / "dummy.skops"
    sio.dump(DummyClassifier(strategy="constant", constant=0).fit([[0], [1]], [0, 1]), dummy)
    folder = registry.root / "default_classifier" / version
    card = forge(folder, dummy.read_bytes(), metrics={"roc_auc": 0.99})
    del card["seal"]
    (folder / "model.json").write_text(json.dumps(card))


def test_a_tampered_version_is_retrained_and_replaced_by_the_genuine_one(trained, tmp_path):
    registry, data, first = trained
    _, copy = _home_copy(registry, tmp_path)
    version = first.card.version
    # The first version is champion whatever other tests of the shared registry promoted.
    if copy.champion("default_classifier") != version:
        copy.promote("default_classifier", version, reason="the version this test attacks")
    _attack(copy, version, tmp_path)
    with pytest.raises(RegistryError, match="is not sealed"):
        copy.load("default_classifier", version)
    # Not "trained on the same data before": the models asset retrains.
    assert trained_before(copy, data, FAST, None) is None
    again = train_model(data, copy, FAST)
    assert again.new and again.card.version == version
    assert again.decision.reason.startswith("already champion; its refused files were replaced")
    assert copy.champion("default_classifier") == version
    assert type(copy.load("default_classifier", version)).__name__ != "DummyClassifier"
    assert copy.card("default_classifier", version).metrics == first.card.metrics
    assert trained_before(copy, data, FAST, None).version == version


def test_an_unverifiable_champion_is_gated_as_absent(trained, tmp_path):
    registry, data, first = trained
    _, copy = _home_copy(registry, tmp_path)
    champion = copy.champion("default_classifier")
    _attack(copy, champion, tmp_path)
    # Another version than the champion (`challenged` may have promoted SECOND before this).
    other = SECOND if champion == first.card.version else FAST
    outcome = train_model(data, copy, other)  # the champion is refused
    assert outcome.card.version != champion
    decision = outcome.decision
    assert decision.promoted and decision.champion_refused and decision.champion_metrics is None
    assert decision.reason.startswith(f"champion {champion} gated as absent, it does not verify")
    assert copy.champion("default_classifier") == outcome.card.version
    event = copy.history("default_classifier")[-1]
    assert event["from_version"] == champion and event["metrics_before"] is None


def test_the_models_cli_refuses_an_empty_reason_a_home_without_warehouse_and_odd_metrics(
    trained, tmp_path, monkeypatch
):
    registry, _, first = trained
    home, copy = _home_copy(registry, tmp_path)
    (home / "warehouse.duckdb").unlink(missing_ok=True)
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.delenv("MLOPS_KEYRING", raising=False)
    invoke = lambda *args: CliRunner().invoke(app, list(args))  # noqa: E731
    history = copy.history("default_classifier")
    for reason in ("", "  \t"):
        shown = invoke("models", "promote", "default_classifier", first.card.version,
                       "--reason", reason)  # fmt: skip
        assert shown.exit_code == 2 and "--reason" in shown.output, shown.output
    assert copy.history("default_classifier") == history
    missing = invoke("models", "list")
    assert missing.exit_code == 1 and isinstance(missing.exception, SystemExit)
    assert f"no warehouse at {home / 'warehouse.duckdb'}" in missing.output
    duckdb.connect(str(home / "warehouse.duckdb")).close()
    path = home / "models" / "default_classifier" / first.card.version / "model.json"
    for metrics in ([0.9], "0.9", None, 3):
        path.write_text(json.dumps({**json.loads(path.read_text()), "metrics": metrics}))
        shown = invoke("models", "list")
        assert shown.exit_code == 0 and shown.exception is None, shown.output
        listed = json.loads(invoke("models", "list", "--json").stdout)
        [row] = [r for r in listed if r["version"] == first.card.version]
        assert row["metrics"] == {} and row["sealed"] is False


def test_a_damaged_gate_or_promotion_history_is_refused_naming_the_file(tmp_path):
    registry = home_registry(tmp_path)
    version = register_tiny(registry)
    registry.promote("default_classifier", version, reason="first")
    gate_file = registry.root / "default_classifier" / version / "gate.json"
    for content in (b"{", b"[]", b"\xff"):
        gate_file.write_bytes(content)
        with pytest.raises(RegistryError, match=f"{gate_file} is not"):
            registry.verdict("default_classifier", version)
    gate_file.unlink()
    assert registry.verdict("default_classifier", version)["promoted"] is True
    history = registry.root / "default_classifier" / "promotions.jsonl"
    good = history.read_text()
    for line in ("{", "[1]", "7"):
        history.write_text(good + line + "\n")
        with pytest.raises(RegistryError, match=f"{history} line 2 is not"):
            registry.history("default_classifier")
        with pytest.raises(RegistryError, match=f"{history} line 2 is not"):
            registry.verdict("default_classifier", version)
    history.write_bytes(good.encode() + b"\xff\n")
    with pytest.raises(RegistryError, match=f"{history} is not text"):
        registry.history("default_classifier")
