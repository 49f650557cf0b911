"""The champion/challenger gate's significance test and fairness comparison, the paired tests
themselves (DeLong, paired bootstrap), gate.json read back as untrusted, and the live A/B
comparison with its interval and p-value."""

import json
from dataclasses import replace
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mean_squared_error, roc_auc_score

from mlops_assets import catalogue
from mlops_assets.training.candidates import build_pipeline
from mlops_assets.training.dataset import FeatureSpec
from mlops_assets.training.fairness import measure_fairness
from mlops_assets.training.metrics import (
    bootstrap_weights,
    classification_metrics,
    regression_metrics,
)
from mlops_assets.training.model_card import sections, summary, to_markdown
from mlops_assets.training.registry import ModelCard
from mlops_assets.training.scoring import ab_comparison
from mlops_assets.training.significance import (
    delong_components,
    delong_test,
    paired_bootstrap_test,
)
from mlops_assets.training.spec import ModelSpec
from mlops_assets.training.trainer import (
    Champion,
    TrainingConfig,
    _champion_input,
    _decide,
    gate,
)
from tests.training.conftest import home_registry, register_tiny


def _scores(rows: int, seed: int, noise: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Labels and two models' scores of the same rows: one hidden signal, each model seeing
    it through its own independent noise (``noise``: champion's, challenger's scale)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    y = (signal + rng.normal(size=rows) > 1.0).astype(int)
    champion, challenger = (
        1 / (1 + np.exp(-(signal + rng.normal(scale=scale, size=rows)))) for scale in noise
    )
    return y, champion, challenger


def _slow_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong et al. (1988) by definition: psi(positive, negative) = 1 above, 1/2 tied, 0
    below, over every pair; V10 and V01 are its row and column means."""
    psi = [
        (p[:, None] > n[None, :]) + 0.5 * (p[:, None] == n[None, :])
        for p, n in ((s[y == 1], s[y == 0]) for s in scores)
    ]
    return (
        np.array([x.mean() for x in psi]),
        np.array([x.mean(axis=1) for x in psi]),
        np.array([x.mean(axis=0) for x in psi]),
    )


def test_delong_agrees_with_its_definition_and_scikit_learn():
    y, champion, challenger = _scores(120, seed=3, noise=(0.8, 0.6))
    champion = np.round(champion, 1)  # ties, within a model and across the classes
    scores = np.vstack([champion, challenger])
    auc, v10, v01 = delong_components(y, scores)
    slow_auc, slow_v10, slow_v01 = _slow_delong(y, scores)
    np.testing.assert_allclose(auc, slow_auc, atol=1e-12)
    np.testing.assert_allclose(auc, [roc_auc_score(y, s) for s in scores], atol=1e-12)
    np.testing.assert_allclose(v10, slow_v10, atol=1e-12)
    np.testing.assert_allclose(v01, slow_v01, atol=1e-12)
    # The variance of the difference and the one-sided p-value, from the slow components.
    covariance = np.cov(slow_v10) / slow_v10.shape[1] + np.cov(slow_v01) / slow_v01.shape[1]
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = slow_auc[1] - slow_auc[0]
    test = delong_test(y, champion, challenger)
    assert test.method == "delong" and test.metric == "roc_auc"
    assert test.difference == pytest.approx(difference, abs=1e-12)
    assert test.p_value == pytest.approx(stats.norm.sf(difference / np.sqrt(variance)), rel=1e-9)
    half = 1.959963984540054 * np.sqrt(variance)
    assert test.ci == pytest.approx((difference - half, difference + half), rel=1e-9)
    # Swapping the models mirrors the test.
    swapped = delong_test(y, challenger, champion)
    assert swapped.difference == pytest.approx(-difference)
    assert swapped.p_value == pytest.approx(1 - test.p_value)


def test_delong_of_identical_or_one_class_scores_gives_no_evidence():
    y, champion, _ = _scores(200, seed=4, noise=(0.5, 0.5))
    same = delong_test(y, champion, champion)
    assert same.difference == 0 and same.p_value == 1.0 and not same.significant(0.05)
    one_class = delong_test(np.zeros(50), champion[:50], champion[:50])
    assert np.isnan(one_class.p_value) and not one_class.significant(0.05)
    assert one_class.as_dict()["p_value"] is None and one_class.as_dict()["ci"] == [None, None]


def test_the_paired_bootstrap_scores_both_models_on_the_same_resamples():
    rng = np.random.default_rng(5)
    y = rng.normal(100, 20, size=300)
    champion = y + rng.normal(0, 10, size=300)
    challenger = y + rng.normal(0, 8, size=300)
    test = paired_bootstrap_test("rmse", y, champion, challenger, rounds=50, seed=7)
    # By hand: each resample's rows, both models' RMSE on them; lower RMSE = positive gain.
    weights = bootstrap_weights(300, rounds=50, seed=7).astype(int)
    gains = []
    for counts in weights:
        rows = np.repeat(np.arange(300), counts)
        gains.append(
            np.sqrt(mean_squared_error(y[rows], champion[rows]))
            - np.sqrt(mean_squared_error(y[rows], challenger[rows]))
        )
    expected = np.sqrt(mean_squared_error(y, champion)) - np.sqrt(mean_squared_error(y, challenger))
    assert test.method == "paired_bootstrap" and test.difference == pytest.approx(expected)
    assert test.ci == pytest.approx(tuple(np.percentile(gains, [2.5, 97.5])))
    assert test.p_value == pytest.approx((np.sum(np.array(gains) <= 0) + 1) / 51)
    same = paired_bootstrap_test("rmse", y, champion, champion, rounds=50, seed=7)
    assert same.difference == 0 and same.ci == (0, 0) and same.p_value == 1.0
    # A classification metric at each model's own threshold.
    labels, low, high = _scores(400, seed=8, noise=(1.0, 0.3))
    f1 = paired_bootstrap_test("f1", labels, low, high, thresholds=(0.3, 0.4), rounds=50, seed=7)
    assert f1.difference > 0 and f1.ci[0] <= f1.difference <= f1.ci[1]


# --- gate.json, read back ---------------------------------------------------------------


def test_gate_json_records_the_test_and_reads_odd_details_as_none(tmp_path):
    registry = home_registry(tmp_path)
    version = register_tiny(registry)
    test = delong_test(*_scores(300, seed=9, noise=(0.8, 0.4))).as_dict()
    champion = {"version": "0123456789abcdef", "metrics": {"roc_auc": 0.7}}
    registry.record_verdict(
        "default_classifier",
        version,
        False,
        "r",
        test=test,
        fairness={"worse": ["age_band: x"]},
        champion=champion,
    )
    verdict = registry.verdict("default_classifier", version)
    assert verdict["test"] == test and verdict["fairness"] == {"worse": ["age_band: x"]}
    assert verdict["champion"] == champion
    assert set(verdict) == {"promoted", "reason", "at", "test", "fairness", "champion", "sealed"}
    assert verdict["sealed"] is True
    path = registry.root / "default_classifier" / version / "gate.json"
    for test_value, fairness, against in (
        ([1, 2], "worse", "0123456789abcdef"),
        ("delong", {"worse": "age_band"}, {"version": 7}),
        ({**test, "ci": "[0, 1]"}, {"worse": [1]}, {"metrics": {"roc_auc": 0.7}}),
        ({**test, "p_value": "0.01"}, {"worse": None}, [1]),
        ({**test, "method": "<script>"}, [], None),
        ({**test, "ci": [0.1]}, 7, {"version": None}),
        ({**test, "level": True}, {"better": []}, 3),
    ):
        path.write_text(json.dumps({"promoted": "yes", "reason": [1], "at": 3,
                                    "test": test_value, "fairness": fairness,
                                    "champion": against}))  # fmt: skip
        assert registry.verdict("default_classifier", version) == {
            "promoted": None, "reason": None, "at": None, "test": None, "fairness": None,
            "champion": None, "sealed": False,
        }  # fmt: skip
    # A champion's metrics not of the shape the gate writes read as None, its version kept.
    path.write_text(json.dumps({"champion": {"version": "v", "metrics": {"roc_auc": "0.9"}}}))
    assert registry.verdict("default_classifier", version)["champion"] == {
        "version": "v", "metrics": None
    }  # fmt: skip
    path.write_text(json.dumps({"promoted": True, "reason": "first model"}))  # before the test
    assert registry.verdict("default_classifier", version)["test"] is None


def test_a_forged_or_copied_gate_json_reads_as_unsealed_and_the_card_says_unverified(tmp_path):
    """gate.json is sealed apart from model.json: a verdict written in by hand (a p-value and a
    promotion that never happened), one edited, or one copied from another version, reads with
    ``sealed`` False, and the card and its summary call it unverified."""
    registry = home_registry(tmp_path)
    version = register_tiny(registry)
    other = register_tiny(registry, seed=1)
    test = delong_test(*_scores(300, seed=9, noise=(0.8, 0.4))).as_dict()
    registry.record_verdict("default_classifier", version, False, "not significant", test=test)
    recorded = registry.verdict("default_classifier", version)
    assert recorded["sealed"] is True
    card = registry.verified_card("default_classifier", version).data
    assert "UNVERIFIED" not in to_markdown("t", sections(card, recorded))
    assert not any("UNVERIFIED" in v for _, v in summary(card, recorded))
    path = registry.root / "default_classifier" / version / "gate.json"
    genuine = json.loads(path.read_text())
    forged = {**genuine, "promoted": True, "test": {**test, "p_value": 1e-9}}
    path.write_text(json.dumps(forged))  # the genuine seal, kept over changed fields
    claimed = registry.verdict("default_classifier", version)
    assert claimed["sealed"] is False and claimed["test"]["p_value"] == 1e-9
    assert "UNVERIFIED" in to_markdown("t", sections(card, claimed))
    shown = dict(summary(card, claimed))
    assert shown["gate decision"].startswith("UNVERIFIED") and shown["p-value"].startswith(
        "UNVERIFIED"
    )
    del forged["seal"]
    path.write_text(json.dumps(forged))  # no seal at all
    assert registry.verdict("default_classifier", version)["sealed"] is False
    registry.record_verdict("default_classifier", other, True, "first model")
    copied = (registry.root / "default_classifier" / other / "gate.json").read_text()
    path.write_text(copied)  # another version's sealed verdict
    assert registry.verdict("default_classifier", version)["sealed"] is False
    assert registry.verdict("default_classifier", other)["sealed"] is True
    # model.json's seal never passes for a verdict, nor the reverse (another domain).
    path.write_text(json.dumps({**genuine, "seal": card["seal"]}))
    assert registry.verdict("default_classifier", version)["sealed"] is False


# --- the live A/B comparison -------------------------------------------------------------

TOY_CLASSIFIER = ModelSpec(
    name="toy", task="classification", table="shop.apps", id_column="id", time_column="at",
    target="bad", scores_table="predictions.scores",
)  # fmt: skip
TOY_REGRESSOR = replace(TOY_CLASSIFIER, task="regression", target="loss")


def _warehouse(target: str, y: np.ndarray, champion: np.ndarray, shadow: np.ndarray):
    """A small warehouse: ``shop.apps`` (every fifth row not labelled yet) and both models'
    scores of every row in ``predictions.scores``, the shadow's written in another order."""
    rows = len(y)
    ids = np.array([f"a{i:04d}" for i in range(rows)])
    labelled = np.arange(rows) % 5 != 0
    order = np.random.default_rng(12).permutation(rows)
    con = duckdb.connect()
    con.execute("create schema shop; create schema predictions")
    con.register("apps", pd.DataFrame({"id": ids, target: y, "labelled": labelled}))
    con.execute(
        f"create table shop.apps as select id, case when labelled then {target} end as {target} "
        "from apps"
    )
    scores = pd.DataFrame(
        {
            "id": np.r_[ids, ids[order]],
            "score": np.r_[champion, shadow[order]],
            "mode": ["champion"] * rows + ["shadow"] * rows,
        }
    )
    con.register("scores", scores)
    con.execute("create table predictions.scores as select * from scores")
    return con, labelled


def test_the_live_ab_comparison_gives_the_paired_difference_its_interval_and_p_value():
    y, champion, shadow = _scores(600, seed=11, noise=(0.9, 0.4))
    con, labelled = _warehouse("bad", y, champion, shadow)
    ab = ab_comparison(con, TOY_CLASSIFIER)
    y, champion, shadow = y[labelled], champion[labelled], shadow[labelled]
    assert ab["champion"] == {
        "labelled": 480, "metric": "roc_auc", "value": pytest.approx(roc_auc_score(y, champion))
    }  # fmt: skip
    assert ab["shadow"]["value"] == pytest.approx(roc_auc_score(y, shadow))
    # Paired by id (the shadow's rows were written in another order).
    assert ab["shadow"]["test"] == pytest.approx(delong_test(y, champion, shadow).as_dict())
    assert ab["shadow"]["test"]["p_value"] < 0.05 and ab["shadow"]["test"]["difference"] > 0
    low, high = ab["shadow"]["test"]["ci"]
    assert low < ab["shadow"]["test"]["difference"] < high

    rng = np.random.default_rng(13)
    loss = rng.gamma(2, 500, 600)
    con, labelled = _warehouse(
        "loss", loss, loss + rng.normal(0, 300, 600), loss + rng.normal(0, 310, 600)
    )
    ab = ab_comparison(con, TOY_REGRESSOR)
    test = ab["shadow"]["test"]
    assert ab["champion"]["metric"] == "rmse" and test["method"] == "paired_bootstrap"
    assert test["difference"] == pytest.approx(ab["champion"]["value"] - ab["shadow"]["value"])
    assert test["ci"][0] < 0 < test["ci"][1] and test["p_value"] > 0.05  # no real difference


# --- the gate ---------------------------------------------------------------------------

CLASSIFIER = catalogue.model("default_classifier")
REGRESSOR = catalogue.model("loss_regressor")
NO_GUARDS = replace(CLASSIFIER, gate=replace(CLASSIFIER.gate, guards=()))
THRESHOLD = 0.5


def test_a_challenger_better_by_noise_only_is_rarely_promoted_a_truly_better_one_is():
    """Champion and challenger see the same signal through independent noise of the same size:
    a margin alone promoted every one that was luckier on the holdout; the paired test promotes
    about as many as its level allows. One that sees the signal through less noise is."""
    config = TrainingConfig.for_model(NO_GUARDS)

    def gated(seed: int, noise: tuple[float, float]) -> tuple[bool, str]:
        y, champion, challenger = _scores(2000, seed, noise)
        auc = lambda s: {"roc_auc": roc_auc_score(y, s)}  # noqa: E731
        return gate(
            NO_GUARDS, auc(challenger), auc(champion), config, delong_test(y, champion, challenger)
        )

    noise_only = [gated(seed, (0.6, 0.6)) for seed in range(100)]
    promoted = sum(p for p, _ in noise_only)
    past_the_margin = promoted + sum("not significant" in reason for _, reason in noise_only)
    assert past_the_margin >= 25 and promoted <= 8, (past_the_margin, promoted)
    better = [gated(seed, (0.9, 0.3)) for seed in range(10)]
    assert all(p for p, _ in better), better
    assert "significant at 0.05 (DeLong p = " in better[0][1]


def _register(registry, seed: int, metrics: dict, fairness: dict | None, threshold=THRESHOLD):
    """A version of default_classifier with these holdout metrics, threshold and fairness."""
    estimator = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    details = {"metrics": metrics, "threshold": threshold, "fairness": fairness}
    card, _ = registry.register("default_classifier", estimator, {"seed": seed}, details)
    return card


def _decided(tmp_path, y, champion, challenger, groups=None, spec=CLASSIFIER):
    """The gate's decision on ``challenger`` (scores of the holdout rows ``y``) against the
    champion ``champion`` (its scores of the same rows), fairness measured on ``groups``, as
    train_model and _champion_on do; and the registry it was recorded in."""
    registry = home_registry(tmp_path)
    groups = pd.DataFrame(index=range(len(y))) if groups is None else groups

    def fairness(score):
        return measure_fairness(
            y, score, groups, threshold=THRESHOLD, bounds=spec.fairness, rounds=0, seed=0
        )

    def metrics(score):
        return classification_metrics(y, score, THRESHOLD)

    first = _register(registry, 0, metrics(champion), fairness(champion))
    registry.promote("default_classifier", first.version, reason="first")
    card = _register(registry, 1, metrics(challenger), fairness(challenger))
    data = SimpleNamespace(model=spec, y_holdout=y)
    holder = Champion(first.version, metrics(champion), champion, THRESHOLD, fairness(champion))
    decision = _decide(registry, data, card, challenger, holder, TrainingConfig.for_model(spec))
    return registry, card, decision


def test_the_decision_and_gate_json_record_the_paired_test(tmp_path):
    y, champion, challenger = _scores(3000, seed=1, noise=(0.9, 0.3))
    registry, card, decision = _decided(tmp_path, y, champion, challenger)
    assert decision.promoted and registry.champion("default_classifier") == card.version
    assert decision.test == delong_test(y, champion, challenger)
    verdict = registry.verdict("default_classifier", card.version)
    assert verdict["test"] == decision.test.as_dict()
    assert verdict["test"]["method"] == "delong" and verdict["test"]["p_value"] < 0.05
    assert verdict["fairness"] == {"worse": []} and verdict["reason"] == decision.reason


def test_a_noise_only_challenger_is_refused_and_the_test_recorded(tmp_path):
    # The first seed whose noise-only challenger clears the margin on this holdout.
    for seed in range(100):
        y, champion, challenger = _scores(3000, seed=seed, noise=(0.6, 0.6))
        if roc_auc_score(y, challenger) >= roc_auc_score(y, champion) * 1.005:
            break
    registry, card, decision = _decided(tmp_path, y, champion, challenger)
    assert not decision.promoted and "not significant at 0.05 (DeLong p = " in decision.reason
    assert registry.champion("default_classifier") != card.version
    assert registry.verdict("default_classifier", card.version)["test"]["p_value"] >= 0.05


def test_a_challenger_less_fair_than_the_champion_is_refused_naming_the_attribute(tmp_path):
    """Truly better on ROC-AUC, but its scores push one age band over the threshold: the
    disparate impact the champion did not have (no guards: only fairness stands in its way)."""
    y, champion, challenger = _scores(3000, seed=2, noise=(0.9, 0.3))
    rng = np.random.default_rng(3)
    groups = pd.DataFrame(
        {"age_band": rng.choice(["18-24", "25-39", "40-64"], 3000),
         "region": rng.choice(["north", "south"], 3000)}
    )  # fmt: skip
    young = (groups["age_band"] == "18-24").to_numpy()
    biased = np.where(young, np.minimum(challenger + 0.25, 1.0), challenger)
    assert roc_auc_score(y, biased) > roc_auc_score(y, champion) * 1.01
    registry, card, decision = _decided(tmp_path, y, champion, biased, groups, NO_GUARDS)
    assert not decision.promoted and "fairness worse than the champion's" in decision.reason
    assert "age_band" in decision.reason and "region" not in decision.reason
    worse = registry.verdict("default_classifier", card.version)["fairness"]["worse"]
    assert worse == decision.fairness_worse and any("age_band" in w for w in worse)
    # The same challenger without the bias is promoted.
    _, _, fair = _decided(tmp_path / "fair", y, champion, challenger, groups, NO_GUARDS)
    assert fair.promoted, fair.reason


def test_the_first_model_is_promoted_with_its_fairness_violations_named():
    violations = ["age_band: disparate-impact ratio 0.71 < 0.8"]
    promoted, reason = gate(
        CLASSIFIER, {"roc_auc": 0.8}, None, TrainingConfig(), violations=violations
    )
    assert (
        promoted
        and reason == f"first model: no champion yet; fairness bounds broken: {violations[0]}"
    )


def test_a_regressor_is_gated_on_a_paired_bootstrap_of_its_rmse(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.gamma(2, 500, 2000)
    champion, challenger = y + rng.normal(0, 400, 2000), y + rng.normal(0, 300, 2000)
    registry = home_registry(tmp_path)
    metrics = lambda p: regression_metrics(y, p)  # noqa: E731
    first = _register(registry, 0, metrics(champion), None, threshold=None)
    registry.promote("default_classifier", first.version, reason="first")
    card = _register(registry, 1, metrics(challenger), None, threshold=None)
    spec = replace(REGRESSOR, name="default_classifier")  # the registry's model name
    decision = _decide(
        registry, SimpleNamespace(model=spec, y_holdout=y), card, challenger,
        Champion(first.version, metrics(champion), champion, None, None),
        TrainingConfig.for_model(spec),
    )  # fmt: skip
    assert decision.promoted and "paired bootstrap p = " in decision.reason
    assert decision.test.method == "paired_bootstrap" and decision.test.metric == "rmse"
    assert decision.test.difference == pytest.approx(
        metrics(champion)["rmse"] - metrics(challenger)["rmse"]
    )


def test_a_champion_that_took_a_now_protected_attribute_is_evaluated_on_the_same_holdout():
    """A champion trained before marital status was declared protected takes it as an input;
    the holdout no longer has it among the features, only among the groups: its scores of the
    holdout would fail (a missing column) and stop every training."""
    old = FeatureSpec(numeric=("amount",), categorical=("marital_status",))
    rng = np.random.default_rng(6)
    frame = pd.DataFrame(
        {"amount": rng.normal(size=200), "marital_status": rng.choice(["single", "married"], 200)}
    )
    y = (frame["amount"] + (frame["marital_status"] == "single") > 0.5).astype(int).to_numpy()
    pipeline = build_pipeline("logistic_l2", {"C": 1.0}, old, seed=0, classifier=True).fit(frame, y)
    card = ModelCard({"signature": {"features": old.columns, "dtypes": old.dtypes()}})
    data = SimpleNamespace(
        x_holdout=frame[["amount"]],
        groups_holdout=frame[["marital_status", "amount"]].rename(columns={"amount": "region"}),
    )
    x = _champion_input(card, data)
    assert list(x.columns) == ["amount", "marital_status"]
    np.testing.assert_array_equal(
        pipeline.predict_proba(x)[:, 1], pipeline.predict_proba(frame)[:, 1]
    )
    now = ModelCard({"signature": {"features": ["amount"], "dtypes": {"amount": "float64"}}})
    assert _champion_input(now, data) is data.x_holdout
