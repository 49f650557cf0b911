"""The bootstrap computes every resample's metrics at once from a count matrix; each must be
exactly what scikit-learn gives on that resample drawn row by row."""

import numpy as np
import pytest

from mlops_assets.training import metrics as m


def resamples(weights: np.ndarray) -> list[np.ndarray]:
    """The row indices each weight row stands for."""
    return [np.repeat(np.arange(weights.shape[1]), row.astype(int)) for row in weights]


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(7)
    y = (rng.random(3_000) < 0.2).astype(int)
    # Rounded scores: many ties, which is where curve-based metrics usually go wrong.
    score = np.round(np.clip(rng.normal(0.25 + 0.25 * y, 0.15), 0, 1), 2)
    return y, score


def test_weights_count_each_row_drawn_and_every_round_has_all_rows():
    weights = m.bootstrap_weights(500, rounds=40, seed=1)
    assert weights.shape == (40, 500)
    assert (weights.sum(axis=1) == 500).all()
    assert (weights == 0).any() and (weights >= 2).any()  # drawn with replacement
    assert np.array_equal(weights, m.bootstrap_weights(500, rounds=40, seed=1))
    assert not np.array_equal(weights, m.bootstrap_weights(500, rounds=40, seed=2))


def test_classification_metrics_of_every_resample_match_scikit_learn(scored):
    y, score = scored
    weights = m.bootstrap_weights(len(y), rounds=25, seed=3)
    values = m.resampled_classification_metrics(y, score, 0.4, weights)
    for r, index in enumerate(resamples(weights)):
        expected = m.classification_metrics(y[index], score[index], 0.4)
        for name, value in expected.items():
            assert values[name][r] == pytest.approx(value, rel=1e-10, abs=1e-12), name


def test_a_resample_with_one_class_has_no_ranking_metrics_but_keeps_the_rest():
    y = np.array([0, 0, 0, 1])
    score = np.array([0.1, 0.2, 0.3, 0.9])
    weights = np.array([[2.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # round 0: no positive
    values = m.resampled_classification_metrics(y, score, 0.5, weights)
    assert np.isnan(values["roc_auc"][0]) and np.isnan(values["pr_auc"][0])
    assert values["accuracy"][0] == 1.0 and values["precision"][0] == 0.0
    assert values["roc_auc"][1] == 1.0 and values["pr_auc"][1] == 1.0


def test_regression_metrics_of_every_resample_match_scikit_learn():
    rng = np.random.default_rng(5)
    y = rng.gamma(2.0, 1_000.0, 2_000)
    predicted = y + rng.normal(0, 400, len(y))
    weights = m.bootstrap_weights(len(y), rounds=25, seed=4)
    values = m.resampled_regression_metrics(y, predicted, weights)
    for r, index in enumerate(resamples(weights)):
        for name, value in m.regression_metrics(y[index], predicted[index]).items():
            assert values[name][r] == pytest.approx(value, rel=1e-9), name


def test_r2_on_a_constant_target_follows_scikit_learn():
    y = np.full(4, 3.0)
    weights = np.ones((1, 4))
    assert m.resampled_regression_metrics(y, y, weights)["r2"][0] == 1.0
    assert m.resampled_regression_metrics(y, y + 1, weights)["r2"][0] == 0.0


def test_intervals_bracket_the_holdout_value(scored):
    y, score = scored
    intervals = m.bootstrap_intervals(y, score, threshold=0.4, rounds=200, seed=42)
    point = m.classification_metrics(y, score, 0.4)
    assert set(intervals) == set(point)
    for name, (low, high) in intervals.items():
        assert low <= point[name] <= high, name
        assert low < high, name
