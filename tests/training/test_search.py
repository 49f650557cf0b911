"""Validation splits and the search: time order, leave-one-out, Dask = sequential."""

import numpy as np
import pytest

from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.search import LEAVE_ONE_OUT_MAX_ROWS, cv_splits, search


@pytest.fixture(scope="module")
def data(features_con):
    return load_training_data(features_con, "default_classifier")


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


def test_search_on_dask_equals_the_sequential_search(data, dask_client):
    sequential = search(data, cv="stratified_kfold", folds=3, seed=7)
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
