"""Validation splits and the search: time order, leave-one-out, Dask = sequential."""

import numpy as np
import pytest

from mlops_assets import catalogue
from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.search import LEAVE_ONE_OUT_MAX_ROWS, cv_splits, search

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)


@pytest.fixture(scope="module")
def data(features_con):
    return load_training_data(features_con, catalogue.model("default_classifier"))


@pytest.fixture(scope="module")
def sequential(data):
    """The search in this process, as the Dask search and the stacking refit are compared."""
    return search(data, cv="stratified_kfold", folds=3, seed=7)


def test_holdout_is_the_latest_applications_never_a_random_split(features_con, data):
    applied = dict(
        features_con.execute(
            "select application_id, applied_at from features.loan_features"
        ).fetchall()
    )
    holdout_times = [applied[i] for i in data.ids_holdout]
    assert min(holdout_times) == data.split_at
    train_ids = features_con.execute(
        "select application_id from features.loan_features where is_labelled "
        "order by applied_at, application_id"
    ).fetchall()[: len(data.y_train)]
    assert max(applied[i] for (i,) in train_ids) <= data.split_at
    assert len(data.y_holdout) == round(data.rows * 0.2)


def test_time_series_cv_always_validates_on_later_rows(data):
    for train, val in cv_splits("time_series", data.y_train, folds=4, seed=0, classifier=True):
        assert train.max() < val.min()


def test_stratified_folds_keep_the_default_rate(data):
    rate = data.y_train.mean()
    for _, val in cv_splits("stratified_kfold", data.y_train, folds=3, seed=0, classifier=True):
        assert abs(data.y_train[val].mean() - rate) < 0.02


def test_leave_one_out_is_for_tiny_data_only(data):
    tiny = data.y_train[:40]
    assert len(cv_splits("leave_one_out", tiny, folds=0, seed=0, classifier=True)) == 40
    with pytest.raises(ValueError, match="leave_one_out needs one fit per row"):
        cv_splits(
            "leave_one_out", np.zeros(LEAVE_ONE_OUT_MAX_ROWS + 1), folds=0, seed=0, classifier=True
        )


def test_search_on_dask_equals_the_sequential_search(data, sequential, dask_client):
    on_dask = search(data, cv="stratified_kfold", folds=3, seed=7, client=dask_client)
    assert [(t.candidate, t.params, t.cv_score, t.train_score) for t in on_dask.trials] == [
        (t.candidate, t.params, t.cv_score, t.train_score) for t in sequential.trials
    ]
    candidates = {t.candidate for t in sequential.trials}
    assert candidates == {
        "logistic_l1", "logistic_l2", "random_forest", "hist_gradient_boosting", "stacking"
    }  # fmt: skip
    # Train and validation scores are both reported, so over-fitting is visible.
    forest = max((t for t in sequential.trials if t.candidate == "random_forest"),
                 key=lambda t: t.train_score)  # fmt: skip
    assert forest.train_score > forest.cv_score


def test_stacking_refit_learns_the_meta_model_the_search_scored(data, sequential):
    """The search scores stacking on the base candidates' out-of-fold probabilities; the
    refit's StackingClassifier builds its meta-model from the same folds, so it is the same
    model: the search's score is the score of the ensemble that would ship."""
    from mlops_assets.training.candidates import meta_model
    from mlops_assets.training.search import cv_splits, make_model

    stacking = next(t for t in sequential.trials if t.candidate == "stacking")
    assert len(stacking.params) == 3
    assert not np.isnan(stacking.train_score)
    refit = make_model("stacking", stacking.params, data.spec, 7, True, 3).fit(
        data.x_train, data.y_train
    )
    splits = cv_splits("stratified_kfold", data.y_train, folds=3, seed=7, classifier=True)
    level_one = np.zeros((len(data.y_train), 3))
    for column, (name, params) in enumerate(stacking.params.items()):
        for train, val in splits:
            level_one[val, column], _ = _fit_fold(data, name, params, 7, train, val)
    expected = meta_model().fit(level_one, data.y_train)
    np.testing.assert_allclose(refit.final_estimator_.coef_, expected.coef_, rtol=1e-6)


@pytest.mark.parametrize("cv, folds, rows", [("time_series", 3, None), ("leave_one_out", 0, 20)])
def test_every_cv_strategy_scores_every_candidate_and_the_stacking(
    data, dask_client, cv, folds, rows
):
    subset = data if rows is None else _head(data, rows)
    assert 0 < subset.y_train.sum() < len(subset.y_train)
    result = search(subset, cv=cv, folds=folds, seed=3, client=dask_client)
    assert [t.candidate for t in result.trials][-1] == "stacking"
    assert len(result.trials) == 9
    for trial in result.trials:
        assert 0.0 <= trial.cv_score <= 1.0, trial


def _head(data, rows):
    from dataclasses import replace

    return replace(data, x_train=data.x_train.iloc[:rows], y_train=data.y_train[:rows])


def _fit_fold(data, name, params, seed, train, val):
    """One candidate fitted on a fold as the search fits it: the fold prepared once, then the
    estimator on its preprocessed rows."""
    from mlops_assets.training.search import fit_prepared, prepare_fold

    fold = prepare_fold(data.x_train, data.y_train, data.spec, train, val)
    return fit_prepared(fold, name, params, seed, data.model.is_classifier)


def test_the_train_score_is_measured_on_evenly_spaced_training_rows(data, monkeypatch):
    from mlops_assets.training import search as search_module
    from mlops_assets.training.search import make_model, predict, score

    train, val = cv_splits("stratified_kfold", data.y_train, folds=3, seed=7, classifier=True)[0]
    args = (data, "logistic_l2", {"C": 0.5}, 7, train, val)
    model = make_model("logistic_l2", {"C": 0.5}, data.spec, 7, True).fit(
        data.x_train.iloc[train], data.y_train[train]
    )

    def train_score_on(rows: np.ndarray) -> float:
        return score(data.y_train[rows], predict(model, data.x_train.iloc[rows], True), True)

    monkeypatch.setattr(search_module, "TRAIN_SCORE_ROWS", len(train))  # every row
    assert _fit_fold(*args)[1] == train_score_on(train)
    monkeypatch.setattr(search_module, "TRAIN_SCORE_ROWS", 100)
    out_of_fold, sampled = _fit_fold(*args)
    evenly_spaced = train[:: -(-len(train) // 100)]
    assert 50 <= len(evenly_spaced) <= 100
    assert sampled == train_score_on(evenly_spaced) != train_score_on(train)
    np.testing.assert_array_equal(out_of_fold, predict(model, data.x_train.iloc[val], True))


@pytest.mark.parametrize("model", ["default_classifier", "loss_regressor"])
def test_a_fit_on_a_prepared_fold_is_the_whole_pipeline_s_fit(features_con, model):
    """The search prepares each fold once for every candidate: each candidate's out-of-fold
    predictions and train score are exactly those of its whole pipeline fitted on the fold."""
    from mlops_assets.training.candidates import base_candidates
    from mlops_assets.training.search import make_model, predict, score

    data = load_training_data(features_con, catalogue.model(model))
    classifier = data.model.is_classifier
    train, val = cv_splits(
        "stratified_kfold", data.y_train, folds=3, seed=7, classifier=classifier
    )[1]
    scored = train[:: -(-len(train) // 5_000)]
    for candidate in base_candidates(data.model):
        params = candidate.param_sets()[-1]
        pipeline = make_model(candidate.name, params, data.spec, 7, classifier).fit(
            data.x_train.iloc[train], data.y_train[train]
        )
        out_of_fold, train_score = _fit_fold(data, candidate.name, params, 7, train, val)
        np.testing.assert_array_equal(
            out_of_fold, predict(pipeline, data.x_train.iloc[val], classifier)
        )
        assert train_score == score(
            data.y_train[scored],
            predict(pipeline, data.x_train.iloc[scored], classifier),
            classifier,
        )
