"""SHAP explanations of a fitted candidate, per feature of its signature, and reason codes.

The ``shap`` explainer depends on the model:

- ``tree`` (random forests, histogram gradient boosting): ``shap.TreeExplainer`` on the
  preprocessed matrix, path-dependent (the trees' own training cover: no background). The scale
  is the model's raw output: log-odds for gradient boosting, the probability for a forest
  (it averages the trees' class shares), the target's units for a regressor.
- ``linear`` (logistic regression, ridge, lasso): ``shap.LinearExplainer`` on the preprocessed
  matrix against the background's mean: log-odds for a logistic regression.
- ``permutation`` (AdaBoost, stacking, anything else): ``shap.PermutationExplainer`` on the
  features as they are (categories as codes), against a small background sample, on the
  probability scale (the target's units for a regressor).

A preprocessed column's contribution goes to the feature it came from (a one-hot column to
its category's feature, a missing-value indicator to its numeric feature), so contributions
are per feature and add up to the model's output on its scale minus the expected value.

The background is the model's ``reference_sample.parquet`` (rows of its training period,
features only, no identifier: the drift reference already stored and sealed with every
version): no further copy of training rows is made for explanations.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import Lasso, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline

from mlops_assets.monitoring.reference import reference_sample
from mlops_assets.text import printable
from mlops_assets.training.dataset import FeatureSpec, TrainingData

TREE, LINEAR, PERMUTATION = "tree", "linear", "permutation"
LOG_ODDS, PROBABILITY = "log-odds", "probability"
TREES = (
    RandomForestClassifier,
    RandomForestRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
LINEARS = (LogisticRegression, Ridge, Lasso)
# Background rows of the permutation explainer, and its antithetic permutations per row
# (max_evals = 2 x features + 1 per permutation). Each explained row costs
# PERMUTATIONS x (2 x features + 1) x BACKGROUND_ROWS model rows: with 24 features, 16 rows
# and one permutation, about 800 (fewer where the row equals the background). Measured on a
# stacking ensemble of four candidates: ~50 rows/s per core (AdaBoost ~150), 3,000 flagged
# rows in ~50 s on two Dask workers. Contributions add up exactly whatever the settings; more
# rows and permutations make them less noisy and cost proportionally more.
BACKGROUND_ROWS = 16
PERMUTATIONS = 1
BATCH_ROWS = 250  # rows whose masked variants are predicted in one call (memory ~40 MB)
TOP_REASONS = 4
SEED = 0
# shap's permutation explainer draws its permutations from numpy's global generator: the
# recording and the replaying pass of one batch must draw the same ones, so one batch at a
# time per process takes them (the model's predictions run outside the lock).
_PERMUTATION_LOCK = threading.Lock()


def load_shap() -> ModuleType:
    """shap, its numba kernels kept on disk once compiled, for the next process
    (:mod:`mlops_assets.training.shap_kernels`: in a later process, a training's global
    explanation of 1,500 rows takes 1.6 s instead of 6.4)."""
    import shap

    from mlops_assets.training.shap_kernels import keep_compiled_kernels

    keep_compiled_kernels(shap)
    return shap


@dataclass(frozen=True)
class Explanation:
    """SHAP values of some rows: ``expected_value + contributions.sum(axis=1) == output``."""

    method: str  # tree | linear | permutation
    scale: str  # log-odds | probability | "<target> units"
    expected_value: float
    output: np.ndarray  # the model's output on ``scale``, one per row
    contributions: pd.DataFrame  # one column per feature (signature order), indexed like x

    def additivity_error(self) -> float:
        """The largest difference between the output and the expected value plus the sum."""
        total = self.expected_value + self.contributions.to_numpy().sum(axis=1)
        return float(np.max(np.abs(total - self.output), initial=0.0))


def signature_features(signature: dict) -> FeatureSpec:
    """The input signature a registered version records (model.json ``signature``)."""
    columns, dtypes = signature["features"], signature["dtypes"]
    numeric = tuple(c for c in columns if dtypes[c] == "float64")
    return FeatureSpec(numeric, tuple(c for c in columns if c not in numeric))


def _parts(model) -> tuple[ColumnTransformer | None, object]:
    """The pipeline's preprocessing and its estimator (None and the model itself otherwise)."""
    if isinstance(model, Pipeline):
        return model.named_steps["prepare"], model[-1]
    return None, model


def method_of(model) -> str:
    """Which explainer ``model`` gets."""
    prepare, estimator = _parts(model)
    if prepare is not None and isinstance(estimator, TREES):
        return TREE
    if prepare is not None and isinstance(estimator, LINEARS):
        return LINEAR
    return PERMUTATION


def scale_of(model, classifier: bool, target: str) -> str:
    if not classifier:
        return f"{target} units"
    estimator = _parts(model)[1]
    method = method_of(model)
    if method == LINEAR or (
        method == TREE and isinstance(estimator, HistGradientBoostingClassifier)
    ):
        return LOG_ODDS
    return PROBABILITY


def model_output(model, x: pd.DataFrame, classifier: bool, scale: str) -> np.ndarray:
    """The model's output on ``scale`` (what its contributions add up to)."""
    if not classifier:
        return np.asarray(model.predict(x), dtype=float)
    if scale == LOG_ODDS:
        return np.asarray(model.decision_function(x), dtype=float)
    return model.predict_proba(x)[:, 1]


def feature_owners(prepare: ColumnTransformer, spec: FeatureSpec) -> list[str]:
    """The feature each column of ``prepare``'s output comes from: a numeric feature, then the
    missing-value indicators of the numeric features that had missing values in training, then
    one column per category of each categorical feature."""
    imputer = prepare.named_transformers_["numeric"].steps[0][1]
    indicator = getattr(imputer, "indicator_", None)
    indicated = [spec.numeric[i] for i in indicator.features_] if indicator is not None else []
    encoder = prepare.named_transformers_["categorical"].steps[-1][1]
    categories = getattr(encoder, "categories_", [[] for _ in spec.categorical])
    owners = [*spec.numeric, *indicated]
    for feature, values in zip(spec.categorical, categories, strict=True):
        owners += [feature] * len(values)
    if len(owners) != len(prepare.get_feature_names_out()):
        raise ValueError("the preprocessing's output columns do not match the model's features")
    return owners


def _by_feature(values: np.ndarray, owners: list[str], spec: FeatureSpec) -> pd.DataFrame:
    """Sum the preprocessed columns' values (rows x columns) per feature."""
    columns = spec.columns
    position = {f: i for i, f in enumerate(columns)}
    gather = np.zeros((len(owners), len(columns)))
    gather[np.arange(len(owners)), [position[o] for o in owners]] = 1.0
    return pd.DataFrame(values @ gather, columns=columns)


@dataclass
class Explainer:
    """Explains a fitted candidate's outputs per feature of ``spec``; ``background`` (feature
    rows) is used by the linear explainer (its mean) and the permutation explainer (its first
    ``BACKGROUND_ROWS`` rows)."""

    model: object
    spec: FeatureSpec
    background: pd.DataFrame
    classifier: bool
    target: str

    @property
    def method(self) -> str:
        return method_of(self.model)

    @property
    def scale(self) -> str:
        return scale_of(self.model, self.classifier, self.target)

    def explain(self, x: pd.DataFrame) -> Explanation:
        """The SHAP values of the rows ``x`` (the model's input columns)."""
        shap = load_shap()

        x = x[self.spec.columns]
        method, scale = self.method, self.scale
        output = model_output(self.model, x, self.classifier, scale)
        if method == PERMUTATION:
            values, expected = self._permutation(x)
            return Explanation(method, scale, expected, output, values.set_axis(x.index))
        prepare, estimator = _parts(self.model)
        matrix = prepare.transform(x)
        if method == TREE:
            tree = shap.TreeExplainer(estimator)
            raw = np.asarray(tree.shap_values(matrix, check_additivity=False))
            expected = np.ravel(tree.expected_value)
            if raw.ndim == 3:  # a forest classifier: one slice per class, the positive's
                raw, expected = raw[..., 1], expected[1:]
        else:
            reference = prepare.transform(self.background[self.spec.columns])
            linear = shap.LinearExplainer(
                estimator, shap.maskers.Independent(reference, max_samples=len(reference))
            )
            raw = np.asarray(linear.shap_values(matrix))
            expected = np.ravel(linear.expected_value)
        contributions = _by_feature(raw, feature_owners(prepare, self.spec), self.spec)
        return Explanation(
            method, scale, float(expected[0]), output, contributions.set_axis(x.index)
        )

    def _permutation(self, x: pd.DataFrame) -> tuple[pd.DataFrame, float]:
        """shap's permutation explainer, the model's predictions batched over rows.

        The explainer asks for predictions of masked variants of one row at a time, and what
        it asks for never depends on earlier answers. So each batch of rows is run twice: once
        recording what it asks for, which the model then predicts in one call (per-call
        overhead is most of a small prediction's cost: 40 ms for a stacking ensemble), and
        once more with the same permutations, answered from those predictions."""
        shap = load_shap()

        background = self.background[self.spec.columns].head(BACKGROUND_ROWS)
        codes = _Codes(self.spec, pd.concat([background, x], ignore_index=True))
        masker = shap.maskers.Independent(codes.encode(background), max_samples=len(background))
        evals = PERMUTATIONS * (2 * len(self.spec.columns) + 1)
        values, expected = [], []
        for start in range(0, len(x), BATCH_ROWS):
            rows = codes.encode(x.iloc[start : start + BATCH_ROWS])
            asked: list[np.ndarray] = []

            def record(z: np.ndarray, asked=asked) -> np.ndarray:
                asked.append(np.array(z, dtype=float))
                return np.zeros(len(z))

            with _PERMUTATION_LOCK:
                shap.PermutationExplainer(record, masker, seed=SEED)(
                    rows, max_evals=evals, silent=True
                )
            predicted = model_output(
                self.model, codes.decode(np.concatenate(asked)), self.classifier, self.scale
            )
            answers = iter(np.split(predicted, np.cumsum([len(a) for a in asked])[:-1]))

            def replay(z: np.ndarray, answers=answers) -> np.ndarray:
                answer = next(answers)
                if len(answer) != len(z):
                    raise RuntimeError("shap asked for other predictions the second time")
                return answer

            with _PERMUTATION_LOCK:
                result = shap.PermutationExplainer(replay, masker, seed=SEED)(
                    rows, max_evals=evals, silent=True
                )
            values.append(result.values)
            expected.append(np.ravel(result.base_values))
        if not values:
            return pd.DataFrame(columns=self.spec.columns, dtype=float), float("nan")
        base = np.concatenate(expected)
        return pd.DataFrame(np.concatenate(values), columns=self.spec.columns), float(base[0])


class _Codes:
    """Feature rows as a float matrix for shap's masker (a category as its code in
    ``frame``'s values, missing as NaN) and back."""

    def __init__(self, spec: FeatureSpec, frame: pd.DataFrame) -> None:
        self.spec = spec
        self.values = {}
        for column in spec.categorical:
            uniques = pd.unique(frame[column].dropna())
            self.values[column] = np.array([*uniques, None], dtype=object)  # last: missing

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.spec.columns)))
        for i, column in enumerate(self.spec.columns):
            if column in self.values:
                known = pd.Index(self.values[column][:-1])
                code = known.get_indexer(frame[column]).astype(float)
                out[:, i] = np.where(code < 0, np.nan, code)
            else:
                out[:, i] = frame[column].to_numpy(dtype=float)
        return out

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        out = {}
        for i, column in enumerate(self.spec.columns):
            if column in self.values:
                missing = len(self.values[column]) - 1
                code = np.where(np.isnan(matrix[:, i]), missing, matrix[:, i]).astype(int)
                out[column] = self.values[column][code]
            else:
                out[column] = matrix[:, i]
        return pd.DataFrame(out)


def reason_codes(
    explanation: Explanation,
    x: pd.DataFrame,
    spec: FeatureSpec,
    *,
    typical: dict,
    reasons: dict[str, str] | None = None,
    top: int = TOP_REASONS,
) -> pd.DataFrame:
    """The ``top`` adverse reasons of every row: the features whose contributions raise its
    score most (positive contributions only), largest first. Columns: ``row`` (position in
    ``x``), ``rank`` (1...), ``feature``, ``contribution``, ``reason``: the model's declared
    text for the feature, else generated: "<feature> higher/lower than typical" (against its
    typical training value) or "<feature> missing" for a number, "<feature> is <value>" for a
    category (the value escaped and cut to 40 characters)."""
    values = explanation.contributions[spec.columns].to_numpy()
    count = min(top, len(spec.columns))
    order = np.argsort(-values, axis=1, kind="stable")[:, :count]
    rows = np.repeat(np.arange(len(values)), count)
    columns = order.ravel()
    contribution = values[rows, columns]
    kept = contribution > 0
    rows, columns, contribution = rows[kept], columns[kept], contribution[kept]
    ranks = np.tile(np.arange(1, count + 1), len(values))[kept]
    names = pd.Series(np.array(spec.columns, dtype=object)[columns], dtype=object)
    reason = pd.Series("", index=names.index, dtype=object)
    numeric = names.isin(spec.numeric).to_numpy()
    if numeric.any():
        matrix = x[list(spec.numeric)].to_numpy(dtype=float)
        at = [spec.numeric.index(f) for f in names[numeric]]
        value = matrix[rows[numeric], at]
        usual = np.array([_number(typical.get(f)) for f in spec.numeric])[at]
        side = np.select(
            [np.isnan(value), np.isnan(usual), value > usual, value < usual],
            [" missing", " raises the score", " higher than typical", " lower than typical"],
            " at its typical value",
        )
        reason[numeric] = names[numeric] + side
    if (~numeric).any():
        shown = x[list(spec.categorical)].to_numpy(dtype=object)
        at = [spec.categorical.index(f) for f in names[~numeric]]
        value = pd.Series(shown[rows[~numeric], at], index=names.index[~numeric])
        text = value.map(
            lambda v: None if v is None else printable(str(v))[:40], na_action="ignore"
        )
        reason[~numeric] = np.where(
            text.isna(), names[~numeric] + " missing", names[~numeric] + " is " + text.fillna("")
        )
    declared = names.map(reasons or {})
    return pd.DataFrame(
        {
            "row": rows,
            "rank": ranks.astype("int32"),
            "feature": names,
            "contribution": contribution,
            "reason": declared.where(declared.notna() & (declared != ""), reason),
        }
    )


def _number(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


SUMMARY_ROWS = 500  # holdout rows of a version's global summary (a permutation explainer: 100)


def global_explanation(model, data: TrainingData, *, seed: int) -> Explanation:
    """The SHAP values of a sample of ``data``'s holdout rows, against the background stored
    with the model (:func:`reference_sample` of its training period)."""
    spec = data.model
    explainer = Explainer(
        model, data.spec, reference_sample(data.population), spec.is_classifier, spec.target
    )
    rows = SUMMARY_ROWS if explainer.method != PERMUTATION else SUMMARY_ROWS // 5
    x = data.x_holdout
    return explainer.explain(x.sample(min(rows, len(x)), random_state=seed) if len(x) else x)


def explanation_summary(explanation: Explanation) -> dict:
    """``details["explanation"]``: the method, scale, expected value, rows explained and each
    feature's mean absolute contribution, largest first."""
    mean_abs = explanation.contributions.abs().mean().sort_values(ascending=False)
    return {
        "method": explanation.method,
        "scale": explanation.scale,
        "expected_value": explanation.expected_value,
        "rows": len(explanation.contributions),
        "mean_abs_shap": {f: float(v) for f, v in mean_abs.items()},
    }
