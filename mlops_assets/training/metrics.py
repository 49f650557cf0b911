"""Holdout metrics with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "brier", "log_loss")
REGRESSION = ("mse", "rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"brier", "log_loss", "mse", "rmse", "mae"})


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


def bootstrap_intervals(
    metric_fn, y: np.ndarray, prediction: np.ndarray, *, rounds: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every metric of ``metric_fn`` over bootstrap resamples of the
    holdout (one index matrix drawn at once)."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(y), size=(rounds, len(y)))
    values: dict[str, list[float]] = {}
    for index in samples:
        for name, value in metric_fn(y[index], prediction[index]).items():
            values.setdefault(name, []).append(value)
    tail = (1 - level) / 2 * 100
    return {
        name: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail)))
        for name, v in values.items()
    }
