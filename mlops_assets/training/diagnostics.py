"""What a person needs to trust a model: plots, robustness under bad input, explanations.

Plots are PNG files under ``$MLOPS_HOME/reports/<model>/<version>/`` and markdown images in
the Dagster UI. Robustness feeds the model noisy, missing, extreme and unseen inputs and checks
the predictions stay finite and in range. Explanations: permutation importance (what the
model's accuracy needs), partial dependence, and the SHAP summary (what moves its scores,
from ``explain``).
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.training.dataset import FeatureSpec, TrainingData
from mlops_assets.training.explain import (
    Explanation,
    _parts,
    feature_owners,
    global_explanation,
    load_shap,
)
from mlops_assets.training.search import predict
from mlops_assets.training.significance import delong_components

UNSEEN = "__unseen__"


def _figure(columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, columns, figsize=(5, 3.6), dpi=80, sharey=True, squeeze=False)
    return plt, fig, ax[0, 0] if columns == 1 else ax[0]


def _save(plt, fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def markdown_image(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.stem}](data:image/png;base64,{encoded})"


EXPLAIN_ROWS = 2_000  # holdout rows sampled for permutation importance and partial dependence


def _sample(data: TrainingData, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    if len(data.y_holdout) <= EXPLAIN_ROWS:
        return data.x_holdout, data.y_holdout
    index = np.random.default_rng(seed).choice(len(data.y_holdout), EXPLAIN_ROWS, replace=False)
    return data.x_holdout.iloc[index], data.y_holdout[index]


def _predict_variants(model, variants: list[pd.DataFrame], classifier: bool) -> np.ndarray:
    """Predictions for several same-sized variants of one frame, one row per variant: a single
    call through the model for all of them (its per-call cost is most of a small frame's)."""
    stacked = pd.concat(variants, ignore_index=True)
    return predict(model, stacked, classifier).reshape(len(variants), len(variants[0]))


def _preprocessed(model, x: pd.DataFrame) -> tuple[object, np.ndarray, np.ndarray] | None:
    """For a candidate's pipeline: its estimator, ``x`` preprocessed, and the feature each
    preprocessed column comes from (None for another model). The preprocessing treats each
    feature on its own and row by row, so a variant of ``x`` that changes one feature changes
    only that feature's preprocessed columns, in the same way: variants built on the matrix
    preprocessed once give exactly the pipeline's predictions of the variants, without
    preprocessing every copy (most of the cost of predicting them)."""
    prepare, estimator = _parts(model)
    if prepare is None:
        return None
    columns = {name: tuple(names) for name, _, names in prepare.transformers_}
    spec = FeatureSpec(columns["numeric"], columns["categorical"])
    owners = np.array(feature_owners(prepare, spec), dtype=object)
    return estimator, prepare.transform(x), owners


def _stacked(matrix: np.ndarray, changes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``matrix`` and one copy of it per change (columns, their new values), stacked."""
    copies = np.tile(matrix, (len(changes) + 1, 1))
    for i, (columns, values) in enumerate(changes, start=1):
        copies[i * len(matrix) : (i + 1) * len(matrix), columns] = values
    return copies


def _scores(y: np.ndarray, predictions: np.ndarray, classifier: bool) -> np.ndarray:
    """:func:`search.score` of each row of ``predictions``: ROC-AUC from midranks (the
    Mann-Whitney statistic, one sort per row), or minus the RMSE."""
    if not classifier:
        return -np.sqrt(np.mean((predictions - np.asarray(y, dtype=np.float64)) ** 2, axis=1))
    if len(np.unique(y)) != 2:
        return np.full(len(predictions), np.nan)
    return delong_components(y, predictions)[0]


def top_features(model, data: TrainingData, *, seed: int, repeats: int = 3) -> pd.Series:
    """Permutation importance on (a sample of) the holdout: the drop in the selection score
    (ROC-AUC or minus the RMSE) when a column is shuffled, averaged over ``repeats`` shuffles,
    largest first."""
    classifier = data.model.is_classifier
    x, y = _sample(data, seed)
    rng = np.random.default_rng(seed)
    shuffles = [(c, rng.permutation(len(x))) for c in x.columns for _ in range(repeats)]
    prepared = _preprocessed(model, x)
    if prepared is None:
        variants = [x] + [
            x.assign(**{c: x[c].iloc[order].set_axis(x.index)}) for c, order in shuffles
        ]
        predictions = _predict_variants(model, variants, classifier)
    else:
        estimator, matrix, owners = prepared
        changes = []
        for column, order in shuffles:
            owned = np.flatnonzero(owners == column)
            changes.append((owned, matrix[np.ix_(order, owned)]))
        stacked = _stacked(matrix, changes)
        predictions = predict(estimator, stacked, classifier).reshape(-1, len(x))
    scores = _scores(y, predictions, classifier)
    drops = (scores[0] - scores[1:]).reshape(len(x.columns), repeats)
    return pd.Series(drops.mean(axis=1), index=x.columns).sort_values(ascending=False)


def partial_dependence(
    model, x: pd.DataFrame, feature: str, classifier: bool, *, points: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """The average prediction over ``x`` with ``feature`` set to each grid value: ``points``
    values evenly spaced from its 5th to its 95th percentile (its distinct values if fewer),
    as scikit-learn's partial dependence plots do."""
    values = x[feature].dropna().to_numpy(dtype=float)
    if len(values) == 0:
        return np.array([]), np.array([])
    distinct = np.unique(values)
    if len(distinct) <= points:
        grid = distinct
    else:
        low, high = np.percentile(values, [5, 95])
        grid = np.unique(np.linspace(low, high, points))
    prepared = _preprocessed(model, x)
    if prepared is None:
        variants = [x.assign(**{feature: float(value)}) for value in grid]
        return grid, _predict_variants(model, variants, classifier).mean(axis=1)
    estimator, matrix, owners = prepared
    owned = np.flatnonzero(owners == feature)
    # The feature's preprocessed columns at each grid value: any row with the value set.
    at_grid = model.named_steps["prepare"].transform(
        x.iloc[np.zeros(len(grid), dtype=int)].assign(**{feature: grid.astype(float)})
    )[:, owned]
    stacked = _stacked(matrix, [(owned, value) for value in at_grid])[len(matrix) :]
    return grid, predict(estimator, stacked, classifier).reshape(len(grid), -1).mean(axis=1)


def plot_model(
    model,
    data: TrainingData,
    threshold: float | None,
    out: Path,
    *,
    seed: int,
    prediction: np.ndarray | None = None,
    explanation: Explanation | None = None,
) -> dict:
    """Every plot of the model as PNG files in ``out``; returns name -> path. ``prediction``
    (its scores of the holdout rows) and ``explanation`` (:func:`global_explanation` with
    ``seed``) are computed when not given (training has them already)."""
    from sklearn import calibration, metrics

    classifier = data.model.is_classifier
    if prediction is None:
        prediction = predict(model, data.x_holdout, classifier)
    paths: dict[str, Path] = {}
    if classifier:
        plt, fig, ax = _figure()
        metrics.RocCurveDisplay.from_predictions(data.y_holdout, prediction, ax=ax)
        ax.set_title("ROC curve (holdout)")
        paths["roc"] = _save(plt, fig, out / "roc.png")
        plt, fig, ax = _figure()
        metrics.PrecisionRecallDisplay.from_predictions(data.y_holdout, prediction, ax=ax)
        ax.set_title("Precision-recall (holdout)")
        paths["precision_recall"] = _save(plt, fig, out / "precision_recall.png")
        plt, fig, ax = _figure()
        calibration.CalibrationDisplay.from_predictions(
            data.y_holdout, prediction, n_bins=10, ax=ax
        )
        ax.set_title("Calibration (holdout)")
        paths["calibration"] = _save(plt, fig, out / "calibration.png")
        plt, fig, ax = _figure()
        metrics.ConfusionMatrixDisplay.from_predictions(
            data.y_holdout, (prediction >= threshold).astype(int), ax=ax, colorbar=False
        )
        ax.set_title(f"Confusion matrix at threshold {threshold:.3f}")
        paths["confusion_matrix"] = _save(plt, fig, out / "confusion_matrix.png")
    else:
        plt, fig, ax = _figure()
        ax.scatter(prediction, data.y_holdout - prediction, s=6, alpha=0.5)
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_xlabel(f"predicted {data.model.target}")
        ax.set_ylabel("residual (actual - predicted)")
        ax.set_title("Residuals (holdout)")
        paths["residuals"] = _save(plt, fig, out / "residuals.png")
    importance = top_features(model, data, seed=seed)
    plt, fig, ax = _figure()
    importance.head(12).iloc[::-1].plot.barh(ax=ax)
    ax.set_title("Permutation importance (holdout)")
    paths["permutation_importance"] = _save(plt, fig, out / "permutation_importance.png")
    if explanation is None:
        explanation = global_explanation(model, data, seed=seed)
    paths["shap_summary"] = _shap_summary(explanation, data, out)
    numeric_top = [c for c in importance.index if c in data.spec.numeric][:2]
    if numeric_top:
        x = _sample(data, seed)[0]
        plt, fig, axes = _figure(len(numeric_top))
        for ax, feature in zip(np.atleast_1d(axes), numeric_top, strict=True):
            grid, average = partial_dependence(model, x, feature, classifier)
            ax.plot(grid, average)
            ax.set_xlabel(feature)
        np.atleast_1d(axes)[0].set_ylabel(
            f"average P({data.model.target})"
            if classifier
            else f"average predicted {data.model.target}"
        )
        fig.suptitle("Partial dependence (holdout sample)")
        paths["partial_dependence"] = _save(plt, fig, out / "partial_dependence.png")
    return paths


def _shap_summary(explanation: Explanation, data: TrainingData, out: Path) -> Path:
    """shap's beeswarm of a holdout sample's contributions (``explanation``, the one
    ``details["explanation"]`` summarises), coloured by the numeric features' values (categories
    grey)."""
    shap = load_shap()

    values = explanation.contributions
    shown = shap.Explanation(
        values=values.to_numpy(),
        base_values=np.full(len(values), explanation.expected_value),
        data=np.column_stack(
            [
                data.x_holdout.loc[values.index, c].to_numpy(dtype=float)
                if c in data.spec.numeric
                else np.full(len(values), np.nan)
                for c in values.columns
            ]
        ),
        feature_names=list(values.columns),
    )
    plt, fig, _ = _figure()
    fig.set_size_inches(7, 4.5)  # room for the feature names and the colour bar
    shap.plots.beeswarm(shown, max_display=12, show=False, plot_size=None)
    fig.gca().set_xlabel(f"SHAP value ({explanation.scale}, {explanation.method} explainer)")
    fig.gca().set_title("SHAP summary (holdout sample)")
    return _save(plt, fig, out / "shap_summary.png")


def robustness(model, x: pd.DataFrame, spec: FeatureSpec, classifier: bool, *, seed: int) -> dict:
    """Predictions under perturbed inputs: finite, in range, and how far they move."""
    rng = np.random.default_rng(seed)
    base = predict(model, x, classifier)
    numeric = list(spec.numeric)
    scenarios = {}
    noisy = x.copy()
    spread = x[numeric].std().fillna(0).to_numpy()
    noisy[numeric] = x[numeric] + rng.normal(0, 0.1, size=x[numeric].shape) * spread
    scenarios["noise_10pct_std"] = noisy
    missing = x.copy()
    for column in x.columns:
        missing.loc[rng.random(len(x)) < 0.3, column] = np.nan if column in numeric else None
    scenarios["missing_30pct"] = missing
    extreme = x.copy()
    extreme[numeric] = x[numeric] * 1000
    scenarios["extreme_x1000"] = extreme
    negative = x.copy()
    negative[numeric] = -x[numeric].abs() - 1
    scenarios["negative"] = negative
    unseen = x.copy()
    unseen[list(spec.categorical)] = UNSEEN
    scenarios["unseen_categories"] = unseen
    report = {}
    for name, frame in scenarios.items():
        predicted = predict(model, frame, classifier)
        finite = bool(np.isfinite(predicted).all())
        in_range = bool(((predicted >= 0) & (predicted <= 1)).all()) if classifier else finite
        report[name] = {
            "finite": finite,
            "in_range": in_range,
            "mean_abs_change": float(np.nanmean(np.abs(predicted - base))),
        }
    return report
