"""Evidently 0.7.23's column- and dataset-drift cases, through this engine: the DataFrames of
Evidently's tests are profiled (``profile_frame``) and compared (``compare_profiles``), with
the automatic test choice, the options and the dataset verdict of Evidently's report.

Expected values are Evidently 0.7.23's, re-run. Several cases rest on Evidently's chi-square
with a category the reference never saw: the expected count is 0, so the statistic is
infinite and p = 0.0 ("drift"). Those run twice: ``strict_evidently=True`` gives Evidently's
0.0/True; the defaults pool the cells expected to hold fewer than 5 rows (docs, differences:
"chi-square with sparse or new categories"), which on these 3- and 4-row frames leaves one
cell, so p = 1.0 and no drift.
"""

import numpy as np
import pandas as pd
import pytest

from mlops_assets.drift.engine import DriftOptions, compare_profiles
from mlops_assets.drift.profile import DriftInputError, profile_frame

METRICS = "evidently tests/metrics/data_drift/"
DDT = "evidently tests/tests/test_data_drift_tests.py::"
CALC = "evidently tests/calculations/test_data_drift.py::"
MULTI = "evidently tests/multitest/metrics/data_drift.py::column_drift_metric_values"
Z_0659 = 0.6592430037
Z_0157 = 0.1572992071


def kinds(frame: pd.DataFrame) -> dict[str, str]:
    return {
        c: "numerical" if pd.api.types.is_numeric_dtype(frame[c]) else "categorical" for c in frame
    }


def report(reference: dict, current: dict, columns=None, **options):
    ref, cur = pd.DataFrame(reference), pd.DataFrame(current)
    return compare_profiles(
        profile_frame(ref, kinds(ref)),
        profile_frame(cur, kinds(cur), exact=True),
        DriftOptions(**options),
        columns=columns,
        parallel=False,
    )


def check(result, expected: dict, drifted: int, dataset_drift: bool) -> None:
    columns = {c.column: c for c in result.columns}
    for name, (test, score, drift) in expected.items():
        assert columns[name].test == test, name
        assert columns[name].score == pytest.approx(score, rel=1e-3, abs=1e-4), name
        assert columns[name].drifted is drift, name
    assert result.n_drifted_columns == drifted
    assert result.share_drifted_columns == pytest.approx(drifted / len(expected))
    assert result.dataset_drift is dataset_drift


# (id, reference, current, options, strict: (columns, drifted, dataset), default: (...))
CASES = [
    (
        METRICS + "test_data_drift_table.py::test_data_drift_metrics_with_options",
        {"category_feature": ["a", "a", "b"], "target": [1, 4, 5], "prediction": [1, 0, 1]},
        {"category_feature": ["a", "b", "a"], "target": [1, 2, 3], "prediction": [1, 0, 1]},
        {"threshold": 0.7},
        ({"category_feature": ("z", 1.0, False), "prediction": ("z", 1.0, False),
          "target": ("chisquare", 0.0, True)}, 1, False),
        ({"target": ("chisquare", 1.0, False)}, 0, False),
    ),
    (
        METRICS + "test_data_drift_table.py::test_data_drift_metrics_json_output",
        {"category_feature": ["a", "a", "b", "b"], "target": [1, 4, 5, 5],
         "prediction": [1, 5, 4, 4]},
        {"category_feature": ["a", "b", "a", np.nan], "target": [np.nan, np.nan, 3, 4],
         "prediction": [1, 0, np.nan, 5]},
        {"threshold": 0.7},
        ({"category_feature": ("z", Z_0659, True), "prediction": ("chisquare", 0.0, True),
          "target": ("chisquare", 0.0, True)}, 3, True),
        ({"prediction": ("chisquare", 1.0, False), "target": ("chisquare", 1.0, False)}, 1,
         False),
    ),
    (
        METRICS + "test_dataset_drift_metric.py::test_dataset_drift_metric_with_options",
        {"category_feature": ["a", "a", "b"], "target": [1, 4, 5], "prediction": [1, 0, 1]},
        {"category_feature": ["az", "bz", "az"], "target": [1, 2, 3], "prediction": [1, 0, 1]},
        {"threshold": 0.7},
        ({"category_feature": ("chisquare", 0.0, True), "prediction": ("z", 1.0, False),
          "target": ("chisquare", 0.0, True)}, 2, True),
        ({"category_feature": ("chisquare", 1.0, False), "target": ("chisquare", 1.0, False)},
         0, False),
    ),
    (
        METRICS + "test_dataset_drift_metric.py::test_dataset_drift_metric_json_output",
        {"category_feature": ["a", "a", "b", "b"], "target": [1, 4, 5, 1],
         "prediction": [1, 0, 1, 0]},
        {"category_feature": ["a", "b", None], "target": [1, np.nan, 3],
         "prediction": [1, 0, 1]},
        {"threshold": 0.7},
        ({"category_feature": ("z", 1.0, False), "prediction": ("z", Z_0659, True),
          "target": ("chisquare", 0.0, True)}, 2, True),
        ({"target": ("chisquare", 1.0, False)}, 1, False),
    ),
    (
        MULTI + "[identical]",
        {"col": [1, 2, 3]}, {"col": [1, 2, 3]}, {},
        ({"col": ("chisquare", 1.0, False)}, 0, False),
        ({}, 0, False),
    ),
    (
        MULTI + "[new values]",
        {"col": [1, 2, 3]}, {"col": [5, 8, 3]}, {},
        ({"col": ("chisquare", 0.0, True)}, 1, True),
        ({"col": ("chisquare", 1.0, False)}, 0, False),
    ),
    (
        MULTI + "[psi]",
        {"col": [3, 2, 2]}, {"col": [1, 2, 3]}, {"stattest": "psi", "threshold": 0.1},
        ({"col": ("psi", 2.934147248, True)}, 1, True),  # a zero share filled with 1e-4
        ({}, 1, True),
    ),
    (
        DDT + "test_data_drift_test_number_of_drifted_features_json_render",
        {"category_feature": ["n", "d", "p", "n"], "numerical_feature": [0, 1, 2, 5],
         "target": [1, 1, 0, 1], "prediction": [1, 1, 0, 1]},
        {"category_feature": ["n", "d", "p", "n"], "numerical_feature": [0, 1, 2, 5],
         "target": [0, 0, 0, 1], "prediction": [0, 0, 0, 1]},
        {},
        ({"category_feature": ("chisquare", 1.0, False),
          "numerical_feature": ("chisquare", 1.0, False),  # a numerical column, 4 values
          "target": ("z", Z_0157, False), "prediction": ("z", Z_0157, False)}, 0, False),
        ({}, 0, False),
    ),
    (
        DDT + "test_data_drift_test_feature_value_drift_json_render",
        {"feature_1": [1, 1, 2, 0]}, {"feature_1": [0, 0, 0, 1]}, {},
        ({"feature_1": ("chisquare", 0.06392786121, False)}, 0, False),
        ({"feature_1": ("chisquare", 1.0, False)}, 0, False),  # the same verdict
    ),
    (
        DDT + "test_data_drift_test_share_of_drifted_features_json_render",
        {"category_feature": ["n", "d", "p", "n"], "numerical_feature": [0, 1, 2, 5],
         "target": [0, 0, 0, 1], "prediction": [0, 0, 0, 1]},
        {"category_feature": ["n", "d", "p", "n"], "numerical_feature": [0, 1, 2, 5],
         "target": [0, 0, 0, 1], "prediction": [0, 0, 0, 1]},
        {},
        ({"category_feature": ("chisquare", 1.0, False),
          "numerical_feature": ("chisquare", 1.0, False), "target": ("z", 1.0, False),
          "prediction": ("z", 1.0, False)}, 0, False),
        ({}, 0, False),
    ),
    (
        CALC + "test_get_one_column_drift_success[0]",
        {"test": [1, 2, 3]}, {"test": [1, 2, 3]}, {},
        ({"test": ("chisquare", 1.0, False)}, 0, False),
        ({}, 0, False),
    ),
    (
        CALC + "test_get_one_column_drift_success[4]",
        {"test": [4, 5, 6], "target": [1, 2, 3]}, {"test": [1, 2, 3], "target": [1, 2, 3]},
        {"columns": ["target"]},
        ({"target": ("chisquare", 1.0, False)}, 0, False),
        ({}, 0, False),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "reference, current, options, expected", [pytest.param(*c[1:5], id=c[0]) for c in CASES]
)
def test_strict_mode_gives_evidentlys_report(reference, current, options, expected):
    check(report(reference, current, strict_evidently=True, **options), *expected)


@pytest.mark.parametrize(
    "reference, current, options, strict, default",
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_defaults_differ_only_where_readme_says(reference, current, options, strict, default):
    """The same report, except the chi-square columns with new or sparse categories (pooled:
    docs, differences, "chi-square with sparse or new categories")."""
    expected = {**strict[0], **default[0]}
    check(report(reference, current, **options), expected, *default[1:])


@pytest.mark.parametrize(
    "side",
    [
        pytest.param(side, id=f"{METRICS}test_column_drift_metric.py::"
                     f"test_column_drift_metric_errors[empty {side}]")
        for side in ("current", "reference")
    ],
)  # fmt: skip
def test_an_empty_column(side):
    """[None, inf, -inf] on one side: strict raises Evidently's message word for word; the
    defaults report the column as drifted (docs, differences: "an empty column"). Also
    evidently tests/calculations/test_data_drift.py::test_get_one_column_drift_value_error."""
    frames = {"reference": {"col": [1.0, 2.0, 3.0]}, "current": {"col": [1.0, 2.0, 3.0]}}
    frames[side] = {"col": [None, np.inf, -np.inf]}
    message = f"An empty column 'col' was provided for drift calculation in the {side} dataset."
    with pytest.raises(DriftInputError, match=message.replace(".", r"\.")):
        report(frames["reference"], frames["current"], strict_evidently=True)
    [column] = report(frames["reference"], frames["current"]).columns
    assert column.drifted and column.note == f"no values in the {side} data"


def test_a_missing_column_is_refused():
    """evidently tests/metrics/data_drift/test_column_drift_metric.py::
    test_column_drift_metric_errors ("Cannot find column 'col' in current dataset")."""
    with pytest.raises(DriftInputError, match="missing from the current data: col"):
        report({"col": [1, 2, 3]}, {"feature": [1, 2, 3]})


@pytest.mark.parametrize("side", ["current", "reference"])
def test_a_numerical_column_with_text_values_is_refused(side):
    """evidently tests/calculations/test_data_drift.py::test_get_one_column_drift_value_error
    ("Column 'test' in current dataset should contain numerical values only.")."""
    frames = {"reference": {"test": [1, 2, 3]}, "current": {"test": [1, 2, 3]}}
    frames[side] = {"test": ["a", "b", "c"]}
    with pytest.raises(DriftInputError, match=r"'test' is (numerical|categorical) in the ref"):
        report(frames["reference"], frames["current"])
