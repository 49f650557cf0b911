"""The domain classifier sees what per-column tests cannot: a changed joint distribution."""

from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.drift.engine import compare_profiles
from mlops_assets.drift.multivariate import (
    MAX_CATEGORIES,
    _encode,
    domain_classifier,
    informative_columns,
)
from mlops_assets.drift.profile import profile_frame

KINDS = {"a": "numerical", "b": "numerical", "segment": "categorical"}


def frame(rng: np.random.Generator, rows: int, correlation: float) -> pd.DataFrame:
    """Two standard-normal columns with the given correlation and a category: the marginals
    are the same whatever the correlation."""
    a = rng.normal(size=rows)
    b = correlation * a + np.sqrt(1 - correlation**2) * rng.normal(size=rows)
    return pd.DataFrame({"a": a, "b": b, "segment": rng.choice(["x", "y", "z"], size=rows)})


def test_a_changed_correlation_is_multivariate_drift_though_no_column_drifts():
    rng = np.random.default_rng(0)
    reference, current = frame(rng, 1_000, 0.0), frame(rng, 1_000, 0.9)
    columns = compare_profiles(
        profile_frame(reference, KINDS), profile_frame(current, KINDS, exact=True)
    )
    assert not any(c.drifted for c in columns.columns)  # each column alone looks the same

    result = domain_classifier(reference, current)
    assert result["drifted"]
    assert result["score"] > 0.6 and result["auc_lower_bound"] > 0.5
    assert result["rows_per_side"] == 1_000


def test_the_same_distribution_is_not_drift():
    rng = np.random.default_rng(1)
    result = domain_classifier(frame(rng, 1_000, 0.5), frame(rng, 1_000, 0.5))
    assert not result["drifted"]
    assert 0.4 < result["score"] < 0.6


def test_a_few_rows_give_no_verdict_on_chance_auc():
    rng = np.random.default_rng(2)
    few = domain_classifier(frame(rng, 1_000, 0.0), frame(rng, 3, 0.0))
    assert few["score"] is None and not few["drifted"] and "too few rows" in few["note"]
    # A couple of dozen rows: whatever the AUC, its lower bound keeps chance from being drift.
    small = domain_classifier(frame(rng, 1_000, 0.0), frame(rng, 24, 0.0))
    assert not small["drifted"]


# --- degenerate data: a column without values in one fold, one state, many categories -------

SEED3_DAY = Path(__file__).parent / "data" / "seed3_2025-01-19_days_since_prior_application.parquet"


def test_the_seed3_day_whose_sparse_column_is_all_missing_in_one_fold():
    """Regression of `mlops generate --days 45 --rows-per-day 100 --seed 3 --drift-from-day 35`
    then `mlops run`: monitoring/drift_report failed for good with numpy's "window shape cannot
    be larger than input array shape". On 2025-01-19 (53 applications) the champion's reference
    sample and the day hold 8 values of days_since_prior_application in 106 rows, and one
    training fold got none. The fixture is that column of both sides, extracted from the home.
    """
    rows = pd.read_parquet(SEED3_DAY)
    column = ["days_since_prior_application"]
    reference = rows.loc[rows["side"] == "reference", column]
    current = rows.loc[rows["side"] == "current", column]
    assert len(current) == 53 and current.notna().sum().item() == 5

    result = domain_classifier(reference, current)
    assert result["rows_per_side"] == 53 and 0 <= result["score"] <= 1
    assert not result["drifted"]


def _quiet_day(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    day = frame(rng, rows, 0.0)
    day.loc[rng.random(rows) < 0.95, "a"] = np.nan  # sparse: often missing in a whole fold
    day["empty"] = np.nan  # a numeric column without a value, e.g. no prior application
    day["constant"] = 1.0
    day["no_text"] = pd.Series([None] * rows, dtype="string")
    return day


def test_columns_without_values_or_variation_do_not_stop_the_classifier():
    rng = np.random.default_rng(4)
    reference = _quiet_day(rng, 1_000)
    result = domain_classifier(reference, _quiet_day(rng, 53))
    assert result["rows_per_side"] == 53 and not result["drifted"]
    nothing = domain_classifier(
        reference[["empty", "constant"]], _quiet_day(rng, 53)[["empty", "constant"]]
    )
    assert nothing["score"] == 0.5 and not nothing["drifted"]  # nothing to learn from: chance
    none = domain_classifier(reference[[]], reference[[]])
    assert none["score"] is None and "no columns" in none["note"]


def test_more_categories_than_gradient_boosting_bins():
    """A column of 300 distinct codes (an id-like text): the rarest share one category instead
    of exceeding the classifier's 63 bins (it raised "expected to have a cardinality <= 63")."""
    rng = np.random.default_rng(5)
    codes = np.array([f"k{i}" for i in range(300)])
    reference = frame(rng, 1_000, 0.0).assign(code=rng.choice(codes, 1_000))
    current = frame(rng, 400, 0.0).assign(code=rng.choice(codes, 400))
    assert not domain_classifier(reference, current)["drifted"]


def test_informative_columns_need_two_states_a_missing_value_being_one():
    nan = np.nan
    x = np.array(
        [
            [nan, 1.0, 1.0, 1.0, 2.0],
            [nan, 1.0, nan, 2.0, 2.0],
            [nan, 1.0, 1.0, 3.0, nan],
        ]
    )
    assert informative_columns(x).tolist() == [False, False, True, True, True]


def _categorical_codes(text: pd.Series) -> np.ndarray:
    """Codes of a text column as the classifier's encoding defines them: rank by frequency
    (pandas' value_counts order), the 62 most frequent their own, the rarer one shared code,
    missing values NaN."""
    ranked = text.value_counts().index[:MAX_CATEGORIES]
    codes = pd.Series(pd.Categorical(text, categories=ranked).codes, dtype="float64")
    codes[(codes < 0) & text.notna().to_numpy()] = MAX_CATEGORIES
    codes[text.isna().to_numpy()] = np.nan
    return codes.to_numpy()


def test_the_encoding_gives_the_codes_of_pandas_categoricals():
    """Frequency-ranked codes (ties, more categories than bins, missing values, booleans and
    numbers kept as numbers) are those of a pandas Categorical over the ranked categories."""
    rng = np.random.default_rng(8)
    rows = 2_000
    frame = pd.DataFrame(
        {
            "many": rng.choice([f"k{i}" for i in range(300)], rows),
            "ties": np.repeat(["b", "a", "d", "c"], rows // 4),
            "few": pd.Series(rng.choice(["x", "y", None], rows), dtype="string"),
            "flag": rng.random(rows) < 0.3,
            "amount": rng.normal(size=rows),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "many"] = None
    x, categorical = _encode(frame)
    assert categorical.tolist() == [True, True, True, True, False]
    for i, column in enumerate(["many", "ties", "few", "flag"]):
        expected = _categorical_codes(frame[column].astype("string"))
        np.testing.assert_array_equal(x[:, i], expected)
    np.testing.assert_array_equal(x[:, 4], frame["amount"].to_numpy())
    assert np.nanmax(x[:, 0]) == MAX_CATEGORIES and np.isnan(x[:, 0]).any()


def test_the_classifier_leaves_the_thread_limits_as_it_found_them():
    from threadpoolctl import threadpool_info

    before = threadpool_info()
    rng = np.random.default_rng(9)
    result = domain_classifier(frame(rng, 300, 0.0), frame(rng, 300, 0.9))
    assert result["score"] > 0.5
    assert threadpool_info() == before
