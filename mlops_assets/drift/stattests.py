"""The drift statistics of Evidently 0.7 that work on counts, samples and shares: the p-value
tests ``ks``, ``chisquare`` and ``z`` and the distances ``wasserstein``, ``jensenshannon``,
``psi``, ``kl_div`` and ``hellinger``. Each takes a :class:`Pair` (one column's reference and
current profiles) and returns the score; :mod:`mlops_assets.drift.registry` names them.

Each reproduces Evidently's implementation (``evidently.legacy.calculations.stattests``) on the
same inputs, except where Evidently's answer is wrong or undefined. Those deliberate
differences are documented on the function and in the docs, and ``Pair.strict`` (the
``--strict-evidently`` option) switches every one of them off:

* a test over a single category (a constant column) is "no drift" (p = 1), not NaN;
* chi-square pools the cells expected to hold fewer than 5 rows (categories the reference
  never saw among them) into one, so one new row is not "certain drift" (Evidently: an
  infinite statistic, p = 0) and sparse categories do not make small windows drift;
* the Wasserstein distance of a constant reference is normed by the pooled standard deviation
  of both sides, where Evidently divides by 0.001 and reports scores in the thousands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlops_assets.drift.profile import FEW_VALUES, ColumnProfile, DriftInputError, Sample

# scipy.stats costs a quarter of a second to import: the tests that need it import it when
# they run, so a report of distances never loads it.


@dataclass(frozen=True)
class Counts:
    """Aligned counts of the same keys on both sides (union of their values)."""

    keys: np.ndarray
    reference: np.ndarray
    current: np.ndarray


@dataclass(frozen=True)
class Pair:
    """What a test gets for one column: both sides' profiles (the current one exact, the
    reference exact when the caller has every value, else quantiles), both sides' values
    counted when they are few (``counts``: categories, or numbers with at most ``FEW_VALUES``
    distinct reference values; else None), and whether to follow Evidently exactly."""

    reference: ColumnProfile
    current: ColumnProfile
    counts: Counts | None = None
    strict: bool = False

    @property
    def name(self) -> str:
        return self.reference.name

    def needs_counts(self, test: str) -> Counts:
        """The counts, or a refusal naming the test and column: a numerical column with many
        values cannot be tested as categories."""
        if self.counts is None:
            raise DriftInputError(
                f"{test} compares categories; {self.name!r} has {self.reference.distinct} "
                f"distinct numbers in the reference (at most {FEW_VALUES} can be compared "
                "as categories)"
            )
        return self.counts


def ks(reference: Sample, current: Sample) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (scipy's ``ks_2samp``), exact when both samples
    keep every value. From Q quantiles of a reference of n rows, the reference ECDF is known
    to within 1/Q + 1/n, so D is; the p-value (scipy's asymptotic two-sided one for the true
    sizes, as ``ks_2samp`` uses beyond 10,000 rows) is then within 1.7 * sqrt(n_eff) *
    (1/Q + 1/n), n_eff = nm/(n+m) (1.7 bounds the density of the Kolmogorov distribution)."""
    from scipy import stats

    if reference.exact and current.exact:
        return float(stats.ks_2samp(reference.values, current.values).pvalue)
    grid = np.concatenate([reference.values, current.values])
    cdf_ref = np.searchsorted(reference.values, grid, side="right") / len(reference.values)
    cdf_cur = np.searchsorted(current.values, grid, side="right") / len(current.values)
    d = float(np.max(np.abs(cdf_ref - cdf_cur)))
    n, m = reference.rows, current.rows
    return float(stats.kstwo.sf(d, round(n * m / (n + m))))


def ks_test(pair: Pair) -> float:
    return ks(pair.reference.sample, pair.current.sample)


def wasserstein(pair: Pair) -> float:
    """Wasserstein-1 distance divided by the reference standard deviation (at least 0.001), or
    (not in strict mode) by the pooled one when the reference is constant."""
    reference, current = pair.reference, pair.current
    norm = reference.std
    if norm == 0 and not pair.strict:
        norm = pooled_std(reference, current)
    return _wasserstein(reference.values, current.values) / max(norm, 0.001)


def pooled_std(a: ColumnProfile, b: ColumnProfile) -> float:
    """The standard deviation of both sides together, sqrt(sum of w * (std^2 + (mean - pooled
    mean)^2)) for the sides' weights w, as a hypotenuse: no square overflows on large values."""
    n = a.rows + b.rows
    mean = (a.rows * a.mean + b.rows * b.mean) / n
    wa, wb = math.sqrt(a.rows / n), math.sqrt(b.rows / n)
    return math.hypot(wa * a.std, wa * (a.mean - mean), wb * b.std, wb * (b.mean - mean))


def _wasserstein(u: np.ndarray, v: np.ndarray) -> float:
    """W1 of two sorted equally weighted samples: the area between their CDFs, in O(n + m).

    The two sorted runs are merged (a stable argsort of them is timsort's merge). Just after
    each merged value, |F_u - F_v| * n * m is a running sum: each value of ``u`` adds m, each
    of ``v`` takes n (integers below 2**53: exact in floats). Inside a run of equal values the
    sum is not yet the run's, but those gaps have width 0, so every gap of width > 0 sees the
    true CDFs."""
    n, m = len(u), len(v)
    if n == m:  # the i-th smallest of one side is matched with the i-th of the other
        return float(np.abs(u - v).mean())
    both = np.concatenate([u, v])
    order = np.argsort(both, kind="stable")
    both = both[order]  # merged
    steps = np.where(order[:-1] < n, float(m), float(-n))
    del order  # in place from here: at 10M rows a side, few arrays of both sides' size
    np.cumsum(steps, out=steps)
    np.abs(steps, out=steps)
    return float(steps @ np.diff(both)) / (n * m)


MIN_EXPECTED = 5.0  # the chi-square approximation needs about 5 expected rows per cell


def chisquare(pair: Pair) -> float:
    """Chi-square goodness of fit of the current counts to the reference proportions.

    Cells expected to hold fewer than 5 current rows (among them categories the reference
    never saw) are pooled into one, which is expected to hold at least half a row: Evidently
    keeps them, so a sparse or new category makes the statistic explode (one new value among
    a thousand rows gives p = 0), and small windows drift by chance. Strict: Evidently's
    cells as they are (a category the reference never saw gives p = 0; one category, NaN)."""
    from scipy import stats

    counts = pair.needs_counts("chisquare")
    expected = counts.reference * (counts.current.sum() / counts.reference.sum())
    observed = counts.current.astype(np.float64)
    if pair.strict:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(stats.chisquare(observed, expected).pvalue)
    sparse = expected < MIN_EXPECTED
    if sparse.any():
        observed = np.append(observed[~sparse], observed[sparse].sum())
        expected = np.append(expected[~sparse], max(expected[sparse].sum(), 0.5))
    if len(observed) < 2:
        return 1.0  # one cell: nothing to compare (Evidently: NaN)
    expected *= observed.sum() / expected.sum()  # scipy wants equal totals
    return float(stats.chisquare(observed, expected).pvalue)


def z_test(pair: Pair) -> float:
    """Two-proportion Z-test on the share of the first (sorted) key, two-sided. One category
    on both sides is no drift (p = 1), as in Evidently."""
    counts = pair.needs_counts("z")
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


def jensenshannon_test(pair: Pair) -> float:
    return jensenshannon(*shares(*binned(pair), fill_zeroes=False))


def psi_test(pair: Pair) -> float:
    return psi(*shares(*binned(pair), fill_zeroes=True))


def kl_div_test(pair: Pair) -> float:
    """Kullback-Leibler divergence of the reference from the current shares, KL(ref || cur),
    natural log (``scipy.stats.entropy(ref, cur)``), empty bins filled as for PSI."""
    ref, cur = shares(*binned(pair), fill_zeroes=True)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum(ref * np.log(ref / cur)))


def hellinger_test(pair: Pair) -> float:
    return hellinger(*shares(*binned(pair, by_distinct=True), fill_zeroes=False))


def binned(pair: Pair, by_distinct: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin as Evidently bins them: categories (and numbers with at most 20 distinct
    reference values) by value; other numbers in Sturges bins over both sides' range, as many
    as Sturges gives for the rows of both sides, or with ``by_distinct`` (the Hellinger
    distance) for the distinct values of both sides together, which it bins always."""
    reference, current, counts = pair.reference, pair.current, pair.counts
    if counts is not None and (reference.kind == "categorical" or not by_distinct):
        return counts.reference, counts.current
    if counts is not None:
        edges = sturges(reference, current, len(counts.keys))
        keys = counts.keys.astype(np.float64)
        return (
            np.histogram(keys, edges, weights=counts.reference)[0],
            np.histogram(keys, edges, weights=counts.current)[0],
        )
    n = union_distinct(reference, current) if by_distinct else reference.rows + current.rows
    edges = sturges(reference, current, n)
    return weighted_histogram(reference.sample, edges), np.histogram(current.values, edges)[0]


def union_distinct(reference: ColumnProfile, current: ColumnProfile) -> int:
    """The number of distinct values of both sides together (Evidently's Hellinger bins on
    it): exact when the reference keeps every value. From a reference's quantiles it is the
    reference's distinct count plus the current values not among its quantiles: exact when
    every current value the reference holds is among them (a value held by more than 1 in
    10,000 reference rows always is; continuous data share no values), else an upper bound."""
    if reference.sample.exact:
        return len(np.union1d(reference.values, current.values))
    return reference.distinct + len(np.setdiff1d(current.values, reference.values))


def sturges(reference: ColumnProfile, current: ColumnProfile, n: int) -> np.ndarray:
    """numpy's Sturges bin edges for ``n`` values spanning both sides' range."""
    lo, hi = min(reference.min, current.min), max(reference.max, current.max)
    return bin_edges(lo, hi, math.ceil(math.log2(n) + 1))


def bin_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """numpy's ``bins`` equal-width edges from ``lo`` to ``hi``. numpy refuses a range wider
    than the largest float (values near +-1.8e308); its edges are then interpolated without
    computing the width."""
    if math.isfinite(hi - lo):
        return np.histogram_bin_edges(np.array([lo, hi]), bins=bins)
    share = np.arange(bins + 1) / bins
    return lo * (1 - share) + hi * share


def weighted_histogram(sample: Sample, edges: np.ndarray) -> np.ndarray:
    """Counts of ``sample`` in the bins ``edges``, scaled to its true number of rows. The
    values are sorted: the bins are found by bisection, as ``np.histogram`` does after sorting
    (``[a, b)`` bins, the last one closed), without sorting again."""
    values = sample.values
    bounds = [values.searchsorted(edges[:-1], "left"), values.searchsorted(edges[-1:], "right")]
    return np.diff(np.concatenate(bounds)) * (sample.rows / len(values))


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
