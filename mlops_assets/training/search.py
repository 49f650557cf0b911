"""Hyperparameter search by cross-validation, on Dask.

Every (candidate, parameters, fold) fit is one task: whole fits are sent to the workers and the
training data is scattered to them once, so the only traffic per task is its parameters and its
out-of-fold predictions. The longest fits start first, so the workers finish together. Fits are
deterministic (fixed seeds, single-threaded estimators), so a search on any number of workers
gives exactly what a sequential one gives.

Scores are computed on the pooled out-of-fold predictions, which makes leave-one-out (one row
per fold) well defined; train scores are averaged over folds, so over- and under-fitting show as
the gap between the two.

The stacking ensemble is scored the way H2O's stacked ensembles are: its meta-model is
cross-validated on the base candidates' out-of-fold probabilities ("level-one data"), which the
search has already computed, instead of refitting every base model inside every fold. Its
train score is the meta-model's on the level-one data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.model_selection import KFold, LeaveOneOut, StratifiedKFold, TimeSeriesSplit
from threadpoolctl import threadpool_limits

from mlops_assets.parallel import LOCAL, Placement, located
from mlops_assets.training.candidates import (
    STACKING,
    base_candidates,
    build_pipeline,
    build_stacking,
    meta_model,
    stacks,
)
from mlops_assets.training.dataset import FeatureSpec, TrainingData

log = logging.getLogger(__name__)
CV_STRATEGIES = ("stratified_kfold", "time_series", "leave_one_out")
LEAVE_ONE_OUT_MAX_ROWS = 300  # one fit per row: only for tiny datasets
STACKED = 3  # the best candidates that enter the stacking ensemble
# Rows the train score (for the over/under-fitting gap) is measured on: predicting every
# training row cost 15-20 % of each fit, for a number that moves in the third decimal.
TRAIN_SCORE_ROWS = 5_000


def cv_splits(
    strategy: str, y: np.ndarray, *, folds: int, seed: int, classifier: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/validation indices. Rows are in time order, so ``time_series`` validates on later
    rows than it trains on."""
    if strategy == "stratified_kfold":
        splitter = (
            StratifiedKFold(folds, shuffle=True, random_state=seed)
            if classifier
            else KFold(folds, shuffle=True, random_state=seed)
        )
    elif strategy == "time_series":
        splitter = TimeSeriesSplit(folds)
    elif strategy == "leave_one_out":
        if len(y) > LEAVE_ONE_OUT_MAX_ROWS:
            raise ValueError(
                f"leave_one_out needs one fit per row: {len(y)} rows is more than "
                f"{LEAVE_ONE_OUT_MAX_ROWS}; use stratified_kfold or time_series"
            )
        splitter = LeaveOneOut()
    else:
        raise ValueError(f"unknown cv strategy {strategy!r}: choose one of {CV_STRATEGIES}")
    return [(train, val) for train, val in splitter.split(np.zeros(len(y)), y)]


def score(y: np.ndarray, prediction: np.ndarray, classifier: bool) -> float:
    """The selection score, higher is better: ROC-AUC, or minus the RMSE."""
    if classifier:
        return float(skm.roc_auc_score(y, prediction)) if len(np.unique(y)) == 2 else float("nan")
    return -float(np.sqrt(skm.mean_squared_error(y, prediction)))


def predict(model, x: pd.DataFrame, classifier: bool) -> np.ndarray:
    return model.predict_proba(x)[:, 1] if classifier else model.predict(x)


def make_model(
    name: str, params: dict, spec: FeatureSpec, seed: int, classifier: bool, folds: int = 3
):
    if name == STACKING:
        return build_stacking(params, spec, seed=seed, folds=folds)
    return build_pipeline(name, params, spec, seed=seed, classifier=classifier)


def fit_fold(
    x: pd.DataFrame,
    y: np.ndarray,
    name: str,
    params: dict,
    spec: FeatureSpec,
    seed: int,
    classifier: bool,
    train: np.ndarray,
    val: np.ndarray,
) -> tuple[np.ndarray, float]:
    """One fit on ``train``: out-of-fold predictions for ``val`` and the train score, on at
    most ``TRAIN_SCORE_ROWS`` evenly spaced training rows. Native thread pools are limited to
    one thread: parallelism is the workers', not OpenMP's."""
    with threadpool_limits(1):
        model = make_model(name, params, spec, seed, classifier).fit(x.iloc[train], y[train])
    scored = train[:: max(1, math.ceil(len(train) / TRAIN_SCORE_ROWS))]
    train_score = score(y[scored], predict(model, x.iloc[scored], classifier), classifier)
    return predict(model, x.iloc[val], classifier), train_score


@dataclass
class Trial:
    candidate: str
    params: dict
    cv_score: float
    train_score: float


@dataclass
class SearchResult:
    trials: list[Trial] = field(default_factory=list)
    placement: Placement = field(default_factory=Placement)  # fits per worker

    def best(self) -> dict[str, Trial]:
        """The best trial of each candidate."""
        best: dict[str, Trial] = {}
        for trial in self.trials:
            current = best.get(trial.candidate)
            if current is None or _better(trial.cv_score, current.cv_score):
                best[trial.candidate] = trial
        return best


def _better(a: float, b: float) -> bool:
    return not np.isnan(a) and (np.isnan(b) or a > b)


def run_fits(
    client,
    x: pd.DataFrame,
    y: np.ndarray,
    calls: list[tuple],
    costs: list[float],
    placement: Placement,
) -> list:
    """``fit_fold(x, y, *call)`` for every call: on the Dask ``client`` when there is one
    (data scattered once, one task per fit, the costliest first), else here, in order.
    ``placement`` counts the fits per worker."""
    if client is not None:
        try:
            x_remote, y_remote = client.scatter([x, y], broadcast=True)
            futures = [
                client.submit(
                    located,
                    fit_fold,
                    x_remote,
                    y_remote,
                    *call,
                    pure=False,
                    priority=round(cost * 1000),
                )
                for call, cost in zip(calls, costs, strict=True)
            ]
            outcomes = client.gather(futures)
        except Exception as error:
            # A cluster fault (a worker lost mid-task) must not fail training: the fits are
            # deterministic, so running them here gives the same result, or the fit's real
            # error.
            log.warning(f"Dask search failed ({error!r}); running the {len(calls)} fits here")
        else:
            placement.update(where for where, _ in outcomes)
            return [fit for _, fit in outcomes]
    placement[LOCAL] += len(calls)
    return [fit_fold(x, y, *call) for call in calls]


def search(data: TrainingData, *, cv: str, folds: int, seed: int, client=None) -> SearchResult:
    """Cross-validate the grid of every candidate of the model, then (when it names
    ``stacking``) a stacking ensemble of the best ``STACKED`` candidates."""
    classifier = data.model.is_classifier
    splits = cv_splits(cv, data.y_train, folds=folds, seed=seed, classifier=classifier)
    configs = [(c, params) for c in base_candidates(data.model) for params in c.param_sets()]
    calls, costs = [], []
    for candidate, params in configs:
        for train, val in splits:
            calls.append((candidate.name, params, data.spec, seed, classifier, train, val))
            costs.append(candidate.cost)
    result, level_one = SearchResult(), {}
    outputs = iter(run_fits(client, data.x_train, data.y_train, calls, costs, result.placement))
    for candidate, params in configs:
        folds_out = [next(outputs) for _ in splits]
        index = np.concatenate([val for _, val in splits])
        prediction = np.concatenate([p for p, _ in folds_out])
        order = np.argsort(index, kind="stable")  # back to time order
        index, prediction = index[order], prediction[order]
        cv_score = score(data.y_train[index], prediction, classifier)
        train_score = float(np.nanmean([t for _, t in folds_out]))
        result.trials.append(Trial(candidate.name, params, cv_score, train_score))
        level_one[len(result.trials) - 1] = (index, prediction)
    if stacks(data.model):
        best: dict[str, int] = {}  # candidate -> index of its best trial
        for i, trial in enumerate(result.trials):
            j = best.get(trial.candidate)
            if j is None or _better(trial.cv_score, result.trials[j].cv_score):
                best[trial.candidate] = i
        chosen = sorted(
            best.values(), key=lambda i: -np.nan_to_num(result.trials[i].cv_score, nan=-1)
        )[:STACKED]
        result.trials.append(_stacking_trial(data, result, level_one, chosen, cv, folds, seed))
    return result


def _stacking_trial(data, result, level_one, chosen, cv, folds, seed) -> Trial:
    """Cross-validate the meta-model on the chosen trials' out-of-fold probabilities."""
    index = level_one[chosen[0]][0]
    x = np.column_stack([level_one[i][1] for i in chosen])
    y = data.y_train[index]
    splits = cv_splits(cv, y, folds=folds, seed=seed, classifier=True)
    pooled, train_scores = [], []
    for train, val in splits:
        meta = meta_model().fit(x[train], y[train])
        pooled.append(meta.predict_proba(x[val])[:, 1])
        train_scores.append(score(y[train], meta.predict_proba(x[train])[:, 1], True))
    validated = np.concatenate([val for _, val in splits])
    return Trial(
        STACKING,
        {result.trials[i].candidate: result.trials[i].params for i in chosen},
        score(y[validated], np.concatenate(pooled), True),
        float(np.nanmean(train_scores)),
    )
