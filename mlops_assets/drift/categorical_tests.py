"""Evidently 0.7's categorical tests on counts: ``fisher_exact``, ``g_test`` and ``TVD``.

Each is a function of a :class:`~mlops_assets.drift.stattests.Pair` that returns a p-value,
computed from the aligned category counts of both sides (so a stored profile gives the same
answer as the raw data). Where Evidently raises or cannot be reproduced from counts, the
difference is deliberate, documented on the function and switched off by ``Pair.strict``
(``--strict-evidently``):

* ``fisher_exact`` takes samples of any sizes (Evidently: equal lengths only);
* ``g_test`` expects the reference proportions scaled to the current total (Evidently passes
  the raw reference counts, which scipy refuses unless both sides have as many rows), and a
  single category is no drift (p = 1; Evidently: NaN);
* ``TVD`` above ``ROW_ORDER_ROWS`` rows (and 8 per category) draws its permutations from the
  counts instead of permuting every row.
"""

from __future__ import annotations

import numpy as np

from mlops_assets.drift.profile import DriftInputError
from mlops_assets.drift.stattests import Pair

TVD_ITERATIONS = 1000  # Evidently's permutations for its TVD p-value
ROW_ORDER_ROWS = (
    10_000  # above this many rows (both sides, and 8 per category), TVD draws from the counts
)
TVD_BLOCK = 1 << 20  # permuted counts held at once (iterations x categories): 8 MB


def fisher_exact(pair: Pair) -> float:
    """Fisher's exact test (two-sided) of the 2x2 table of two categories by side.

    The table comes from the counts, for samples of any sizes: Evidently builds the same
    table (the p-value does not depend on which category is which) but first requires both
    samples to have as many rows. Strict: Evidently's errors, for more than 2 categories on
    one side and for unequal lengths. More than 2 categories over both sides is refused in
    both modes (Evidently then maps one category to NaN, in an order that varies by run)."""
    from scipy import stats

    counts = pair.needs_counts("fisher_exact")
    if pair.strict:
        if max(np.count_nonzero(counts.reference), np.count_nonzero(counts.current)) > 2:
            raise DriftInputError(
                f"fisher_exact on {pair.name!r}: Expects binary data for both reference and "
                "current, but found unique categories > 2"
            )
        if counts.reference.sum() != counts.current.sum():
            raise DriftInputError(
                f"fisher_exact on {pair.name!r}: reference_data and current_data are not of "
                "equal length, please ensure that they are of equal length"
            )
    if len(counts.keys) > 2:
        raise DriftInputError(
            f"fisher_exact compares two categories; {pair.name!r} has {len(counts.keys)} in "
            "the reference and current data together"
        )
    return float(stats.fisher_exact(fisher_table(counts.reference, counts.current)).pvalue)


def fisher_table(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Evidently's 2x2 table ``[[current ones, current zeros], [reference ones, reference
    zeros]]`` from the counts of at most two sorted categories (the second is "one"; a lone
    category is "zero", as Evidently's placeholder makes it when the categories sort)."""
    table = np.zeros((2, 2), dtype=np.int64)
    table[0, : len(current)] = current
    table[1, : len(reference)] = reference
    return table[:, ::-1]


def g_test(pair: Pair) -> float:
    """G-test (log-likelihood ratio) of the current counts against the reference proportions.

    The expected counts are the reference proportions times the current total. Evidently
    passes the raw reference counts, so scipy refuses every pair whose sides differ in size;
    with equal sizes both are the same. A category the reference never saw gives p = 0, as
    in Evidently; one category over both sides is no drift (p = 1). Strict: Evidently's raw
    reference counts (an error for unequal sizes; one category, NaN)."""
    from scipy import stats

    counts = pair.needs_counts("g_test")
    observed, expected = counts.current, counts.reference.astype(np.float64)
    if pair.strict:
        try:
            with np.errstate(divide="ignore", invalid="ignore"):
                result = stats.power_divergence(observed, expected, lambda_="log-likelihood")
        except ValueError as error:
            raise DriftInputError(
                f"g_test on {pair.name!r}: the reference and current data differ in size "
                "(Evidently 0.7 passes the raw reference counts to scipy's power_divergence, "
                "which requires equal totals)"
            ) from error
        return float(result.pvalue)
    if len(counts.keys) < 2:
        return 1.0
    expected *= observed.sum() / expected.sum()
    with np.errstate(divide="ignore"):
        return float(stats.power_divergence(observed, expected, lambda_="log-likelihood").pvalue)


def tvd_test(pair: Pair) -> float:
    """Permutation p-value of the total variation distance between the category shares:
    Evidently's ``permutation_test``, 1000 permutations of the pooled rows seeded with 0.

    Evidently permutes the rows in the order they arrive (reference rows, then current rows).
    From counts the rows are rebuilt sorted by category (as the engine sorts them: as text),
    which is Evidently's order exactly when its rows arrive grouped in that order (as in its
    own tests), so the p-value is then the same number. The TVDs are summed over the
    categories in sorted order, with Evidently's arithmetic, so a permuted TVD that ties with
    the observed one falls as in Evidently when it sums in that order (small integer
    categories); for text categories Evidently sums in the order of a Python set, which
    changes with PYTHONHASHSEED, and its own p-value then varies by run on ties (0.065 or
    0.067 on one pair checked). Above ``ROW_ORDER_ROWS`` rows (and 8 per category) the
    permutations are drawn from the counts (multivariate hypergeometric: the same null
    distribution at a cost that does not grow with the rows; the p-value differs by
    Monte-Carlo error, sd <= 0.016). Strict: always the rows permuted."""
    counts = pair.needs_counts("TVD")
    rows = counts.reference.sum() + counts.current.sum()
    # A draw from the counts costs about 20 permuted rows per category: with many categories
    # and few rows each, permuting the rows is the faster of the two (and Evidently's).
    row_order = pair.strict or rows <= max(ROW_ORDER_ROWS, 8 * len(counts.keys))
    return permutation_p_value(counts.reference, counts.current, row_order=row_order)


def total_variation(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Half the L1 distance of the shares, along the last axis (Evidently's arithmetic, so the
    ties of the permutation test fall the same way)."""
    n, m = reference.sum(axis=-1, keepdims=True), current.sum(axis=-1, keepdims=True)
    return 0.5 * np.sum(np.abs(reference / n - current / m), axis=-1)


def permutation_p_value(
    reference: np.ndarray,
    current: np.ndarray,
    observed: float | None = None,
    iterations: int = TVD_ITERATIONS,
    row_order: bool = True,
) -> float:
    """The share of permuted splits whose TVD is at least ``observed`` (default: the TVD of
    the counts). ``row_order`` permutes the rebuilt rows with ``RandomState(0)`` as Evidently
    does (its ``np.random.choice(rows, n_ref, replace=False)`` is ``permutation(N)[:n_ref]``);
    otherwise the reference side's counts are drawn from the pooled counts."""
    reference = np.asarray(reference, dtype=np.int64)
    current = np.asarray(current, dtype=np.int64)
    pooled, n_ref = reference + current, int(reference.sum())
    if observed is None:
        observed = float(total_variation(reference, current))
    # The permuted splits are drawn a block at a time (the same draws in the same order), so
    # memory is O(TVD_BLOCK), not iterations x categories (6 GB for 100,000 categories).
    block = max(1, TVD_BLOCK // len(pooled))
    permuted = np.empty(iterations)
    if row_order:
        categories = np.arange(len(pooled))
        rows = np.concatenate([np.repeat(categories, reference), np.repeat(categories, current)])
        state = np.random.RandomState(0)
    else:
        generator = np.random.default_rng(0)
    for start in range(0, iterations, block):
        size = min(block, iterations - start)
        if row_order:  # one vectorised permutation per iteration
            drawn = np.stack([np.bincount(rows[state.permutation(len(rows))[:n_ref]],
                                          minlength=len(pooled)) for _ in range(size)])  # fmt: skip
        else:
            drawn = generator.multivariate_hypergeometric(pooled, n_ref, size)
        permuted[start : start + size] = total_variation(drawn, pooled - drawn)
    return float(np.mean(observed <= np.abs(permuted)))
