"""The domain classifier sees what per-column tests cannot: a changed joint distribution."""

import numpy as np
import pandas as pd

from mlops_assets.monitoring.engine import compare_profiles
from mlops_assets.monitoring.multivariate import domain_classifier
from mlops_assets.monitoring.profile import profile_frame

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
