"""Hyperparameter search by cross-validation, on Dask.

The preprocessing depends on the fold only, not on the candidate: each fold's is fitted once
(one task per fold; the training data is scattered to the workers once) and every (candidate,
parameters, fold) fit is one task on that fold's preprocessed rows, exactly what fitting the
whole pipeline on the fold would compute (the pipeline fits its preprocessing, then its
estimator on the preprocessed rows) without preprocessing the same rows once per candidate
(a quarter of the search on the demo data). The longest fits start first, so the workers finish
together. Fits are deterministic (fixed seeds, single-threaded estimators), so a search on any
number of workers gives exactly what a sequential one gives.

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
from collections.abc import Callable
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
    estimator,
    meta_model,
    preprocessor,
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
# A LocalCluster searches only from this many training rows on; below it the fits run in the
# step's own process. The classifier's search on 2 cores, in the step's process against 2
# workers already started (2026-12-03): 453 rows 2.0-2.4 s against 2.4 s, 1,526 rows 2.8-3.1 s
# against 3.5-3.9 s, 4,496 rows 4.6-4.8 s against 4.3-4.4 s, 12,151 rows 7.0-7.7 s against
# 5.8-6.5 s; starting the workers costs ~2.5 s and 6 CPU-s more. A scheduler someone runs
# (DASK_SCHEDULER_ADDRESS) is started already: it gets every search.
PARALLEL_SEARCH_FROM_ROWS = 5_000


def searches_on_cluster(training_rows: int, *, has_scheduler: bool) -> bool:
    """Whether a search of ``training_rows`` goes to the Dask cluster (see
    :data:`PARALLEL_SEARCH_FROM_ROWS`); ``has_scheduler``: a scheduler address is set
    (:attr:`DaskResource.has_scheduler`)."""
    return has_scheduler or training_rows >= PARALLEL_SEARCH_FROM_ROWS


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


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold's rows, preprocessed by the preprocessing fitted on its
    training rows: the training rows, their targets, the validation rows, and the evenly spaced
    training rows (at most ``TRAIN_SCORE_ROWS``) the train score is measured on."""

    train: np.ndarray
    y_train: np.ndarray
    validation: np.ndarray
    scored: slice


def prepare_fold(
    x: pd.DataFrame, y: np.ndarray, spec: FeatureSpec, train: np.ndarray, val: np.ndarray
) -> Fold:
    """The fold's preprocessing fitted on ``train`` and applied to its rows, as a candidate's
    pipeline would (fit_transform on the training rows, transform on the validation rows)."""
    with threadpool_limits(1):
        prepare = preprocessor(spec)
        fitted = prepare.fit_transform(x.iloc[train], y[train])
        validation = prepare.transform(x.iloc[val])
    return Fold(
        fitted,
        y[train],
        validation,
        slice(None, None, max(1, math.ceil(len(train) / TRAIN_SCORE_ROWS))),
    )


def fit_prepared(
    fold: Fold, name: str, params: dict, seed: int, classifier: bool
) -> tuple[np.ndarray, float]:
    """One candidate fitted on a prepared fold: its out-of-fold predictions and its train score.
    Native thread pools are limited to one thread: parallelism is the workers', not OpenMP's."""
    with threadpool_limits(1):
        model = estimator(name, params, seed=seed, classifier=classifier)
        model.fit(fold.train, fold.y_train)
        train_score = score(
            fold.y_train[fold.scored],
            predict(model, fold.train[fold.scored], classifier),
            classifier,
        )
        return predict(model, fold.validation, classifier), train_score


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
    spec: FeatureSpec,
    splits: list[tuple[np.ndarray, np.ndarray]],
    calls: list[tuple],
    costs: list[float],
    placement: Placement,
    meanwhile: Callable[[], object] | None = None,
) -> list:
    """``fit_prepared(fold, *call)`` for every call ``(fold number, name, params, seed,
    classifier)``, the folds prepared from ``splits``: on the Dask ``client`` when there is one
    (data scattered once, one task per fold, then one per fit, the costliest first), else here,
    in order. ``meanwhile`` runs here while the workers fit (with one native thread: the cores
    are theirs). ``placement`` counts the fits per worker."""
    if client is not None:
        try:
            x_remote, y_remote = client.scatter([x, y], broadcast=True)
            folds = [
                client.submit(prepare_fold, x_remote, y_remote, spec, train, val, pure=False,
                              priority=1_000_000)
                for train, val in splits
            ]  # fmt: skip
            futures = [
                client.submit(
                    located,
                    fit_prepared,
                    folds[fold],
                    *call,
                    pure=False,
                    priority=round(cost * 1000),
                )
                for (fold, *call), cost in zip(calls, costs, strict=True)
            ]
        except Exception as error:
            log.warning(f"Dask search failed ({error!r}); running the {len(calls)} fits here")
        else:
            _run(meanwhile)
            try:
                outcomes = client.gather(futures)
            except Exception as error:
                # A cluster fault (a worker lost mid-task) must not fail training: the fits
                # are deterministic, so running them here gives the same result, or the fit's
                # real error.
                log.warning(f"Dask search failed ({error!r}); running the {len(calls)} fits here")
            else:
                placement.update(where for where, _ in outcomes)
                return [fit for _, fit in outcomes]
            meanwhile = None  # it ran
    _run(meanwhile)
    placement[LOCAL] += len(calls)
    folds = [prepare_fold(x, y, spec, train, val) for train, val in splits]
    return [fit_prepared(folds[fold], *call) for fold, *call in calls]


def _run(task: Callable[[], object] | None) -> None:
    if task is not None:
        with threadpool_limits(1):
            task()


def search(
    data: TrainingData,
    *,
    cv: str,
    folds: int,
    seed: int,
    client=None,
    meanwhile: Callable[[], object] | None = None,
) -> SearchResult:
    """Cross-validate the grid of every candidate of the model, then (when it names
    ``stacking``) a stacking ensemble of the best ``STACKED`` candidates. ``meanwhile``: work
    of the caller's that does not need the search, run while the workers fit."""
    classifier = data.model.is_classifier
    splits = cv_splits(cv, data.y_train, folds=folds, seed=seed, classifier=classifier)
    configs = [(c, params) for c in base_candidates(data.model) for params in c.param_sets()]
    calls, costs = [], []
    for candidate, params in configs:
        for fold in range(len(splits)):
            calls.append((fold, candidate.name, params, seed, classifier))
            costs.append(candidate.cost)
    result, level_one = SearchResult(), {}
    outputs = iter(
        run_fits(
            client, data.x_train, data.y_train, data.spec, splits, calls, costs,
            result.placement, meanwhile,
        )
    )  # fmt: skip
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
