"""Which test and threshold a column gets: Evidently 0.7's precedence (a column's own, else its
kind's, else the global one, else the automatic choice and the test's default), ported from
``evidently tests/options/test_data_drift.py`` onto :class:`DriftOptions`, and the daily
monitor's config that sets them.

Evidently's placeholder tests ("st1", a custom function) become registered names that the
kinds in question take: st1 = psi and st2 = hellinger (numerical and categorical), st3 = ks
(numerical), st4 = chisquare (categorical), st5 = wasserstein (numerical), the custom function
= jensenshannon and the other one = kl_div. Evidently's kinds "cat"/"num" are ours
"categorical"/"numerical"; its None (the automatic choice, or the test's default threshold)
is ours None and ``test.default_threshold``.
"""

import re

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from mlops_assets.components import TrainedModel
from mlops_assets.drift import names
from mlops_assets.drift.engine import DriftInputError, DriftOptions
from mlops_assets.drift.registry import REGISTRY, names_for
from mlops_assets.monitoring.assets import DriftConfig, build_drift_report, model_drift_config
from mlops_assets.monitoring.daily import MonitorConfig, monitor_days, monitor_options
from mlops_assets.monitoring.reference import reference_attachments
from mlops_assets.training.dataset import FeatureSpec
from mlops_assets.training.spec import SpecError
from tests.monitoring.test_monitor import CLASSIFIER, DAYS, FakeRegistry, _visits

ST1, ST2, ST3, ST4, ST5 = "psi", "hellinger", "ks", "chisquare", "wasserstein"
CUSTOM, ANOTHER = "jensenshannon", "kl_div"
KINDS = {"cat1": "categorical", "cat2": "categorical", "num1": "numerical", "num2": "numerical"}
NONE = {"cat1": None, "cat2": None, "num1": None, "num2": None}


def test_the_help_lists_exactly_the_registered_tests_by_kind():
    """`mlops drift --help` names the tests from a light module (the registry loads numpy)."""
    assert sorted(names.ALL) == sorted(REGISTRY)
    for kind, listed in (("numerical", names.NUMERICAL), ("categorical", names.CATEGORICAL),
                         ("text", names.TEXT)):  # fmt: skip
        assert sorted(listed) == sorted(names_for(kind)), kind


@pytest.mark.parametrize(
    ("global_st", "cat_st", "num_st", "per_column", "expected"),
    [
        (None, None, None, None, NONE),
        (ST1, None, None, None, {"cat1": ST1, "cat2": ST1, "num1": ST1, "num2": ST1}),
        (None, None, None, {"cat1": ST1}, {**NONE, "cat1": ST1}),
        (None, None, None, {"cat2": CUSTOM}, {**NONE, "cat2": CUSTOM}),
        (None, None, None, {"cat1": CUSTOM, "num1": ANOTHER},
         {**NONE, "cat1": CUSTOM, "num1": ANOTHER}),
        (None, ST1, None, None, {**NONE, "cat1": ST1, "cat2": ST1}),
        (None, CUSTOM, None, None, {**NONE, "cat1": CUSTOM, "cat2": CUSTOM}),
        (None, None, CUSTOM, None, {**NONE, "num1": CUSTOM, "num2": CUSTOM}),
        (ST1, ST2, None, None, {"cat1": ST2, "cat2": ST2, "num1": ST1, "num2": ST1}),
        (ST1, None, ST2, None, {"cat1": ST1, "cat2": ST1, "num1": ST2, "num2": ST2}),
        (ST1, None, None, {"cat2": ST2, "num2": ST2},
         {"cat1": ST1, "cat2": ST2, "num1": ST1, "num2": ST2}),
        (ST1, ST2, ST3, {"cat2": ST4, "num2": ST5},
         {"cat1": ST2, "cat2": ST4, "num1": ST3, "num2": ST5}),
    ],
    ids=[f"evidently tests/options/test_data_drift.py::test_stattest_function_valid_v2[{i}]"
         for i in range(12)],
)  # fmt: skip
def test_stattest_precedence(global_st, cat_st, num_st, per_column, expected):
    options = DriftOptions(stattest=global_st, cat_stattest=cat_st, num_stattest=num_st,
                           per_column_stattest=per_column or {})  # fmt: skip
    assert {column: options.test_for(column, KINDS[column]) for column in KINDS} == expected


def test_text_columns_take_text_stattest_before_the_global_one():
    """The same precedence for Evidently's third kind (``text_features_stattest``)."""
    options = DriftOptions(
        stattest="psi", text_stattest=names.TEXT[0], per_column_stattest={"notes": names.TEXT[1]}
    )
    assert options.test_for("review", "text") == names.TEXT[0]
    assert options.test_for("notes", "text") == names.TEXT[1]
    assert options.test_for("income", "numerical") == "psi"


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.1, {"feature1": 0.1, "feature2": 0.1}),
        ({"feature1": 0.1}, {"feature1": 0.1, "feature2": None}),
        ({"feature2": 0.1}, {"feature1": None, "feature2": 0.1}),
        ({}, {"feature1": None, "feature2": None}),
    ],
    ids=[f"evidently tests/options/test_data_drift.py::test_threshold_valid[{i}]"
         for i in range(4)],
)  # fmt: skip
def test_threshold_precedence(threshold, expected):
    """Evidently's float is our global ``threshold``, its dict our ``per_column_threshold``;
    its None is the test's default (ks: 0.05)."""
    if isinstance(threshold, dict):
        options = DriftOptions(per_column_threshold=threshold)
    else:
        options = DriftOptions(threshold=threshold)
    ks = REGISTRY["ks"]
    for column, value in expected.items():
        assert options.threshold_for(column, "numerical", ks) == (
            ks.default_threshold if value is None else value
        )


def test_thresholds_by_column_then_kind_then_global_then_the_tests_default():
    """``evidently legacy/utils/data_drift_utils.py::_calculate_threshold``: a column's
    own, else its kind's, else the global one, else None (the test's default); the threshold
    is resolved apart from the test, so a global one applies to every test."""
    psi, ks = REGISTRY["psi"], REGISTRY["ks"]
    options = DriftOptions(threshold=0.7, num_threshold=0.3, per_column_threshold={"n2": 0.01})
    assert options.threshold_for("n1", "numerical", ks) == 0.3
    assert options.threshold_for("n2", "numerical", ks) == 0.01
    assert options.threshold_for("c1", "categorical", psi) == 0.7
    by_kind = DriftOptions(cat_threshold=0.2, text_threshold=0.9)
    assert by_kind.threshold_for("c1", "categorical", psi) == 0.2
    assert by_kind.threshold_for("t1", "text", psi) == 0.9
    assert by_kind.threshold_for("n1", "numerical", ks) == ks.default_threshold == 0.05
    assert by_kind.threshold_for("n1", "numerical", psi) == psi.default_threshold == 0.1


# --- the daily monitor's config ----------------------------------------------------------------


def test_the_monitors_config_sets_every_option_on_the_monitors_defaults():
    config = DriftConfig(
        stattest="psi", num_stattest="ks", cat_stattest="chisquare", text_stattest=names.TEXT[0],
        per_column_stattest={"income": "wasserstein"}, threshold=0.2, num_threshold=0.3,
        cat_threshold=0.4, text_threshold=0.9, per_column_threshold={"income": 0.5},
        strict_evidently=True,
    )  # fmt: skip
    assert config.monitor_config().drift == monitor_options(
        stattest="psi", num_stattest="ks", cat_stattest="chisquare", text_stattest=names.TEXT[0],
        per_column_stattest={"income": "wasserstein"}, threshold=0.2, num_threshold=0.3,
        cat_threshold=0.4, text_threshold=0.9, per_column_threshold={"income": 0.5},
        strict_evidently=True,
    )  # fmt: skip
    default = DriftConfig().monitor_config().drift
    assert default == monitor_options() and default.select_by == "smaller"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"num_stattest": "chisquare"}, "chisquare does not apply to a numerical column"),
        ({"cat_stattest": "ks"}, "ks does not apply to a categorical column"),
        ({"text_stattest": "ks"}, "ks does not apply to a text column"),
        ({"per_column_stattest": {"income": "magic"}}, "unknown stattest 'magic'"),
        ({"per_column_threshold": {"income": float("nan")}},
         "the threshold of column 'income' must be a number >= 0, got nan"),
        ({"num_threshold": -0.1}, "num_threshold must be a number >= 0, got -0.1"),
        ({"threshold": float("inf")}, "threshold must be a number >= 0, got inf"),
        ({"strict_evidently": True, "correction": "bh"}, "it takes no correction"),
    ],
)  # fmt: skip
def test_a_bad_option_in_the_monitors_config_is_refused_with_the_reason(config, message):
    with pytest.raises(ValidationError, match="Value error") as refused:
        DriftConfig(**config)
    assert message in str(refused.value)


def test_an_option_for_a_column_the_champion_does_not_monitor_is_refused(tmp_path):
    """A typo in a column name would leave the column on its default test: refused instead
    (Evidently ignores options for columns it does not see)."""
    rng = np.random.default_rng(0)
    visits = _visits(rng, "2025-01-01", 2, 0.0)
    con = duckdb.connect()
    con.execute("create schema predictions")
    con.execute("create table predictions.buys (visit_id varchar, score double)")
    (tmp_path / "buys").mkdir()
    signature = FeatureSpec(numeric=("x",), categorical=("channel",))
    attachments = reference_attachments(
        visits[["x", "channel"]], signature, pd.Series(rng.random(len(visits))).to_numpy()
    )
    for name, write in attachments.items():
        write(tmp_path / "buys" / name)
    config = MonitorConfig(drift=monitor_options(per_column_threshold={"x": 0.2, "chanel": 0.1}))
    with pytest.raises(DriftInputError, match="columns that buys's champion buys-v1 does not "
                       "monitor: 'chanel'"):  # fmt: skip
        monitor_days(con, FakeRegistry(tmp_path, {}), CLASSIFIER, DAYS, config)


# --- a model's own defaults, declared in its defs.yaml ----------------------------------------

MODEL = {"name": "buys", "task": "classification", "table": "shop.visits",
         "id_column": "visit_id", "time_column": "seen_at", "target": "bought"}  # fmt: skip


def test_a_model_declares_its_monitors_default_options_and_a_run_overrides_them():
    drift = {"num_stattest": "psi", "per_column_threshold": {"x": 0.2}, "strict_evidently": True}
    spec = TrainedModel.resolve_from_yaml(yaml.safe_dump({**MODEL, "drift": drift})).spec
    launchpad = build_drift_report(spec).op.config_schema.config_type.fields
    assert launchpad["num_stattest"].default_value == "psi"
    assert launchpad["per_column_threshold"].default_value == {"x": 0.2}
    config = model_drift_config(spec)
    assert config().monitor_config().drift == monitor_options(**drift)
    assert config(num_stattest="ks").drift_options() == monitor_options(
        **drift | {"num_stattest": "ks"}
    )
    assert (
        model_drift_config(TrainedModel.resolve_from_yaml(yaml.safe_dump(MODEL)).spec)
        is DriftConfig
    )


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ({"num_stattest": "chisquare"},
         "model buys: drift: chisquare does not apply to a numerical column"),
        ({"num_threshold": "high"},
         "model buys: drift: num_threshold: Input should be a valid number"),
        ({"per_column_stattest": {"x": "magic"}}, "model buys: drift: unknown stattest 'magic'"),
        ({"stattest": "ks", "num_stat": "psi"}, "model buys: drift has no key 'num_stat'"),
    ],
)  # fmt: skip
def test_a_models_bad_drift_defaults_are_refused_when_the_code_loads(drift, message):
    spec = TrainedModel.resolve_from_yaml(yaml.safe_dump({**MODEL, "drift": drift})).spec
    with pytest.raises(SpecError, match=re.escape(message)):
        build_drift_report(spec)
