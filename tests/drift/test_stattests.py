"""Each statistic against scipy on known inputs, and Evidently's test selection at its
boundaries."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from scipy.spatial import distance

from mlops_assets.drift import stattests as st
from mlops_assets.drift.engine import DriftOptions, compare_columns, drift_files
from mlops_assets.drift.profile import QUANTILES, profile_column

rng = np.random.default_rng(0)


def _pair(ref, cur, kind="numerical", **options):
    reference = profile_column("x", kind, pa.array(ref))
    current = profile_column("x", kind, pa.array(cur), exact=True)
    return compare_columns(reference, current, DriftOptions(**options))


def test_ks_is_scipys_two_sample_test():
    ref, cur = rng.normal(0, 1, 800), rng.normal(0.2, 1, 900)
    result = _pair(ref, cur)
    assert result.test == "ks"
    assert result.score == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=1e-12)


def ks_bound(n: int, m: int) -> float:
    """The bound the docs state for KS from a stored profile's quantiles: the reference ECDF is
    known to within 1/Q + 1/n, so D is, and the p-value moves at most by the largest density
    of the Kolmogorov distribution of n_eff = nm/(n+m) (1.69 * sqrt(n_eff)) times that."""
    return 1.7 * np.sqrt(n * m / (n + m)) * (1 / QUANTILES + 1 / n)


@pytest.mark.parametrize("n, m", [(20_000, 20_000), (100_000, 20_000), (100_000, 100_000)])
def test_ks_from_reference_quantiles_is_within_the_stated_bound(n, m):
    sample = np.random.default_rng(n + m)
    shift = 1 / np.sqrt(n * m / (n + m))  # about one standard error: p where it is steep
    ref, cur = sample.normal(0, 1, n), sample.normal(shift, 1, m)
    assert len(profile_column("x", "numerical", pa.array(ref)).values) == QUANTILES
    exact = stats.ks_2samp(ref, cur).pvalue
    assert 0.01 < exact < 0.99
    result = _pair(ref, cur, stattest="ks")
    assert abs(result.score - exact) <= ks_bound(n, m)


def test_ks_on_two_files_is_scipys_exact_test_at_any_size(tmp_path):
    """`mlops drift` keeps every reference value: KS is scipy's, not an approximation."""
    ref, cur = rng.normal(0, 1, 60_000), rng.normal(0.01, 1, 25_000)
    paths = []
    for name, values in (("ref", ref), ("cur", cur)):
        paths.append(tmp_path / f"{name}.parquet")
        pq.write_table(pa.table({"x": values}), paths[-1])
    [result] = drift_files(*paths, DriftOptions(stattest="ks")).columns
    assert result.score == stats.ks_2samp(ref, cur).pvalue


def test_wasserstein_is_scipys_distance_normed_by_the_reference_std():
    ref, cur = rng.lognormal(0, 1, 5_000), rng.lognormal(0.1, 1, 4_000)
    result = _pair(ref, cur)
    assert result.test == "wasserstein"
    expected = stats.wasserstein_distance(ref, cur) / np.std(ref)
    assert result.score == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n, m", [(20_000, 20_000), (100_000, 20_000), (300_000, 100_000)])
def test_wasserstein_from_reference_quantiles_is_within_the_stated_bound(n, m):
    """The reference ECDF is known to within 1/Q + 1/n over its range, so the normed
    distance is within (1/Q + 1/n) * (max - min) / std."""
    ref, cur = rng.normal(0, 1, n), rng.lognormal(0, 0.5, m)
    expected = stats.wasserstein_distance(ref, cur) / np.std(ref)
    bound = (1 / QUANTILES + 1 / n) * (ref.max() - ref.min()) / np.std(ref)
    assert abs(_pair(ref, cur).score - expected) <= bound


def evidently_hellinger(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's numerical Hellinger: Sturges bins over the distinct values of both sides."""
    edges = np.histogram_bin_edges(np.union1d(ref, cur), bins="sturges")
    p = np.histogram(ref, edges)[0] / len(ref)
    q = np.histogram(cur, edges)[0] / len(cur)
    return float(np.sqrt(1 - np.clip(np.sum(np.sqrt(p * q)), 0, 1)))


def test_hellinger_bins_on_the_distinct_values_of_both_sides():
    """800 and 600 distinct values, 1398 together: 12 Sturges bins (the larger side's 800
    gives 11). The expected value is Evidently 0.7.23's on these arrays."""
    ref, cur = np.sqrt(np.arange(1, 801)), np.sqrt(np.arange(1, 601)) * 1.1 + 0.5
    assert len(np.histogram_bin_edges(np.union1d(ref, cur), bins="sturges")) == 13
    result = _pair(ref, cur, stattest="hellinger")
    assert result.score == pytest.approx(0.05431406204723423, rel=1e-9)


@pytest.mark.parametrize("discrete", [False, True])
def test_hellinger_from_reference_quantiles_counts_the_distinct_values_of_both_sides(discrete):
    """Continuous data share no values (40,000 distinct together: 17 bins, the larger side
    alone gives 16); integers held by many rows are all among the quantiles."""
    if discrete:
        ref, cur = rng.integers(0, 1_000, 30_000) * 1.0, rng.integers(200, 1_900, 5_000) * 1.0
    else:
        ref, cur = rng.normal(0, 1, 20_000), rng.normal(0.1, 1, 20_000)
    reference = profile_column("x", "numerical", pa.array(ref))
    current = profile_column("x", "numerical", pa.array(cur), exact=True)
    assert not reference.sample.exact
    assert st.union_distinct(reference, current) == len(np.union1d(ref, cur))
    result = compare_columns(reference, current, DriftOptions(stattest="hellinger"))
    assert result.score == pytest.approx(evidently_hellinger(ref, cur), abs=1e-3)


def test_chisquare_is_scipys_goodness_of_fit_to_the_reference_proportions():
    ref = rng.choice(["a", "b", "c"], 600, p=[0.5, 0.3, 0.2])
    cur = rng.choice(["a", "b", "c"], 500, p=[0.4, 0.4, 0.2])
    result = _pair(ref, cur, kind="categorical")
    assert result.test == "chisquare"
    keys = ["a", "b", "c"]
    observed = [np.sum(cur == k) for k in keys]
    expected = [np.sum(ref == k) * len(cur) / len(ref) for k in keys]
    assert result.score == pytest.approx(stats.chisquare(observed, expected).pvalue, rel=1e-9)


def test_z_test_is_the_two_proportion_test():
    ref = rng.choice(["no", "yes"], 700, p=[0.8, 0.2])
    cur = rng.choice(["no", "yes"], 600, p=[0.7, 0.3])
    result = _pair(ref, cur, kind="categorical")
    assert result.test == "z"
    p1, p2 = np.mean(ref == "yes"), np.mean(cur == "yes")
    pooled = (p1 * 700 + p2 * 600) / 1300
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / 700 + 1 / 600))
    assert result.score == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)


def test_jensenshannon_is_scipys_distance_of_the_category_shares():
    ref = rng.choice(list("abcd"), 3_000, p=[0.4, 0.3, 0.2, 0.1])
    cur = rng.choice(list("abcd"), 2_000, p=[0.25, 0.25, 0.25, 0.25])
    result = _pair(ref, cur, kind="categorical")
    assert result.test == "jensenshannon"
    p = [np.mean(ref == k) for k in "abcd"]
    q = [np.mean(cur == k) for k in "abcd"]
    assert result.score == pytest.approx(distance.jensenshannon(p, q), rel=1e-9)


def test_psi_and_hellinger_of_category_shares():
    ref = rng.choice(list("abc"), 3_000, p=[0.5, 0.3, 0.2])
    cur = rng.choice(list("abc"), 3_000, p=[0.3, 0.3, 0.4])
    p = np.array([np.mean(ref == k) for k in "abc"])
    q = np.array([np.mean(cur == k) for k in "abc"])
    psi = _pair(ref, cur, kind="categorical", stattest="psi")
    assert psi.score == pytest.approx(np.sum((p - q) * np.log(p / q)), rel=1e-9)
    hellinger = _pair(ref, cur, kind="categorical", stattest="hellinger")
    assert hellinger.score == pytest.approx(np.sqrt(1 - np.sum(np.sqrt(p * q))), rel=1e-9)


def test_numerical_jensenshannon_uses_sturges_bins_over_both_sides():
    ref, cur = rng.normal(0, 1, 3_000), rng.normal(0.3, 1, 2_000)
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    p = np.histogram(ref, edges)[0] / len(ref)
    q = np.histogram(cur, edges)[0] / len(cur)
    result = _pair(ref, cur, stattest="jensenshannon")
    assert result.score == pytest.approx(distance.jensenshannon(p, q), rel=1e-9)


def test_benjamini_hochberg_matches_scipy():
    p = rng.uniform(0, 0.1, 25)
    np.testing.assert_allclose(st.benjamini_hochberg(p), stats.false_discovery_control(p))


@pytest.mark.parametrize(
    "rows, distinct, kind, expected",
    [
        (1000, 6, "numerical", "ks"),
        (1001, 6, "numerical", "wasserstein"),
        (1000, 5, "numerical", "chisquare"),
        (1001, 5, "numerical", "jensenshannon"),
        (1000, 3, "numerical", "chisquare"),
        (1000, 2, "numerical", "z"),
        (1001, 2, "numerical", "jensenshannon"),
        (1000, 3, "categorical", "chisquare"),
        (1000, 2, "categorical", "z"),
        (1001, 3, "categorical", "jensenshannon"),
        (1001, 50, "categorical", "jensenshannon"),
    ],
)
def test_default_test_selection_at_its_boundaries(rows, distinct, kind, expected):
    """Reference rows 1000 vs 1001; 2, 3, 5 and 6 distinct values over both sides."""
    ref_values = np.arange(rows) % distinct
    cur_values = np.arange(500) % distinct
    if kind == "categorical":
        ref_values, cur_values = ref_values.astype(str), cur_values.astype(str)
    else:
        ref_values, cur_values = ref_values.astype(float), cur_values.astype(float)
    assert _pair(ref_values, cur_values, kind=kind).test == expected


def test_unique_values_are_counted_over_both_sides_and_missing_values_are_dropped():
    ref = np.array([0.0, 1.0, 2.0, np.nan, np.inf] * 200)  # 1000 rows, 600 non-missing
    cur = np.array([3.0, 4.0, 5.0] * 100)  # 3 more values: 6 distinct together
    result = _pair(ref, cur)
    assert result.test == "ks" and result.reference_rows == 600
    assert result.reference_missing_share == pytest.approx(0.4)


def test_edge_cases_give_finite_sensible_scores():
    const = np.full(500, "same")
    same = _pair(const, const, kind="categorical", stattest="chisquare")
    assert same.score == 1.0 and not same.drifted  # Evidently: NaN (no degrees of freedom)
    # One new value among 1000 rows is not drift; Evidently's chi-square says p = 0.
    ref = np.repeat(["a", "b", "c"], 300)
    cur = np.concatenate([np.repeat(["a", "b", "c"], 333), ["new"]])
    one_new = _pair(ref, cur, kind="categorical")
    assert one_new.test == "chisquare" and one_new.score > 0.5 and not one_new.drifted
    # A category that takes a tenth of the traffic is drift, with a finite score.
    cur = np.concatenate([np.repeat(["a", "b", "c"], 300), ["new"] * 100])
    new = _pair(ref, cur, kind="categorical")
    assert new.drifted and np.isfinite(new.score)
    # A constant reference is normed by the pooled spread, not by 0.001.
    moved = _pair(np.zeros(5000), np.r_[np.zeros(4000), np.ones(1000)])
    assert moved.test == "jensenshannon"
    shifted = _pair(np.zeros(5000), rng.normal(1, 1, 5000))
    assert shifted.test == "wasserstein" and 0.5 < shifted.score < 5 and shifted.drifted
    # A column with no values on one side is reported as drifted instead of failing.
    empty = _pair(np.full(2000, np.nan), rng.normal(0, 1, 100))
    assert empty.drifted and empty.note == "no values in the reference data"


def test_small_windows_with_sparse_categories_do_not_drift_by_chance():
    """Same distribution, 60-row windows, categories down to 0.5 % (so a rare one is seen
    once or never in the reference): chi-square pools the sparse cells, so about 5 % of
    windows drift (p < 0.05); unpooled, every window where a rare value shows up drifts."""
    shares = np.array([0.4, 0.25, 0.15, 0.1, 0.04, 0.03, 0.015, 0.005, 0.005, 0.005])
    keys = np.array([f"k{i}" for i in range(len(shares))])
    ref = np.repeat(keys, [320, 200, 120, 80, 32, 24, 12, 4, 4, 1])  # the rarest seen once
    flagged = [_pair(ref, rng.choice(keys, 60, p=shares), kind="categorical").drifted
               for _ in range(300)]  # fmt: skip
    assert np.mean(flagged) <= 0.1
