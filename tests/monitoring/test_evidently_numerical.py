"""Evidently 0.7.23's numerical stattests (anderson, cramer_von_mises, ed, es, mannw, t_test,
empirical_mmd, and hellinger on numbers) on Evidently's own cases, through the engine: the
same score (rel 1e-3 / abs 1e-4, against the values re-run with Evidently 0.7.23, scipy 1.17.1)
and the same verdict at the case's threshold. Then the edge cases Evidently leaves undefined,
and the error of each test on a stored profile's quantiles against the exact test."""

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from mlops_assets.drift import numerical_tests as nt
from mlops_assets.drift.engine import DriftOptions, compare_columns
from mlops_assets.drift.profile import DriftInputError, profile_column
from mlops_assets.drift.registry import REGISTRY
from mlops_assets.drift.stattests import Pair

SOURCE = "evidently tests/stattests/test_stattests.py::"
NEW_TESTS = ("anderson", "cramer_von_mises", "ed", "es", "mannw", "t_test", "empirical_mmd")


def rep(values, counts) -> list[float]:
    return [float(v) for v, c in zip(values, counts, strict=True) for _ in range(c)]


A = [38.7, 41.5, 43.8, 44.5, 45.5, 46.0, 47.7, 58.0]
B = [39.2, 39.3, 39.7, 41.4, 41.8, 42.9, 43.3, 45.8]
R6 = rep(range(1, 7), [16, 18, 16, 14, 12, 12])
C6 = rep(range(1, 7), [16, 16, 16, 16, 16, 8])
NORMAL_0 = stats.norm.rvs(size=100, random_state=0)
NORMAL_1 = stats.norm.rvs(size=100, random_state=1)
MMD_RS = np.random.RandomState(0)  # Evidently draws these unseeded; the re-run used seed 0
MMD_WIDE, MMD_NARROW = MMD_RS.normal(0, 0.5, 100), MMD_RS.normal(0, 0.1, 100)


def profiles(ref, cur, *, exact_reference=True):
    reference = profile_column("x", "numerical", pa.array(ref), exact=exact_reference)
    return reference, profile_column("x", "numerical", pa.array(cur), exact=True)


def engine(test, ref, cur, threshold=None, *, strict=False, exact_reference=True):
    options = DriftOptions(stattest=test, threshold=threshold, strict_evidently=strict)
    return compare_columns(*profiles(ref, cur, exact_reference=exact_reference), options)


def pair(ref, cur, *, strict=False, exact_reference=True) -> Pair:
    return Pair(*profiles(ref, cur, exact_reference=exact_reference), strict=strict)


# (test, reference, current, threshold, Evidently 0.7.23's score, its verdict)
CASES = [
    pytest.param("anderson", A, B, 0.001, 0.06351467729, False,
                 id=SOURCE + "test_anderson_darling"),
    pytest.param("cramer_von_mises", NORMAL_0, NORMAL_1, 0.001, 0.8076839039, False,
                 id=SOURCE + "test_cramer_von_mises"),
    pytest.param("empirical_mmd", [1.0] * 25, [0.0] * 25, 0.1, 0.0, True,
                 id=SOURCE + "test_empirical_mmd[0]"),
    pytest.param("empirical_mmd", [1.0] * 25, [0.0] * 25, 0.1, 0.0, True,
                 id=SOURCE + "test_empirical_mmd[2]"),
    pytest.param("empirical_mmd", [1.0] * 25, [1.0] * 25, 0.1, 1.0, False,
                 id=SOURCE + "test_empirical_mmd[3]"),
    pytest.param("empirical_mmd", MMD_WIDE, MMD_NARROW, 0.1, 0.0, True,
                 id=SOURCE + "test_empirical_mmd[5]"),
    pytest.param("mannw", R6, C6, 0.05, 0.4814330306, False, id=SOURCE + "test_mann_whitney"),
    pytest.param("ed", A, A, 0.1, 0.0, False, id=SOURCE + "test_energy_distance[0]"),
    pytest.param("ed", A, [a + 5 for a in A], 0.1, 1.933261493, True,
                 id=SOURCE + "test_energy_distance[1]"),
    pytest.param("es", R6, C6, 0.05, 0.8100227257, False, id=SOURCE + "test_epps_singleton"),
    pytest.param("t_test", A, B, 0.05, 0.08410572024, False, id=SOURCE + "test_t_test"),
    # The column-level cleaning drops the NaN Evidently's direct call passes to hellinger.
    pytest.param("hellinger", [*A, math.nan], [*A, math.nan], 0.1, 0.0, False,
                 id=SOURCE + "test_num_features"),
    pytest.param("hellinger", [1.0] * 50, [1.0] * 50, 0.1, 0.0, False,
                 id=SOURCE + "test_hellinger_distance"),
]  # fmt: skip


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize(("test", "ref", "cur", "threshold", "score", "drifted"), CASES)
def test_evidently_case_through_the_engine(test, ref, cur, threshold, score, drifted, strict):
    result = compare_columns(
        *profiles(ref, cur),
        DriftOptions(stattest=test, threshold=threshold, strict_evidently=strict),
    )
    assert result.test == test
    assert result.score == pytest.approx(score, rel=1e-3, abs=1e-4)
    assert result.drifted is drifted
    assert REGISTRY[test].drifted(score, threshold) is drifted


def test_sigma_median_numpy_compat():
    """evidently tests/stattests/test_stattests.py::test_sigma_median_numpy_compat: the squared
    distances [[0,1,4],[1,0,1],[4,1,0]] are those of the values 0, 1, 2."""
    assert nt.sigma_median(np.array([0.0, 1.0, 2.0])) == pytest.approx(math.sqrt(0.5), abs=1e-9)


@pytest.mark.parametrize(
    ("ref", "cur", "evidently", "drifted"),
    [
        pytest.param([1, 0, 1, 0, 1] * 5, [1, 0, 1, 0, 1] * 5, 0.96, False,
                     id=SOURCE + "test_empirical_mmd[1]"),
        pytest.param([1.1, 0.2, 2.1, 0, 1], [1, 0, 2, 0, 1], 0.97, False,
                     id=SOURCE + "test_empirical_mmd[4]"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_empirical_mmd_counts_tied_permutations_as_extreme(ref, cur, evidently, drifted, strict):
    """docs difference row "empirical_mmd: permutations whose statistic ties the observed
    one": in exact arithmetic the lowest permuted statistics equal the observed one (checked
    with Evidently's own matrices, /tmp/ev_research/h1_mmd.py); Evidently's float rounding
    counts a few as smaller, giving 0.96 and 0.97. Ties count as at least as extreme here,
    strict too: p = 1, the same verdict."""
    result = engine("empirical_mmd", ref, cur, 0.1, strict=strict)
    assert result.score == 1.0 > evidently
    assert result.drifted is drifted is REGISTRY["empirical_mmd"].drifted(evidently, 0.1)


# Evidently 0.7.23's mmd_pval after np.random.seed(0) on x = normal(0, 1, 40 + 7s),
# y = normal(0.3, 1.2, 30 + 5s) drawn from RandomState(100 + s), in row order
# (/tmp/ev_research/h1_mmd2.py): the same permutations give the same p-values.
MMD_ROW_ORDER = [0.47, 0.04, 0.91, 0.16, 0.07, 0.19]


@pytest.mark.parametrize("s", range(len(MMD_ROW_ORDER)))
def test_empirical_mmd_draws_evidentlys_permutations(s):
    rs = np.random.RandomState(100 + s)
    x, y = rs.normal(0, 1, 40 + 7 * s), rs.normal(0.3, 1.2, 30 + 5 * s)
    assert nt.mmd_p_value(x, y) == MMD_ROW_ORDER[s]


def test_empirical_mmd_tests_a_seeded_subsample_of_a_large_column():
    """docs difference row "empirical_mmd above 5,000 rows": a random subsample (seed 0) in
    the sides' proportions, so the kernel never holds (n+m)^2 values; the same answer every
    run, drift found."""
    rs = np.random.RandomState(3)
    ref, cur = rs.normal(0, 1, 8_000), rs.normal(0.5, 1, 4_000)
    first = engine("empirical_mmd", ref, cur)
    assert first.score == engine("empirical_mmd", ref, cur).score == 0.0
    assert first.drifted


def test_empirical_mmd_strict_refuses_beyond_its_row_limit():
    ref = np.arange(nt.MMD_STRICT_ROWS, dtype=float)
    with pytest.raises(DriftInputError, match="strict mode tests at most"):
        engine("empirical_mmd", ref, [1.0, 2.0], strict=True)


def test_empirical_mmd_is_refused_on_a_stored_profiles_quantiles():
    ref = np.random.RandomState(4).normal(0, 1, 20_000)
    with pytest.raises(DriftInputError, match="needs every reference value"):
        engine("empirical_mmd", ref, ref[:100], exact_reference=False)


# -- cramer_von_mises on at most 20 rows a side -------------------------------------------------

# Evidently 0.7.23's _cvm_2samp (exact branch) on the case where it differs most from scipy
# among the 194 size pairs up to 20 where it runs on NumPy 2 (/tmp/ev_research/h1_cvm.py).
CVM_X = [1.4, 0.6, 0.7, 1.1, -0.2, 0.3, -0.5, 1.0, -0.8]
CVM_Y = [1.0, -0.0, 0.5, 1.8, 1.1, -2.3]


def test_cramer_von_mises_exact_branch_strict_gives_evidentlys_float16_counts():
    """docs difference row "cramer_von_mises, at most 20 rows a side": scipy's exact p by
    default; Evidently counts permutations in float16 (0.96875 here); strict gives that."""
    assert engine("cramer_von_mises", CVM_X, CVM_Y).score == pytest.approx(
        stats.cramervonmises_2samp(CVM_X, CVM_Y).pvalue, rel=1e-12
    )
    assert engine("cramer_von_mises", CVM_X, CVM_Y, strict=True).score == 0.96875


def test_cramer_von_mises_strict_runs_where_evidently_crashes_on_numpy2():
    """Sizes 2 and 3: Evidently raises UFuncOutputCastingError (uint counts) on NumPy 2; with
    that fixed, its recursion gives scipy's exact p-value."""
    x, y = [0.1, 0.5], [0.2, 0.3, 0.9]
    strict = engine("cramer_von_mises", x, y, strict=True).score
    assert strict == pytest.approx(stats.cramervonmises_2samp(x, y).pvalue, rel=1e-12)


# -- edge cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("test", NEW_TESTS)
def test_a_numerical_test_refuses_a_categorical_column_by_name(test):
    reference = profile_column("x", "categorical", pa.array(["a", "b"]))
    current = profile_column("x", "categorical", pa.array(["a", "b"]), exact=True)
    with pytest.raises(DriftInputError, match=f"{test} does not apply to column 'x'"):
        compare_columns(reference, current, DriftOptions(stattest=test))


EDGES = {
    "same constant": ([3.0] * 6, [3.0] * 6),
    "other constant": ([3.0] * 6, [4.0] * 6),
    "one row a side": ([1.0], [2.0]),
    "two rows a side": ([1.0, 2.0], [2.0, 3.0]),
    "ties": ([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    "one constant side": ([5.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
}


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("test", NEW_TESTS)
def test_edge_cases_give_a_finite_score(test, edge):
    """docs difference row "a p-value the test cannot compute": Evidently gives NaN or
    raises; here two equal constants are no drift, two different ones drift, and too few rows
    for the test is p = 1."""
    result = engine(test, *EDGES[edge])
    assert math.isfinite(result.score)
    if edge == "same constant":
        assert not result.drifted
    if edge == "other constant":
        assert result.drifted


@pytest.mark.parametrize(
    ("test", "ref", "cur", "message"),
    [
        ("es", [1.0] * 5 + [2.0], [1.0] * 5 + [3.0], "interquartile range"),
        ("anderson", [3.0] * 6, [3.0] * 6, "more than one distinct"),
        ("cramer_von_mises", [1.0], [2.0], "at least two observations"),
        ("empirical_mmd", [1.0], [2.0, 3.0], "at least two values"),
    ],
)
def test_strict_raises_where_evidently_raises(test, ref, cur, message):
    assert engine(test, ref, cur).score == 1.0
    with pytest.raises(DriftInputError, match=message):
        engine(test, ref, cur, strict=True)


def test_strict_t_test_of_two_equal_constants_is_evidentlys_nan():
    result = engine("t_test", [2.0] * 5, [2.0] * 5, strict=True)
    assert math.isnan(result.score) and not result.drifted
    assert engine("t_test", [2.0] * 5, [2.0] * 5).score == 1.0


def test_mannw_is_one_sided_as_evidently():
    """alternative="less": only a current that is larger than the reference drifts."""
    low, high = list(range(50)), list(range(30, 80))
    assert engine("mannw", low, high).drifted
    assert not engine("mannw", high, low).drifted


# -- a stored profile's quantiles -------------------------------------------------------------

Q = 10_000


def ks_type_bound(n: int, m: int) -> float:
    """The bound the docs state for es from a stored profile's Q quantiles (measured, not
    proven: its statistic weighs the cosines' small variance), the same as ks's:
    1.7 * sqrt(n m / (n + m)) * (1/Q + 1/n)."""
    return 1.7 * math.sqrt(n * m / (n + m)) * (1 / Q + 1 / n)


# The rank tests' statistics are functions of the reference's distribution function, which the
# re-drawn values match at every stored rank and to within 1/Q between them: measured over
# 5 seeds up to 1M / 100k rows, |delta p| <= 1.1e-4 (the docs state 1e-3).
RANK_TEST_BOUND = 1e-3


@pytest.mark.parametrize(
    ("test", "bound"),
    [("anderson", lambda n, m: RANK_TEST_BOUND), ("cramer_von_mises", lambda n, m: RANK_TEST_BOUND),
     ("mannw", lambda n, m: RANK_TEST_BOUND), ("es", ks_type_bound)],
    ids=["anderson", "cramer_von_mises", "mannw", "es"],
)  # fmt: skip
@pytest.mark.parametrize(("n", "m"), [(20_000, 20_000), (100_000, 10_000)])
def test_p_value_from_quantiles_stays_within_the_stated_bound(test, bound, n, m):
    rs = np.random.RandomState(7)
    ref, cur = rs.normal(0, 1, n), rs.normal(1.5 / math.sqrt(n * m / (n + m)), 1, m)
    exact = REGISTRY[test].score(pair(ref, cur))
    approx = engine(test, ref, cur, exact_reference=False)
    assert 0.001 < exact < 0.99  # where a p-value moves most with its statistic
    assert abs(approx.score - exact) <= bound(n, m)


def test_energy_distance_from_quantiles_stays_within_its_bound():
    """|delta| <= sqrt(2 * (1/Q + 1/n) * W1(quantiles, reference)), W1 <= 2 (max - min) / Q."""
    rs = np.random.RandomState(8)
    ref, cur = rs.lognormal(0, 1, 200_000), rs.lognormal(0.05, 1, 50_000)
    exact = stats.energy_distance(ref, cur)
    approx = engine("ed", ref, cur, exact_reference=False).score
    bound = math.sqrt(2 * (1 / Q + 1 / len(ref)) * 2 * (ref.max() - ref.min()) / Q)
    assert abs(approx - exact) <= bound


def test_t_test_is_exact_from_any_profile():
    rs = np.random.RandomState(9)
    ref, cur = rs.normal(0, 1, 50_000), rs.normal(0.01, 1, 3_000)
    assert engine("t_test", ref, cur, exact_reference=False).score == pytest.approx(
        stats.ttest_ind(ref, cur).pvalue, rel=1e-9
    )


def test_a_few_valued_reference_is_exact_from_its_counts():
    rs = np.random.RandomState(10)
    ref, cur = rs.randint(0, 8, 30_000).astype(float), rs.randint(0, 9, 2_000).astype(float)
    for test in ("anderson", "cramer_von_mises", "mannw", "es", "ed"):
        exact = REGISTRY[test].score(pair(ref, cur))
        approx = REGISTRY[test].score(pair(ref, cur, exact_reference=False))
        assert approx == pytest.approx(exact, rel=1e-9), test
