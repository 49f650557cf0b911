"""Paired tests of whether a challenger model is better than the champion on the same rows.

Both models score the same holdout (or the same labelled live rows), so their errors are
correlated and the test must be paired: two independent intervals that overlap say little.

- ROC-AUC: DeLong's test (DeLong, DeLong & Clarke-Pearson 1988) for the difference of two
  correlated AUCs, computed with the fast O(n log n) algorithm of Sun & Xu (2014) from midranks.
  Written here because no maintained library offers it: scikit-learn, SciPy and statsmodels do
  not, and the PyPI packages that do (mlstatkit, rocauc-comparison) are small one-author
  projects outside the widely used ones. It is checked against a direct computation of
  DeLong's structural components in tests/training/test_gate.py.
- Any metric: a paired bootstrap, both models evaluated on the same resamples of the rows
  (:func:`metrics.bootstrap_weights`), every round at once.

The result is oriented so that a positive difference means the challenger is better (a lower
RMSE is a positive difference), with a two-sided interval and the one-sided p-value of the
hypothesis that the challenger is not better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from mlops_assets.training import metrics as m
from mlops_assets.training.spec import ModelSpec

LEVEL = 0.95  # confidence level of the reported interval


@dataclass(frozen=True)
class PairedTest:
    metric: str
    method: str  # "delong" | "paired_bootstrap"
    difference: float  # challenger - champion, signed so that positive = challenger better
    ci: tuple[float, float]  # interval of the difference at ``level``
    p_value: float  # one-sided: the challenger is not better (NaN: no test possible)
    level: float = LEVEL

    def significant(self, significance: float) -> bool:
        """Whether the challenger is better at ``significance`` (NaN never is)."""
        return bool(self.p_value < significance)

    def as_dict(self) -> dict:
        """The test as JSON can hold it (NaN, no test possible, as None)."""
        return {
            **{k: _finite(v) for k, v in asdict(self).items()},
            "ci": [_finite(v) for v in self.ci],
        }


def _finite(value: object) -> object:
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _nan_test(metric: str, method: str, level: float) -> PairedTest:
    nan = float("nan")
    return PairedTest(metric, method, nan, (nan, nan), nan, level)


def _normal_test(
    metric: str, method: str, difference: float, variance: float, level: float
) -> PairedTest:
    """The test of a difference with an asymptotically normal estimate of ``variance``."""
    if variance <= 0:  # identical rankings (or a perfect separation by both): no evidence
        p_value = 0.0 if difference > 0 else 1.0
        return PairedTest(metric, method, difference, (difference, difference), p_value, level)
    sd = float(np.sqrt(variance))
    z = stats.norm.ppf(0.5 + level / 2)
    return PairedTest(
        metric,
        method,
        difference,
        (float(difference - z * sd), float(difference + z * sd)),
        float(stats.norm.sf(difference / sd)),
        level,
    )


def delong_components(
    y: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The AUCs of each row of ``scores`` (models x rows) on labels ``y`` and DeLong's structural
    components: V10 (models x positives) and V01 (models x negatives), from midranks as in Sun
    & Xu (2014), one sort per model."""
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positives, negatives = scores[:, y], scores[:, ~y]
    m_, n_ = positives.shape[1], negatives.shape[1]
    combined = stats.rankdata(np.hstack([positives, negatives]), axis=1)
    within_positives = stats.rankdata(positives, axis=1)
    within_negatives = stats.rankdata(negatives, axis=1)
    # A positive's count of negatives below it (ties half), and a negative's share of positives
    # above it.
    v10 = (combined[:, :m_] - within_positives) / n_
    v01 = 1.0 - (combined[:, m_:] - within_negatives) / m_
    auc = (combined[:, :m_].sum(axis=1) - m_ * (m_ + 1) / 2) / (m_ * n_)
    return auc, v10, v01


def delong_test(
    y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, level: float = LEVEL
) -> PairedTest:
    """DeLong's paired test of ROC-AUC(challenger) - ROC-AUC(champion) on the same rows."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return _nan_test("roc_auc", "delong", level)
    auc, v10, v01 = delong_components(y, np.vstack([champion, challenger]))
    covariance = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    contrast = np.array([-1.0, 1.0])
    variance = float(contrast @ covariance @ contrast)
    return _normal_test("roc_auc", "delong", float(auc[1] - auc[0]), variance, level)


def paired_bootstrap_test(
    metric: str,
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    thresholds: tuple[float | None, float | None] = (None, None),
    rounds: int,
    seed: int,
    level: float = LEVEL,
) -> PairedTest:
    """A paired bootstrap test of ``metric`` (challenger minus champion, signed so that positive
    is better): both models are evaluated on the same ``rounds`` resamples of the rows. A
    classifier's threshold metrics use each model's own threshold (``thresholds``: champion's,
    challenger's); None thresholds mean regression metrics. The p-value is the share of
    resamples where the challenger is not better (plus one, over rounds plus one: never 0)."""
    y = np.asarray(y, dtype=np.float64)
    weights = m.bootstrap_weights(len(y), rounds=rounds, seed=seed)
    full = np.ones((1, len(y)))

    def values(prediction: np.ndarray, threshold: float | None, w: np.ndarray) -> np.ndarray:
        if threshold is None:
            return m.resampled_regression_metrics(y, prediction, w)[metric]
        return m.resampled_classification_metrics(y, prediction, threshold, w)[metric]

    def gains(w: np.ndarray) -> np.ndarray:
        """Challenger minus champion, positive = better (+ 0.0: no negative zero)."""
        gain = values(challenger, thresholds[1], w) - values(champion, thresholds[0], w)
        return (gain if ModelSpec.higher_is_better(metric) else -gain) + 0.0

    difference = float(gains(full)[0])
    resampled = gains(weights)
    resampled = resampled[~np.isnan(resampled)]
    if np.isnan(difference) or not len(resampled):
        return _nan_test(metric, "paired_bootstrap", level)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    p_value = (np.count_nonzero(resampled <= 0) + 1) / (len(resampled) + 1)
    return PairedTest(
        metric, "paired_bootstrap", difference, (float(low), float(high)), float(p_value), level
    )


def paired_test(
    metric: str,
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    thresholds: tuple[float | None, float | None] = (None, None),
    rounds: int,
    seed: int,
) -> PairedTest:
    """DeLong's test for ROC-AUC, a paired bootstrap for any other metric."""
    if metric == "roc_auc":
        return delong_test(y, champion, challenger)
    return paired_bootstrap_test(
        metric, y, champion, challenger, thresholds=thresholds, rounds=rounds, seed=seed
    )
