"""Candidate models: scikit-learn pipelines with the preprocessing inside, so a model is one
artefact that takes the feature table's columns as they are.

Preprocessing: numeric features are imputed with the training median (with a missing-value
indicator, so "missing" can carry signal) and standardised; categorical features are imputed
with the most frequent value and one-hot encoded, ignoring categories unseen in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    StackingClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Lasso, LogisticRegression, Ridge
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_assets.training.dataset import FeatureSpec
from mlops_assets.training.spec import CLASSIFICATION, REGRESSION, ModelSpec, SpecError


def preprocessor(spec: FeatureSpec) -> ColumnTransformer:
    numeric = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
    )
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent", keep_empty_features=True),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, list(spec.numeric)),
            ("categorical", categorical, list(spec.categorical)),
        ]
    )


@dataclass(frozen=True)
class Candidate:
    """An estimator family, the tasks it serves and the small grid searched for it."""

    name: str
    family: str  # what the mission calls it: regularisation, bagging, boosting, stacking
    tasks: frozenset[str]
    grid: dict[str, list] = field(default_factory=dict)
    # Relative cost of one fit (about seconds per fit of 20k rows on this machine). The search
    # starts the longest fits first, so the workers finish together instead of one waiting
    # on a forest that started last.
    cost: float = 1.0

    def param_sets(self) -> list[dict]:
        keys = sorted(self.grid)
        return [
            dict(zip(keys, values, strict=True))
            for values in product(*(self.grid[k] for k in keys))
        ]


BOTH = frozenset({CLASSIFICATION, REGRESSION})
STACKING = "stacking"
# Every candidate a model may name, by name.
CATALOGUE = {
    c.name: c
    for c in (
        # liblinear's L1 slows down fast as C grows (0.6 s at 0.01, 3.5 s at 0.5 on 30k rows)
        # while the AUC stops moving above 0.05.
        Candidate(
            "logistic_l1",
            "regularisation (L1, lasso)",
            frozenset({CLASSIFICATION}),
            {"C": [0.01, 0.1]},
            cost=0.5,
        ),
        Candidate(
            "logistic_l2",
            "regularisation (L2, ridge)",
            frozenset({CLASSIFICATION}),
            {"C": [0.05, 0.5]},
            cost=0.4,
        ),
        Candidate(
            "random_forest",
            "bagging",
            BOTH,
            {"max_depth": [6, 10], "min_samples_leaf": [20]},
            cost=0.7,
        ),
        # Learning rate 0.05 scored the same cross-validated AUC as 0.1 on the demo data
        # (0.7927) and took 1.6x as long (more rounds before early stopping); 0.2 is the
        # cheaper neighbour.
        Candidate(
            "hist_gradient_boosting",
            "boosting",
            frozenset({CLASSIFICATION}),
            {"learning_rate": [0.1, 0.2], "max_leaf_nodes": [15]},
            cost=0.7,
        ),
        Candidate("adaboost", "boosting", BOTH, {"learning_rate": [0.5, 1.0]}, cost=0.6),
        # Scored on the base candidates' out-of-fold probabilities (see search.py): no grid.
        Candidate(STACKING, "stacking", frozenset({CLASSIFICATION})),
        Candidate(
            "ridge",
            "regularisation (L2)",
            frozenset({REGRESSION}),
            {"alpha": [1.0, 10.0]},
            cost=0.1,
        ),
        Candidate(
            "lasso",
            "regularisation (L1)",
            frozenset({REGRESSION}),
            {"alpha": [1.0, 10.0]},
            cost=0.1,
        ),
        # Histogram gradient boosting for regression (its name kept so versions compare).
        Candidate(
            "gradient_boosting",
            "boosting",
            frozenset({REGRESSION}),
            {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15]},
            cost=0.6,
        ),
    )
}
# What a model searches when it names no candidates.
DEFAULT_CANDIDATES = {
    CLASSIFICATION: (
        "logistic_l1", "logistic_l2", "random_forest", "hist_gradient_boosting", STACKING,
    ),
    REGRESSION: ("ridge", "lasso", "gradient_boosting"),
}  # fmt: skip


def check_candidates(spec: ModelSpec) -> None:
    """SpecError, naming the model and the candidate, for a candidate that is not in the
    catalogue or does not serve the model's task, or a stacking ensemble with nothing to
    stack."""
    names = candidate_names(spec)
    for name in names:
        candidate = CATALOGUE.get(name)
        if candidate is None:
            raise SpecError(
                f"model {spec.name}: unknown candidate {name!r}; the candidates are "
                f"{', '.join(CATALOGUE)}"
            )
        if spec.task not in candidate.tasks:
            serving = [n for n, c in CATALOGUE.items() if spec.task in c.tasks]
            raise SpecError(
                f"model {spec.name}: candidate {name!r} is not a {spec.task} candidate "
                f"({', '.join(serving)})"
            )
    if not [n for n in names if n != STACKING]:
        raise SpecError(f"model {spec.name}: name at least one candidate besides stacking")


def candidate_names(spec: ModelSpec) -> tuple[str, ...]:
    return spec.candidates if spec.candidates is not None else DEFAULT_CANDIDATES[spec.task]


def base_candidates(spec: ModelSpec) -> tuple[Candidate, ...]:
    """The candidates ``spec`` searches a grid of (all but the stacking ensemble), checked."""
    check_candidates(spec)
    return tuple(CATALOGUE[n] for n in candidate_names(spec) if n != STACKING)


def stacks(spec: ModelSpec) -> bool:
    """Whether ``spec`` also scores a stacking ensemble of its best candidates."""
    return STACKING in candidate_names(spec)


def estimator(name: str, params: dict, *, seed: int, classifier: bool):
    """The bare estimator of a candidate with ``params``, for a classifier or a regressor."""
    if name in ("logistic_l1", "logistic_l2"):
        l1 = name == "logistic_l1"
        return LogisticRegression(
            C=params["C"],
            l1_ratio=1.0 if l1 else 0.0,
            solver="liblinear" if l1 else "lbfgs",  # liblinear: 3-8x faster than saga for L1
            max_iter=2000,
            random_state=seed,
        )
    if name == "random_forest":
        # Each tree on a bootstrap sample of 30 % of the rows: 100 such trees fit 2.7x faster
        # than 150 full ones with the same holdout AUC on the demo data (0.7855 vs 0.7858 at
        # depth 10, 0.7803 vs 0.7795 at depth 6), and 60 trees 1.6x faster again for 0.001
        # less cross-validated AUC (0.7821 vs 0.7830 at depth 10).
        forest = RandomForestClassifier if classifier else RandomForestRegressor
        return forest(n_estimators=60, max_samples=0.3, random_state=seed, n_jobs=1, **params)
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=200, random_state=seed, **params)
    if name == "adaboost":
        boost = AdaBoostClassifier if classifier else AdaBoostRegressor
        return boost(n_estimators=50, random_state=seed, **params)
    if name == "ridge":
        return Ridge(**params)
    if name == "lasso":
        return Lasso(max_iter=5000, random_state=seed, **params)
    if name == "gradient_boosting":
        return HistGradientBoostingRegressor(max_iter=200, random_state=seed, **params)
    raise ValueError(f"unknown candidate {name}")


def build_pipeline(
    name: str, params: dict, spec: FeatureSpec, *, seed: int, classifier: bool
) -> Pipeline:
    return Pipeline(
        [
            ("prepare", preprocessor(spec)),
            ("model", estimator(name, params, seed=seed, classifier=classifier)),
        ]
    )


def meta_model() -> LogisticRegression:
    """The stacking ensemble's meta-model over its base candidates' probabilities."""
    return LogisticRegression(max_iter=1000)


def stacking_folds(folds: int, seed: int) -> StratifiedKFold:
    """The folds whose out-of-fold probabilities train the meta-model: the same as the
    search's ``stratified_kfold``, so a refit learns the meta-model the search scored."""
    return StratifiedKFold(folds, shuffle=True, random_state=seed)


def build_stacking(
    best: dict[str, dict], spec: FeatureSpec, *, seed: int, folds: int = 3
) -> StackingClassifier:
    """A stacking ensemble of the tuned candidates ``best`` (name -> params) with a logistic
    meta-model over their out-of-fold probabilities. Each base model is a whole pipeline, so
    its preprocessing is fitted inside each fold, exactly as in the search."""
    return StackingClassifier(
        estimators=[
            (n, build_pipeline(n, p, spec, seed=seed, classifier=True)) for n, p in best.items()
        ],
        final_estimator=meta_model(),
        cv=stacking_folds(folds, seed),
        stack_method="predict_proba",
    )
