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


class _Opaque:
    """The same fitted model seen as any model (not a pipeline): predicted on stacked copies of
    the frame."""

    def __init__(self, model):
        self.model = model

    def predict_proba(self, x):
        return self.model.predict_proba(x)

    def predict(self, x):
        return self.model.predict(x)


def test_a_pipeline_s_variants_preprocessed_once_equal_its_predictions_of_each_copy(fitted):
    """A pipeline's shuffles and grid values are built on the sample preprocessed once; any
    other model predicts stacked copies of the sample: the same importances and partial
    dependence."""
    from mlops_assets.training.diagnostics import _preprocessed

    model, data = fitted
    classifier = data.model.is_classifier
    assert _preprocessed(model, data.x_holdout.head(5)) is not None
    assert _preprocessed(_Opaque(model), data.x_holdout.head(5)) is None
    importance = top_features(model, data, seed=2, repeats=2)
    copies = top_features(_Opaque(model), data, seed=2, repeats=2)
    np.testing.assert_allclose(importance, copies[importance.index], atol=1e-12)
    x = _sample(data, 2)[0]
    for feature in ("annual_income", "bureau_score", "term_months"):
        grid, average = partial_dependence(model, x, feature, classifier)
        grid_copies, average_copies = partial_dependence(_Opaque(model), x, feature, classifier)
        np.testing.assert_array_equal(grid, grid_copies)
        np.testing.assert_allclose(average, average_copies, rtol=1e-12)
