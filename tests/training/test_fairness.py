"""Fairness by protected attribute and group (fairlearn): the values, their intervals, the
check's verdict, the gate's comparison, and protected attributes kept out of the model."""

from dataclasses import replace

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mean_absolute_error, roc_auc_score, root_mean_squared_error

from mlops_assets import catalogue
from mlops_assets.markdown import md_text
from mlops_assets.resources import RegistryResource
from mlops_assets.training import fairness as f
from mlops_assets.training.assets import build_fairness_check, build_model_defs, model_key
from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.metrics import bootstrap_weights
from mlops_assets.training.model_card import sections, summary, to_markdown
from mlops_assets.training.search import make_model, predict
from mlops_assets.training.spec import FairnessSpec
from mlops_assets.training.trainer import TrainingConfig, train_model
from tests.training.conftest import feature_warehouse, home_registry

CLASSIFIER = catalogue.model("default_classifier")
BOUNDS = FairnessSpec()  # disparate impact >= 0.8, equalized odds <= 0.1, tolerance 0.02
THRESHOLD = 0.5


def _sample(rows: int = 900, seed: int = 0, bias: float = 0.0):
    """Targets, scores and three groups of ``rows`` rows; ``bias`` raises group "b"'s scores
    whatever its outcome (a model unfair to "b")."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2])
    y = rng.binomial(1, 0.3, rows)
    score = np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, rows) + bias * (group == "b"), 0, 1)
    return y, score, pd.DataFrame({"group": group})


def test_values_equal_fairlearn_s_own_functions():
    y, score, groups = _sample()
    measured = f.measure_fairness(
        y, score, groups, threshold=THRESHOLD, bounds=BOUNDS, rounds=0, seed=0
    )["attributes"]["group"]
    flagged = (score >= THRESHOLD).astype(int)
    by = groups["group"]
    frame = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
        },
        y_true=y,
        y_pred=flagged,
        sensitive_features=by,
    ).by_group
    for name in ("a", "b", "c"):
        got = measured["groups"][name]
        assert got["count"] == (by == name).sum()
        for metric in ("selection_rate", "true_positive_rate", "false_positive_rate"):
            assert got[metric] == pytest.approx(frame.loc[name, metric], abs=1e-12)
        rows = (by == name).to_numpy()
        assert got["roc_auc"] == pytest.approx(roc_auc_score(y[rows], score[rows]), abs=1e-12)
        assert "selection_rate_ci" not in got  # rounds=0: no intervals
    kw = {"sensitive_features": by}
    assert measured["demographic_parity_ratio"] == pytest.approx(
        demographic_parity_ratio(y, flagged, **kw), abs=1e-12
    )
    assert measured["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y, flagged, **kw), abs=1e-12
    )
    assert measured["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y, flagged, **kw), abs=1e-12
    )
    # Disparate impact: the same ratio of the favourable outcome (approved: not flagged).
    assert measured["disparate_impact_ratio"] == pytest.approx(
        demographic_parity_ratio(y, 1 - flagged, **kw), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_group_value_equals_fairlearn_s_metric_frame_on_random_data(seed):
    """Each group's values (computed with the resamples, as weighted sums) are fairlearn's
    MetricFrame's over its metric functions on the same rows, groups in MetricFrame's order:
    classification (with groups of one class only, and groups with nothing flagged) and
    regression."""
    rng = np.random.default_rng(seed)
    rows = 1_200
    labels = rng.choice(["b", "a", "c", "d", "missing"], rows, p=[0.4, 0.3, 0.2, 0.08, 0.02])
    y = rng.binomial(1, 0.25, rows)
    y[labels == "d"] = 0  # no positives: TPR and ROC-AUC undefined by fairlearn's rules
    score = np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, rows), 0, 1)
    score[labels == "c"] = 0.1  # nothing flagged
    groups = pd.DataFrame({"attribute": labels})
    flagged = (score >= THRESHOLD).astype(int)

    def roc_auc(y_true, y_pred, score):
        return roc_auc_score(y_true, score) if len(np.unique(y_true)) == 2 else np.nan

    expected = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
            "roc_auc": roc_auc,
        },
        y_true=y,
        y_pred=flagged,
        sensitive_features=pd.Series(labels, name="group"),
        sample_params={"roc_auc": {"score": score}},
    ).by_group
    for rounds in (0, 20):
        measured = f.measure_fairness(
            y, score, groups, threshold=THRESHOLD, bounds=BOUNDS, rounds=rounds, seed=seed
        )["attributes"]["attribute"]["groups"]
        assert list(measured) == list(expected.index)
        for name, values in expected.iterrows():
            assert measured[name]["count"] == (labels == name).sum()
            for metric, value in values.items():
                got = measured[name][metric]
                assert got == (None if np.isnan(value) else pytest.approx(value, abs=1e-12))

    target = rng.gamma(2.0, 1000.0, rows)
    predicted = target + rng.normal(0, 100, rows)
    expected = MetricFrame(
        metrics={"mae": mean_absolute_error, "rmse": root_mean_squared_error},
        y_true=target,
        y_pred=predicted,
        sensitive_features=pd.Series(labels, name="group"),
    ).by_group
    measured = f.measure_fairness(
        target, predicted, groups, threshold=None, bounds=BOUNDS, rounds=20, seed=seed
    )["attributes"]["attribute"]["groups"]
    assert list(measured) == list(expected.index)
    for name, values in expected.iterrows():
        for metric, value in values.items():
            assert measured[name][metric] == pytest.approx(value, rel=1e-12)


def test_a_hand_made_case():
    """Group x: 40 rows, 20 flagged; group y: 40 rows, 10 flagged. Approval 0.5 against 0.75:
    disparate impact 2/3, under the four-fifths rule."""
    y = np.r_[[1] * 20 + [0] * 20, [1] * 10 + [0] * 30]
    score = np.r_[[0.9] * 15 + [0.1] * 5 + [0.9] * 5 + [0.1] * 15, [0.9] * 10 + [0.1] * 30]
    groups = pd.DataFrame({"g": ["x"] * 40 + ["y"] * 40})
    result = f.measure_fairness(y, score, groups, threshold=0.5, bounds=BOUNDS, rounds=0, seed=0)
    g = result["attributes"]["g"]
    assert g["groups"]["x"]["selection_rate"] == 0.5 and g["groups"]["y"]["selection_rate"] == 0.25
    assert g["groups"]["x"]["true_positive_rate"] == 0.75
    assert g["groups"]["x"]["false_positive_rate"] == 0.25
    assert g["groups"]["y"]["true_positive_rate"] == 1.0
    assert g["groups"]["y"]["false_positive_rate"] == 0.0
    assert g["demographic_parity_ratio"] == 0.5
    assert g["demographic_parity_difference"] == 0.25
    assert g["equalized_odds_difference"] == 0.25
    assert g["disparate_impact_ratio"] == pytest.approx(2 / 3)
    assert g["four_fifths_rule"] is False
    assert result["violations"] == [
        "g: disparate-impact ratio 0.667 < 0.8",
        "g: equalized-odds difference 0.250 > 0.1",
    ]


def test_each_resample_equals_fairlearn_on_the_resampled_rows():
    """The intervals' resampled values (every round at once, from the resample weights) are
    fairlearn's values on each resample's rows drawn explicitly."""
    y, score, groups = _sample(rows=400, seed=3)
    labels = f.group_labels(groups["group"])
    flagged = (score >= THRESHOLD).astype(int)
    weights = bootstrap_weights(len(y), rounds=3, seed=5)
    index = pd.Index(["a", "b", "c"])
    per_group, summary = f._resampled_classification(
        y.astype(float), score, flagged, labels, index, index, weights
    )
    for r in range(3):
        rows = np.repeat(np.arange(len(y)), weights[r].astype(int))
        kw = {"sensitive_features": labels[rows]}
        frame = MetricFrame(
            metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate},
            y_true=y[rows],
            y_pred=flagged[rows],
            **kw,
        ).by_group
        for column, name in enumerate(index):
            assert per_group["selection_rate"][r, column] == pytest.approx(
                frame.loc[name, "selection_rate"]
            )
            assert per_group["true_positive_rate"][r, column] == pytest.approx(
                frame.loc[name, "true_positive_rate"]
            )
            mine = rows[labels[rows] == name]
            assert per_group["roc_auc"][r, column] == pytest.approx(
                roc_auc_score(y[mine], score[mine])
            )
        assert summary["equalized_odds_difference"][r] == pytest.approx(
            equalized_odds_difference(y[rows], flagged[rows], **kw)
        )
        assert summary["disparate_impact_ratio"][r] == pytest.approx(
            demographic_parity_ratio(y[rows], 1 - flagged[rows], **kw)
        )


def test_intervals_hold_the_value_and_regression_reports_error_by_group():
    y, score, groups = _sample()
    result = f.measure_fairness(
        y, score, groups, threshold=THRESHOLD, bounds=BOUNDS, rounds=200, seed=0
    )
    group = result["attributes"]["group"]
    for name in ("demographic_parity_ratio", "equalized_odds_difference"):
        low, high = group[f"{name}_ci"]
        assert low <= group[name] <= high
    low, high = group["groups"]["a"]["selection_rate_ci"]
    assert low < group["groups"]["a"]["selection_rate"] < high

    rng = np.random.default_rng(1)
    target = rng.gamma(2.0, 1000.0, len(y))
    predicted = target + rng.normal(0, 100, len(y)) * np.where(groups["group"] == "b", 3, 1)
    result = f.measure_fairness(
        target, predicted, groups, threshold=None, bounds=BOUNDS, rounds=50, seed=0
    )
    regression = result["attributes"]["group"]
    rows = (groups["group"] == "b").to_numpy()
    b = regression["groups"]["b"]
    assert b["rmse"] == pytest.approx(root_mean_squared_error(target[rows], predicted[rows]))
    assert b["mae"] == pytest.approx(mean_absolute_error(target[rows], predicted[rows]))
    rmse = [g["rmse"] for g in regression["groups"].values()]
    assert regression["rmse_ratio"] == pytest.approx(max(rmse) / min(rmse))
    assert regression["rmse_ratio"] > 2 and "four_fifths_rule" not in regression
    assert result["violations"] == []  # no bound is declared for regression


def test_missing_values_small_groups_and_numeric_bands():
    rng = np.random.default_rng(2)
    rows = 500
    region = np.array(["north"] * 240 + ["south"] * 240 + ["isle"] * 10 + [None] * 10, object)
    groups = pd.DataFrame({"region": region, "age": rng.integers(18, 90, rows).astype(float)})
    groups.loc[:4, "age"] = np.nan
    y = rng.binomial(1, 0.3, rows)
    score = rng.random(rows)
    score[480:490] = 0.99  # the small group all flagged: it would break every ratio
    result = f.measure_fairness(y, score, groups, threshold=0.5, bounds=BOUNDS, rounds=20, seed=0)
    region_groups = result["attributes"]["region"]["groups"]
    assert set(region_groups) == {"north", "south", "isle", "missing"}
    assert region_groups["isle"]["count"] == 10 and region_groups["isle"]["selection_rate"] == 1.0
    compared = [region_groups[g]["selection_rate"] for g in ("north", "south", "missing")]
    assert result["attributes"]["region"]["demographic_parity_ratio"] == pytest.approx(
        min(compared[:2]) / max(compared[:2])  # "missing" has 10 rows too: not compared
    )
    ages = result["attributes"]["age"]["groups"]
    assert len(ages) == f.BANDS + 1 and ages["missing"]["count"] == 5  # quintiles + missing
    assert sum(g["count"] for g in ages.values()) == rows


def test_a_biased_model_breaks_the_bounds_and_the_check_fails():
    y, score, groups = _sample(bias=0.3)
    result = f.measure_fairness(
        y, score, groups, threshold=THRESHOLD, bounds=BOUNDS, rounds=0, seed=0
    )
    assert any("disparate-impact ratio" in v for v in result["violations"])
    assert f.fairness_verdict(result) == (False, result["violations"])
    fair = f.measure_fairness(
        *_sample(rows=5_000), threshold=THRESHOLD, bounds=BOUNDS, rounds=0, seed=0
    )
    assert fair["violations"] == [] and f.fairness_verdict(fair) == (True, [])
    # A version registered before fairness was measured: no verdict, not a pass.
    passed, problems = f.fairness_verdict(None)
    assert not passed and "not measured" in problems[0]


def test_an_attribute_with_nothing_to_compare_is_not_a_pass(tmp_path):
    """Every group under 30 rows, one group only, all missing, or an identifier-like attribute
    (3,000 postcodes): no ratio, named in ``not_measured``, and the check fails; an id-like
    attribute is not measured at all (model.json stays small, it takes no time)."""
    import json

    rng = np.random.default_rng(3)
    rows = 7_500
    y, score = rng.binomial(1, 0.3, rows), rng.random(rows)
    groups = pd.DataFrame(
        {
            "postcode": [f"P{i:04d}" for i in rng.integers(0, 3_000, rows)],
            # 40 groups of 25 rows, the rest missing: one group to compare
            "small": [*np.repeat([f"s{i}" for i in range(40)], 25), *[None] * (rows - 1_000)],
            "one": "x",
            "unknown": pd.Series([None] * rows, dtype=object),
            "fine": rng.choice(["a", "b"], rows),
        }
    )
    result = f.measure_fairness(
        y, score, groups, threshold=THRESHOLD, bounds=BOUNDS, rounds=200, seed=0
    )
    assert len(json.dumps(result)) < 100_000
    postcode = result["attributes"]["postcode"]
    assert postcode["groups"] == {} and postcode["group_count"] > f.MAX_GROUPS
    assert postcode["four_fifths_rule"] is None
    named = [line.split(":")[0] for line in result["not_measured"]]
    assert named == ["postcode", "small", "one", "unknown"]
    assert "more than 50" in result["not_measured"][0]
    assert "fewer than two groups of at least 30 rows" in result["not_measured"][1]
    assert result["violations"] == []
    passed, problems = f.fairness_verdict(result)
    assert not passed and problems == result["not_measured"]
    assert "Not measured: postcode: " in f.fairness_table(result)
    shown = dict(summary({"fairness": result}, None))["fairness"]
    assert shown.startswith("no bound broken; not measured: postcode: ")
    assert "Not measured" in to_markdown("t", sections({"fairness": result}, None))
    assert [p.name for p in f.plot_fairness(result, tmp_path)] == [
        f"fairness_{name}.png" for name in ("small", "one", "unknown", "fine")
    ]
    # Regression: the same attributes, the same honesty.
    regression = f.measure_fairness(
        score, y, groups, threshold=None, bounds=BOUNDS, rounds=0, seed=0
    )
    assert [line.split(":")[0] for line in regression["not_measured"]] == named
    assert not f.fairness_verdict(regression)[0]


def test_the_fairness_check_reads_the_sealed_version_and_fails_on_violations(tmp_path):
    registry = home_registry(tmp_path)
    y, score, groups = _sample(bias=0.3)
    biased = f.measure_fairness(
        y, score, groups, threshold=THRESHOLD, bounds=BOUNDS, rounds=20, seed=0
    )
    x = np.random.default_rng(0).normal(size=(40, 2))
    card, _ = registry.register(
        CLASSIFIER.name,
        LogisticRegression().fit(x, np.arange(40) % 2),
        {"candidate": "tiny"},
        {"metrics": {"roc_auc": 0.5}, "fairness": biased},
    )

    @dg.asset(key=model_key(CLASSIFIER))
    def trained() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"version": card.version})

    result = dg.materialize(
        [trained, build_fairness_check(CLASSIFIER)],
        resources={
            "registry": RegistryResource(
                path=str(registry.root),
                keyring_path=str(tmp_path / "keys" / "keyring.json"),
                reports_path=str(tmp_path / "reports"),
            )
        },
        raise_on_error=False,
    )
    assert result.success  # non-blocking: the run succeeds, the check fails
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "fairness" and not evaluation.passed
    metadata = evaluation.metadata
    assert metadata["version"].value == card.version
    assert "disparate" in metadata["violations"].value
    assert "| group |" in metadata["fairness"].value
    fairness = dg.AssetCheckKey(model_key(CLASSIFIER), "fairness")
    assert fairness in _check_keys(CLASSIFIER)
    assert fairness not in _check_keys(replace(CLASSIFIER, protected_attributes=()))


def _check_keys(spec) -> set:
    defs = build_model_defs(spec, frozenset())
    return {key for checks in defs.asset_checks for key in checks.check_keys}


def test_compare_fairness_flags_a_worsening_beyond_the_tolerance_only():
    def record(ratio, odds):
        return {"attributes": {"age_band": {
            "disparate_impact_ratio": ratio, "equalized_odds_difference": odds}}}  # fmt: skip

    champion = record(0.90, 0.05)
    assert f.compare_fairness(record(0.89, 0.06), champion, BOUNDS) == []  # within 0.02
    assert f.compare_fairness(record(0.95, 0.01), champion, BOUNDS) == []  # better
    worse = f.compare_fairness(record(0.85, 0.08), champion, BOUNDS)
    assert worse == [
        "age_band: disparate-impact ratio 0.850, champion's 0.900",
        "age_band: equalized-odds difference 0.080, champion's 0.050",
    ]
    assert f.compare_fairness(record(0.5, 0.5), None, BOUNDS) == []  # no champion
    # Not numbers (None: too few groups; anything else read from a file): not compared.
    assert f.compare_fairness(record(0.5, 0.5), record(None, "0.01"), BOUNDS) == []
    assert f.compare_fairness(record(0.5, 0.5), {"attributes": []}, BOUNDS) == []
    # Measured the same way on the same holdout: a biased challenger is worse.
    y, score, groups = _sample()
    _, biased, _ = _sample(bias=0.3)

    def measure(s):
        return f.measure_fairness(
            y, s, groups, threshold=THRESHOLD, bounds=BOUNDS, rounds=0, seed=0
        )

    assert f.compare_fairness(measure(biased), measure(score), BOUNDS)
    assert f.compare_fairness(measure(score), measure(score), BOUNDS) == []


HOSTILE = [
    "<script>alert(1)</script>",
    "[click](http://example.com) ![x](http://example.com/a.png)",
    "a | b\nc\x1b[2J\u202e",
    "$\\frac{x$ _math_",
    "long" * 2_000,
]


def test_hostile_group_values_are_escaped_in_the_table_and_plotted(tmp_path):
    rng = np.random.default_rng(4)
    rows = 50 * len(HOSTILE)
    groups = pd.DataFrame({"g": np.repeat(np.array(HOSTILE, object), 50)})
    y, score = rng.binomial(1, 0.3, rows), rng.random(rows)
    for threshold in (0.5, None):
        result = f.measure_fairness(
            y, score, groups, threshold=threshold, bounds=BOUNDS, rounds=10, seed=0
        )
        assert set(result["attributes"]["g"]["groups"]) == set(HOSTILE)  # model.json: as is
        table = f.fairness_table(result)
        for raw in ("<script>", "](http", "\x1b", "\n| c", "\u202e"):
            assert raw not in table
        assert md_text("<script>alert(1)</script>") in table
        assert "long" * 2_000 not in table  # shortened for display
        assert all(line.count(" | ") == table.splitlines()[0].count(" | ")
                   for line in table.split("\n\n")[0].splitlines())  # fmt: skip
        (path,) = f.plot_fairness(result, tmp_path / str(threshold))
        assert path.name == "fairness_g.png" and path.stat().st_size > 0


def _fitted_inputs(spec) -> list[str]:
    with feature_warehouse(rows=600) as con:
        data = load_training_data(con, spec)
    model = make_model("logistic_l2", {"C": 1.0}, data.spec, 0, True).fit(
        data.x_train, data.y_train
    )
    assert list(data.groups_holdout.columns) == list(spec.protected_attributes)
    return list(model.named_steps["prepare"].feature_names_in_)


def test_protected_attributes_never_reach_the_fitted_pipeline_unless_opted_in():
    protected = {"age_band", "marital_status", "region"}
    every_column = replace(CLASSIFIER, features=None)  # default: every other column
    for spec in (CLASSIFIER, every_column):
        inputs = _fitted_inputs(spec)
        assert inputs and not protected & set(inputs)
    opted_in = replace(
        every_column,
        use_protected=("region",),
        use_protected_justification="Regional cost of living, reviewed by compliance.",
    )
    inputs = _fitted_inputs(opted_in)
    assert "region" in inputs and not {"age_band", "marital_status"} & set(inputs)


def test_training_records_the_fairness_of_every_protected_attribute(tmp_path):
    spec = replace(CLASSIFIER, candidates=("logistic_l2",))
    with feature_warehouse(rows=600) as con:
        data = load_training_data(con, spec)
    outcome = train_model(
        data, home_registry(tmp_path), TrainingConfig(folds=2, bootstrap_rounds=20)
    )
    recorded = outcome.card.data["fairness"]  # sealed in model.json
    assert recorded["threshold"] == outcome.threshold and recorded["rounds"] == 20
    assert list(recorded["attributes"]) == ["age_band", "marital_status", "region"]
    for measured in recorded["attributes"].values():
        assert sum(g["count"] for g in measured["groups"].values()) == len(data.y_holdout)
    assert recorded == f.measure_fairness(
        data.y_holdout,
        predict(outcome.model, data.x_holdout, True),
        data.groups_holdout,
        threshold=outcome.threshold,
        bounds=spec.fairness,
        rounds=20,
        seed=42,
    )


def test_odd_numeric_attributes_are_grouped_without_failing():
    """An infinite value is its own group (it crashed the quintile banding, and so training);
    a nullable integer attribute with many values and missing ones is banded."""
    rng = np.random.default_rng(4)
    rows = 600
    y, score = rng.binomial(1, 0.3, rows), rng.random(rows)
    income = pd.Series(np.r_[rng.normal(size=rows - 2), np.inf, -np.inf])
    age = pd.Series(pd.array(rng.integers(18, 90, rows), dtype="Int64"))
    age[:40] = pd.NA
    result = f.measure_fairness(
        y, score, pd.DataFrame({"income": income, "age": age}),
        threshold=THRESHOLD, bounds=BOUNDS, rounds=20, seed=0,
    )  # fmt: skip
    incomes = result["attributes"]["income"]["groups"]
    assert incomes["inf"]["count"] == incomes["-inf"]["count"] == 1
    assert sum(g["count"] for g in incomes.values()) == rows and len(incomes) == f.BANDS + 2
    ages = result["attributes"]["age"]["groups"]
    assert ages["missing"]["count"] == 40 and len(ages) == f.BANDS + 1
