"""Evidently 0.7's numerical tests on scipy: ``anderson``, ``cramer_von_mises``, ``ed``, ``es``,
``mannw``, ``t_test`` and ``empirical_mmd``. Each takes a
:class:`~mlops_assets.drift.stattests.Pair` and returns Evidently's score
(``evidently.legacy.calculations.stattests``) computed by scipy;
:mod:`mlops_assets.drift.registry` names them.

Where the reference is a stored profile's quantiles (the daily monitor), the rank tests run on
the reference's true number of values re-drawn from its quantile function (exact from the
counts of a column with few values): the re-drawn sample's distribution function is within
about 1/Q of the true one, as for ``ks``. ``t_test`` needs only the moments, so it is always
exact; ``empirical_mmd`` needs every value and is refused on quantiles.

Deliberate differences from Evidently (``Pair.strict`` switches each off):

* two constant sides (of two rows or more) are "no drift" (p = 1) when the constant is the
  same and drift (p = 0) when it differs, and a p-value that the test cannot compute (too
  few rows for it, a pooled sample whose interquartile range is 0 for ``es``) is 1: no
  evidence of drift. Evidently returns NaN or raises (strict: its NaN, or a
  ``DriftInputError`` where it raises);
* ``cramer_von_mises`` on at most 20 rows a side is scipy's exact p-value. Evidently's copy of
  old scipy counts the permutations in float16 (differences up to 8.7e-4), and crashes on
  NumPy 2 for other sizes; strict reproduces its float16 counts (with the crash fixed);
* ``empirical_mmd`` draws its permutations from its own generator seeded with 0 (Evidently
  uses the unseeded global one: its p-value changes from run to run) over the sorted values,
  and above ``MMD_ROWS`` rows tests a seeded random subsample of that many rows (Evidently
  holds several (n+m)^2 matrices). Strict tests every row, up to ``MMD_STRICT_ROWS``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from mlops_assets.drift.profile import DriftInputError
from mlops_assets.drift.stattests import Pair

MMD_PERMUTATIONS = 100
MMD_ROWS = 5_000  # rows of both sides tested by empirical_mmd (a random subsample above)
MMD_STRICT_ROWS = 50_000  # strict: every row up to here (Evidently: 20 GB per matrix there)
MMD_BLOCK = 512  # kernel rows held at once: memory O(MMD_BLOCK * rows)


def reference_values(pair: Pair) -> np.ndarray:
    """Every reference value: the kept values, the counts of a column with few values, or else
    the reference's true number of values re-drawn from its stored quantiles. The quantile
    ``i`` of ``Q`` is the value of rank floor((i + 0.5) / Q * rows) (``profile_sorted``), so it
    is put back at that rank, the minimum and maximum at the ends, and the ranks between are
    interpolated linearly."""
    reference = pair.reference
    if reference.sample.exact:
        return reference.values
    if reference.keys is not None:
        return np.repeat(reference.keys.astype(np.float64), reference.counts)
    rows, q = reference.rows, len(reference.values)
    ranks = np.minimum(((np.arange(q) + 0.5) / q * rows).astype(np.int64), rows - 1)
    known = np.concatenate([[0], ranks, [rows - 1]])
    quantiles = np.concatenate([[reference.min], reference.values, [reference.max]])
    return np.interp(np.arange(rows), known, quantiles)


def _p_value(pair: Pair, test: str, compute: Callable[[], float]) -> float:
    """``compute()``, with the rules for constant sides and for p-values that cannot be
    computed (module docstring); strict: Evidently's NaN, or its error."""
    reference, current = pair.reference, pair.current
    constant = reference.min == reference.max and current.min == current.max
    if constant and min(reference.rows, current.rows) > 1 and not pair.strict:
        return 1.0 if reference.min == current.min else 0.0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # scipy's warnings on ties, small samples, capped p
        try:
            p = float(compute())
        except (ValueError, IndexError, ZeroDivisionError, np.linalg.LinAlgError) as error:
            if pair.strict:  # scipy's messages quote no data value
                raise DriftInputError(
                    f"{test} cannot be computed on column {pair.name!r} (Evidently raises "
                    f"{type(error).__name__}: {error})"
                ) from error
            return 1.0
    return 1.0 if math.isnan(p) and not pair.strict else p


def anderson(pair: Pair) -> float:
    """k-sample Anderson-Darling p-value, midrank variant (scipy floors and caps it at 0.001
    and 0.25, as Evidently gets it)."""

    def compute() -> float:
        from scipy import stats

        ref, cur = reference_values(pair), pair.current.values
        return stats.anderson_ksamp([ref, cur], variant="midrank").pvalue

    return _p_value(pair, "anderson", compute)


def cramer_von_mises(pair: Pair) -> float:
    """Two-sample Cramer-von Mises p-value (scipy's ``cramervonmises_2samp``: exact permutation
    distribution up to 20 rows a side, asymptotic above). Strict: Evidently's exact branch."""

    def compute() -> float:
        from scipy import stats

        ref, cur = reference_values(pair), pair.current.values
        if len(ref) < 2 or len(cur) < 2:
            raise ValueError("x and y must contain at least two observations.")
        if pair.strict and max(len(ref), len(cur)) <= 20:
            ranks = stats.rankdata(np.concatenate([ref, cur]))  # midranks of the pooled sample
            n, m = len(ref), len(cur)
            u = n * np.sum((ranks[:n] - np.arange(1, n + 1)) ** 2)
            u += m * np.sum((ranks[n:] - np.arange(1, m + 1)) ** 2)
            return evidently_cvm_exact_p(u, n, m)
        return stats.cramervonmises_2samp(ref, cur).pvalue

    return _p_value(pair, "cramer_von_mises", compute)


def evidently_cvm_exact_p(u: float, m: int, n: int) -> float:
    """Evidently's ``_pval_cvm_2samp_exact`` (old scipy's): the permutation distribution of the
    statistic ``u`` by Xiao, Gordon and Yakovlev's recursion, counted in the dtype Evidently
    picks, float16 or float32 when the number of permutations exceeds the statistic's bound.
    Only its NumPy 2 crash (an int64 added in place to unsigned counts) is fixed."""
    lcm = math.lcm(m, n)
    a, b = lcm // m, lcm // n
    mn = m * n
    zeta = lcm**2 * (m + n) * (6 * u - mn * (4 * mn - 1)) // (6 * mn**2)
    combinations = math.factorial(m + n) / (math.factorial(m) * math.factorial(n))
    dtype = np.min_scalar_type(max(lcm**2 * (m + n), combinations))
    gs = [np.array([[0], [1]], dtype=dtype)] + [np.empty((2, 0), dtype=dtype)] * m
    for step in range(n + 1):
        next_gs = []
        tmp = np.empty((2, 0), dtype=dtype)
        for v, g in enumerate(gs):
            common, i0, i1 = np.intersect1d(tmp[0], g[0], return_indices=True)
            tmp = np.concatenate(
                [np.stack([common, tmp[1, i0] + g[1, i1]]), np.delete(tmp, i0, 1),
                 np.delete(g, i1, 1)], 1)  # fmt: skip
            tmp[0] += np.asarray((a * v - b * step) ** 2).astype(dtype)
            next_gs.append(tmp)
        gs = next_gs
    value, freq = gs[m]
    return float(np.sum(freq[value >= zeta]) / combinations)


def energy_distance(pair: Pair) -> float:
    """Energy distance (scipy's ``energy_distance``, not normed). It depends only on the two
    distributions, so a stored profile's quantiles (equally weighted) stand for the reference,
    or its counts when it has few values (then it is exact)."""
    from scipy import stats

    reference = pair.reference
    if not reference.sample.exact and reference.keys is not None:
        return float(
            stats.energy_distance(reference.keys, pair.current.values, u_weights=reference.counts)
        )
    return float(stats.energy_distance(reference.values, pair.current.values))


IQR_ZERO = (
    "Epps-Singleton tests interquartile range (IQR) is zero, which is not allowed. "
    "Please use a different test or preprocess the data accordingly."
)


def epps_singleton(pair: Pair) -> float:
    """Epps-Singleton p-value (scipy's ``epps_singleton_2samp``, t = (0.4, 0.8)). Evidently
    raises when the pooled interquartile range is 0 (the test's frequencies t / IQR are then
    undefined); here that is p = 1 (module docstring), strict raises Evidently's error."""

    def compute() -> float:
        from scipy import stats

        ref, cur = reference_values(pair), pair.current.values
        if stats.iqr(np.concatenate([ref, cur])) == 0:
            raise ValueError(IQR_ZERO)
        return stats.epps_singleton_2samp(ref, cur).pvalue

    return _p_value(pair, "es", compute)


def mann_whitney(pair: Pair) -> float:
    """Mann-Whitney U p-value, one-sided as in Evidently (``alternative="less"``: drift only when
    the current values are stochastically larger than the reference)."""

    def compute() -> float:
        from scipy import stats

        ref, cur = reference_values(pair), pair.current.values
        return stats.mannwhitneyu(ref, cur, alternative="less").pvalue

    return _p_value(pair, "mannw", compute)


def t_test(pair: Pair) -> float:
    """Student's two-sample t-test p-value (equal variances, two-sided), from the means and
    standard deviations: exact from any profile."""

    def compute() -> float:
        from scipy import stats

        ref, cur = pair.reference, pair.current
        return stats.ttest_ind_from_stats(
            ref.mean, _sample_std(ref.std, ref.rows), ref.rows,
            cur.mean, _sample_std(cur.std, cur.rows), cur.rows,
        ).pvalue  # fmt: skip

    return _p_value(pair, "t_test", compute)


def _sample_std(population_std: float, rows: int) -> float:
    """The ddof-1 standard deviation (0 for one row: it then weighs nothing in the pooled one)."""
    return population_std * math.sqrt(rows / (rows - 1)) if rows > 1 else 0.0


def empirical_mmd(pair: Pair) -> float:
    """Permutation p-value of the maximum mean discrepancy with an RBF kernel, as Evidently's
    ``empirical_mmd`` (100 permutations; the kernel width from the median squared distance of
    the reference's pairs). Above ``MMD_ROWS`` rows it tests a seeded random subsample of that
    many, in the sides' proportions; strict tests every row up to ``MMD_STRICT_ROWS`` and
    refuses more (Evidently would hold 20 GB matrices there)."""

    def compute() -> float:
        ref, cur = reference_values(pair), pair.current.values
        rows = len(ref) + len(cur)
        if pair.strict and rows > MMD_STRICT_ROWS:
            raise DriftInputError(
                f"empirical_mmd on every value of {pair.name!r} ({rows:,} rows) would take "
                f"{rows:,}^2 kernel values 101 times; strict mode tests at most "
                f"{MMD_STRICT_ROWS:,} rows (Evidently needs {8 * rows**2 / 1e9:,.0f} GB per "
                "kernel matrix)"
            )
        if not pair.strict and rows > MMD_ROWS:
            rng = np.random.RandomState(0)
            n = min(max(round(MMD_ROWS * len(ref) / rows), 2), MMD_ROWS - 2)
            ref = ref[rng.choice(len(ref), min(n, len(ref)), replace=False)]
            cur = cur[rng.choice(len(cur), min(MMD_ROWS - n, len(cur)), replace=False)]
        return mmd_p_value(ref, cur)

    return _p_value(pair, "empirical_mmd", compute)


def mmd_p_value(x: np.ndarray, y: np.ndarray) -> float:
    """Evidently's ``mmd_pval`` on 1-D samples, with the permutations of
    ``np.random.seed(0)`` and without its (n+m)^2 matrices: the kernel is computed in blocks of
    rows and multiplied by the 0/1 membership columns of the observed split and of each
    permutation, which give every block sum of the permuted kernel."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ZeroDivisionError("empirical_mmd needs at least two values on each side")
    z = np.concatenate([x, y])
    # The kernel width scales with the data, so the statistic does not depend on its scale.
    # Where the median distance squared would overflow or underflow (Evidently's kernel is
    # then NaN or its width 0), the values are scaled by a power of two to bring it near 1.
    distance = median_distance(x)
    if distance > 0 and not 2.0**-500 < distance < 2.0**500:
        z = np.ldexp(z, -math.frexp(distance)[1])
        x = z[:n]
    rows = n + m
    gamma = 1.0 / (2.0 * sigma_median(x) ** 2)
    rng = np.random.RandomState(0)  # the sequence np.random.seed(0) gives Evidently's tests
    order = np.stack([np.arange(rows)] + [rng.permutation(rows) for _ in range(MMD_PERMUTATIONS)])
    member = np.zeros((rows, MMD_PERMUTATIONS + 2))
    member[order[:, :n], np.arange(MMD_PERMUTATIONS + 1)[:, None]] = 1.0  # x's rows per split
    member[:, -1] = 1.0  # all rows: the kernel's total
    kernel_member = np.empty_like(member)
    block = max(1, MMD_BLOCK * 4096 // rows)
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        kernel = np.exp(-gamma * (z[start:stop, None] - z[None, :]) ** 2)
        kernel[np.arange(stop - start), np.arange(start, stop)] = 0.0  # Evidently's zero diagonal
        kernel_member[start:stop] = kernel @ member
    xx = np.sum(member * kernel_member, axis=0)[:-1]  # sum of K over x's rows and columns
    x_all = kernel_member[:, :-1].sum(axis=0)  # over x's columns, every row
    total = kernel_member[:, -1].sum()
    xy = x_all - xx
    yy = total - 2 * x_all + xx
    mmd = xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)
    # Equal statistics (ties) count as at least as extreme, whatever the summation order.
    return float(np.mean(mmd[0] <= mmd[1:] + 1e-10))


def sigma_median(x: np.ndarray) -> float:
    """Evidently's kernel width: sqrt(0.5 * median) of the squared distances of every ordered
    pair of ``x`` (its own pairs included), numpy's "nearest" median; sqrt(0.5) if that is 0."""
    distance = median_distance(x)
    return math.sqrt(0.5 * distance**2) if distance > 0 else math.sqrt(0.5)


def median_distance(x: np.ndarray) -> float:
    """The median distance of every ordered pair of ``x`` (numpy's "nearest" median), found
    by bisection on the float's bits, counting the pairs within a distance with two sorted
    searches, so memory stays O(n), not the n^2 of the distances."""
    values = np.sort(x)
    n = len(values)
    k = int(np.around(0.5 * (n * n - 1)))  # the median's rank among the n^2 distances

    def pairs_within(distance: float) -> int:
        right = np.searchsorted(values, values + distance, side="right")
        left = np.searchsorted(values, values - distance, side="left")
        return int(np.sum(right - left))

    lo, hi = 0, int(np.float64(values[-1] - values[0]).view(np.int64))
    while lo < hi:  # the smallest distance with more than k pairs within it
        mid = (lo + hi) // 2
        if pairs_within(float(np.int64(mid).view(np.float64))) > k:
            hi = mid
        else:
            lo = mid + 1
    return float(np.int64(lo).view(np.float64))
