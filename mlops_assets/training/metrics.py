"""Holdout metrics with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (score >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "accuracy": skm.accuracy_score(y, predicted),
        "precision": skm.precision_score(y, predicted, zero_division=0),
        "recall": skm.recall_score(y, predicted, zero_division=0),
        "f1": skm.f1_score(y, predicted, zero_division=0),
        "roc_auc": skm.roc_auc_score(y, score) if both_classes else float("nan"),
        "pr_auc": skm.average_precision_score(y, score) if both_classes else float("nan"),
        "brier": skm.brier_score_loss(y, score),
        "log_loss": skm.log_loss(y, np.clip(score, 1e-15, 1 - 1e-15), labels=[0, 1]),
    }


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    mse = skm.mean_squared_error(y, predicted)
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": skm.mean_absolute_error(y, predicted),
        "r2": skm.r2_score(y, predicted),
    }


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold with the best F1 on ``y`` (training data: never the holdout)."""
    precision, recall, thresholds = skm.precision_recall_curve(y, score)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[np.argmax(f1[:-1])]) if len(thresholds) else 0.5


def bootstrap_weights(rows: int, *, rounds: int, seed: int) -> np.ndarray:
    """How often each of ``rows`` rows is drawn in each of ``rounds`` bootstrap resamples:
    a (rounds, rows) count matrix. A metric weighted by a row of it is the metric of that
    resample, so every round is computed at once instead of one resample at a time."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, rows, size=(rounds, rows))
    flat = (drawn + rows * np.arange(rounds)[:, None]).ravel()
    return np.bincount(flat, minlength=rounds * rows).reshape(rounds, rows).astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def resampled_classification_metrics(
    y: np.ndarray, score: np.ndarray, threshold: float, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`classification_metrics` of every resample in ``weights`` (one row per resample)."""
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    rows = weights.sum(axis=1)
    predicted = (score >= threshold).astype(np.float64)
    tp, fp = weights @ (predicted * y), weights @ (predicted * (1 - y))
    fn = weights @ ((1 - predicted) * y)
    clipped = np.clip(score, 1e-15, 1 - 1e-15)
    roc_auc, pr_auc = _ranking_metrics(y, score, weights)
    return {
        "accuracy": (weights @ (predicted == y)) / rows,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "brier": (weights @ (score - y) ** 2) / rows,
        "log_loss": -(weights @ (y * np.log(clipped) + (1 - y) * np.log1p(-clipped))) / rows,
    }


def _ranking_metrics(
    y: np.ndarray, score: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and average precision of every resample, from one sort of the scores: the
    weighted true/false positives at each distinct score, as scikit-learn's curves count them.
    Rows drawn zero times add nothing to a curve, so they change neither area. NaN for a
    resample holding one class only."""
    order = np.argsort(score, kind="mergesort")[::-1]
    y_sorted = y[order]
    ends = np.r_[np.flatnonzero(np.diff(score[order])), len(score) - 1]  # last row of each tie
    w_sorted = weights[:, order]
    tps = np.cumsum(w_sorted * y_sorted, axis=1)[:, ends]
    fps = np.cumsum(w_sorted * (1 - y_sorted), axis=1)[:, ends]
    positives, negatives = tps[:, -1:], fps[:, -1:]
    both = (positives[:, 0] > 0) & (negatives[:, 0] > 0)
    tpr = np.hstack([np.zeros_like(positives), tps]) / np.where(positives > 0, positives, 1)
    fpr = np.hstack([np.zeros_like(negatives), fps]) / np.where(negatives > 0, negatives, 1)
    roc_auc = np.trapezoid(tpr, fpr, axis=1)
    precision = _ratio(tps, tps + fps)
    pr_auc = np.sum(np.diff(tpr, axis=1) * precision, axis=1)
    return np.where(both, roc_auc, np.nan), np.where(both, pr_auc, np.nan)


def resampled_regression_metrics(
    y: np.ndarray, predicted: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`regression_metrics` of every resample in ``weights`` (one row per resample)."""
    y = np.asarray(y, dtype=np.float64)
    error = y - np.asarray(predicted, dtype=np.float64)
    rows = weights.sum(axis=1)
    mse = (weights @ error**2) / rows
    mean = (weights @ y) / rows
    total = np.sum(weights * (y[None, :] - mean[:, None]) ** 2, axis=1)
    residual = mse * rows
    # scikit-learn's r2 on a constant target: 1 for a perfect prediction, else 0.
    r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1),
                  np.where(residual == 0, 1.0, 0.0))  # fmt: skip
    return {"mse": mse, "rmse": np.sqrt(mse), "mae": (weights @ np.abs(error)) / rows, "r2": r2}


def bootstrap_intervals(
    y: np.ndarray,
    prediction: np.ndarray,
    *,
    threshold: float | None,
    rounds: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every holdout metric over ``rounds`` bootstrap resamples of the
    holdout: classification metrics at ``threshold``, or regression metrics when it is None."""
    weights = bootstrap_weights(len(y), rounds=rounds, seed=seed)
    values = (
        resampled_regression_metrics(y, prediction, weights)
        if threshold is None
        else resampled_classification_metrics(y, prediction, threshold, weights)
    )
    tail = (1 - level) / 2 * 100
    return {
        name: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail)))
        for name, v in values.items()
    }
