"""The drift statistics, on aggregated inputs: sorted samples and aligned category counts.

Each test reproduces Evidently 0.7's implementation (``evidently.legacy.calculations.
stattests``) on the same inputs, so the verdicts agree, except where Evidently's answer is
wrong or undefined; those cases are documented on the function and in the README:

* a test over a single category (a constant column) is "no drift" (p = 1), not NaN;
* chi-square pools the cells expected to hold fewer than 5 rows (categories the reference
  never saw among them) into one, so one new row is not "certain drift" (Evidently: an
  infinite statistic, p = 0) and sparse categories do not make small windows drift;
* the Wasserstein distance of a constant reference is normed by the pooled standard deviation
  of both sides, where Evidently divides by 0.001 and reports scores in the thousands.

p-value tests (``ks``, ``chisquare``, ``z``) flag drift when p < threshold (KS: p <= threshold,
as Evidently); distances flag drift when score >= threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# scipy.stats costs seconds to import: only the p-value tests import it, when they run.

TESTS = ("ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi", "hellinger")
P_VALUE_TESTS = frozenset({"ks", "chisquare", "z"})
DEFAULT_THRESHOLDS = {test: 0.05 if test in P_VALUE_TESTS else 0.1 for test in TESTS}
NUMERICAL_ONLY = frozenset({"ks", "wasserstein"})
CATEGORICAL_ONLY = frozenset({"chisquare", "z"})
SMALL_REFERENCE = 1000  # Evidently's switch from statistical tests to distances
FEW_VALUES = 20  # up to this many distinct reference values, numbers are binned as categories


def default_test(kind: str, reference_rows: int, distinct: int) -> str:
    """Evidently 0.7's DataDriftPreset choice. ``distinct`` counts the values of reference and
    current together, missing values excluded; ``reference_rows`` counts non-missing rows."""
    if reference_rows <= SMALL_REFERENCE:
        if kind == "numerical" and distinct > 5:
            return "ks"
        return "chisquare" if distinct > 2 else "z"
    if kind == "numerical" and distinct > 5:
        return "wasserstein"
    return "jensenshannon"


def is_drift(test: str, score: float, threshold: float) -> bool:
    if test == "ks":
        return score <= threshold
    if test in P_VALUE_TESTS:
        return score < threshold
    return score >= threshold


@dataclass(frozen=True)
class Sample:
    """A numerical column as an equally weighted sorted sample: every value when it is small,
    else quantiles at evenly spaced levels; ``rows`` is the true number of values."""

    values: np.ndarray
    rows: int

    @property
    def exact(self) -> bool:
        return len(self.values) == self.rows


@dataclass(frozen=True)
class Counts:
    """Aligned counts of the same keys on both sides (union of their values)."""

    keys: np.ndarray
    reference: np.ndarray
    current: np.ndarray


def ks(reference: Sample, current: Sample) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (scipy's ``ks_2samp``). A quantile sample of a
    large reference gives the statistic to within 1/len(values), and the p-value of the true
    sizes by scipy's asymptotic two-sided distribution."""
    from scipy import stats

    if reference.exact and current.exact:
        return float(stats.ks_2samp(reference.values, current.values).pvalue)
    grid = np.concatenate([reference.values, current.values])
    cdf_ref = np.searchsorted(reference.values, grid, side="right") / len(reference.values)
    cdf_cur = np.searchsorted(current.values, grid, side="right") / len(current.values)
    d = float(np.max(np.abs(cdf_ref - cdf_cur)))
    n, m = reference.rows, current.rows
    return float(stats.kstwo.sf(d, round(n * m / (n + m))))


def wasserstein_normed(reference: Sample, current: Sample, reference_std: float, pooled_std: float):
    """Wasserstein-1 distance divided by the reference standard deviation (at least 0.001), or
    by the pooled one when the reference is constant."""
    norm = reference_std if reference_std > 0 else max(pooled_std, 0.001)
    return _wasserstein(reference.values, current.values) / max(norm, 0.001)


def _wasserstein(u: np.ndarray, v: np.ndarray) -> float:
    """W1 of two sorted equally weighted samples: the area between their CDFs."""
    grid = np.sort(np.concatenate([u, v]), kind="stable")  # two sorted runs: a merge
    deltas = np.diff(grid)
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / len(u)
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cdf_u - cdf_v) * deltas))


MIN_EXPECTED = 5.0  # the chi-square approximation needs about 5 expected rows per cell


def chisquare(counts: Counts) -> float:
    """Chi-square goodness of fit of the current counts to the reference proportions.

    Cells expected to hold fewer than 5 current rows (among them categories the reference
    never saw) are pooled into one, which is expected to hold at least half a row: Evidently
    keeps them, so a sparse or new category makes the statistic explode (one new value among
    a thousand rows gives p = 0), and small windows drift by chance."""
    from scipy import stats

    expected = counts.reference * (counts.current.sum() / counts.reference.sum())
    observed = counts.current.astype(np.float64)
    sparse = expected < MIN_EXPECTED
    if sparse.any():
        observed = np.append(observed[~sparse], observed[sparse].sum())
        expected = np.append(expected[~sparse], max(expected[sparse].sum(), 0.5))
    if len(observed) < 2:
        return 1.0  # one cell: nothing to compare (Evidently: NaN)
    expected *= observed.sum() / expected.sum()  # scipy wants equal totals
    return float(stats.chisquare(observed, expected).pvalue)


def z_test(counts: Counts) -> float:
    """Two-proportion Z-test on the share of the first (sorted) key, two-sided."""
    if len(counts.keys) < 2:
        return 1.0
    n1, n2 = counts.reference.sum(), counts.current.sum()
    p1, p2 = 1 - counts.reference[0] / n1, 1 - counts.current[0] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0
    return math.erfc(abs((p1 - p2) / spread) / math.sqrt(2))  # 2 * (1 - Phi(|z|))


def shares(counts_ref: np.ndarray, counts_cur: np.ndarray, fill_zeroes: bool):
    """Shares per bin; with ``fill_zeroes``, empty bins get a tiny share (Evidently's rule)."""
    ref = counts_ref / counts_ref.sum()
    cur = counts_cur / counts_cur.sum()
    if fill_zeroes:
        ref, cur = _fill_zeroes(ref), _fill_zeroes(cur)
    return ref, cur


def _fill_zeroes(share: np.ndarray) -> np.ndarray:
    smallest = share[share > 0].min()
    return np.where(share == 0, smallest / 1e6 if smallest <= 1e-4 else 1e-4, share)


def jensenshannon(ref: np.ndarray, cur: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log), as ``scipy.spatial.distance.jensenshannon``."""
    p, q = ref / ref.sum(), cur / cur.sum()
    m = (p + q) / 2
    divergence = _relative_entropy(p, m) + _relative_entropy(q, m)
    return math.sqrt(max(divergence / 2, 0.0))


def _relative_entropy(p: np.ndarray, m: np.ndarray) -> float:
    present = p > 0
    return float(np.sum(p[present] * np.log(p[present] / m[present])))


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def hellinger(ref: np.ndarray, cur: np.ndarray) -> float:
    """Hellinger distance of two discrete distributions (shares that sum to one)."""
    overlap = float(np.clip(np.sum(np.sqrt(ref * cur)), 0, 1))
    return math.sqrt(1 - overlap)


def weighted_histogram(sample: Sample, edges: np.ndarray) -> np.ndarray:
    """Counts of ``sample`` in the bins ``edges``, scaled to its true number of rows."""
    return np.histogram(sample.values, edges)[0] * (sample.rows / len(sample.values))


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate across columns)."""
    n = len(p_values)
    if n == 0:
        return p_values
    order = np.argsort(p_values)
    ranked = p_values[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out
