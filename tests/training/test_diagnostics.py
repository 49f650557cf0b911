"""Model explanations: permutation importance and partial dependence, each scored in one
prediction over stacked copies of the sample, give what one prediction per shuffle or grid
value gives (and what scikit-learn's partial dependence gives)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.inspection import partial_dependence as sklearn_partial_dependence

from mlops_assets import catalogue
from mlops_assets.training.candidates import build_pipeline
from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.diagnostics import _sample, partial_dependence, top_features
from mlops_assets.training.search import predict, score


@pytest.fixture(scope="module", params=["default_classifier", "loss_regressor"])
def fitted(request, features_con):
    data = load_training_data(features_con, catalogue.model(request.param))
    name = (
        "hist_gradient_boosting" if request.param == "default_classifier" else "gradient_boosting"
    )
    model = build_pipeline(
        name, {"max_leaf_nodes": 7}, data.spec, seed=3, classifier=data.model.is_classifier
    )
    return model.fit(data.x_train, data.y_train), data


def test_permutation_importance_is_the_mean_score_drop_of_each_shuffle(fitted):
    model, data = fitted
    classifier = data.model.is_classifier
    importance = top_features(model, data, seed=5, repeats=2)

    x, y = _sample(data, 5)
    rng = np.random.default_rng(5)  # the same shuffles, one prediction each
    baseline = score(y, predict(model, x, classifier), classifier)
    expected = {}
    for column in x.columns:
        drops = []
        for _ in range(2):
            shuffled = x.copy()
            shuffled[column] = x[column].to_numpy()[rng.permutation(len(x))]
            drops.append(baseline - score(y, predict(model, shuffled, classifier), classifier))
        expected[column] = np.mean(drops)
    np.testing.assert_allclose(importance[list(expected)], list(expected.values()), atol=1e-12)
    assert importance.is_monotonic_decreasing  # largest first
    assert importance.iloc[0] > 0  # something matters to a fitted model
    unused = [c for c in x.columns if x[c].nunique(dropna=False) == 1]
    assert all(importance[c] == 0 for c in unused)  # shuffling a constant changes nothing


def test_partial_dependence_matches_scikit_learn_on_the_same_grid(fitted):
    model, data = fitted
    classifier = data.model.is_classifier
    x = _sample(data, 5)[0]
    for feature in ("annual_income", "term_months"):
        grid, average = partial_dependence(model, x, feature, classifier)
        assert 1 < len(grid) <= 20 and np.all(np.diff(grid) > 0)
        values = x[feature].dropna()
        assert grid[0] >= values.min() and grid[-1] <= values.max()
        reference = sklearn_partial_dependence(
            model,
            x,
            [feature],
            custom_values={feature: grid},
            kind="average",
            method="brute",
            response_method="predict_proba" if classifier else "auto",
        )
        np.testing.assert_allclose(average, reference["average"][0], rtol=1e-10)
