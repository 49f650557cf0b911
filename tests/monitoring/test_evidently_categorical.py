"""Evidently 0.7.23's own cases for the categorical tests (chisquare, hellinger, z, g_test,
fisher_exact, TVD), ported with their inputs, thresholds and verdicts.

Each id cites its source in Evidently's repository. The expected values are Evidently
0.7.23's, re-run (Evidently's tests assert them more loosely): the score must agree within
1e-3 relative or 1e-4 absolute and the verdict exactly. Evidently's unit tests call each
test's function directly; here every case goes through the engine (``compare_columns`` on
profiles), so a missing value is dropped first, as Evidently's reports do.
"""

import numpy as np
import pyarrow as pa
import pytest

from mlops_assets.drift.categorical_tests import fisher_table, permutation_p_value
from mlops_assets.drift.engine import DriftOptions, compare_columns
from mlops_assets.drift.profile import DriftInputError, profile_column

SRC = "evidently tests/stattests/test_stattests.py::"
UTILS = "evidently tests/calculations/stattests/test_utils.py::"


def rep(values, counts) -> list:
    """pd.Series(values).repeat(counts), as Evidently's cases build their samples."""
    return [v for v, c in zip(values, counts, strict=True) for _ in range(c)]


R6 = rep(range(1, 7), [16, 18, 16, 14, 12, 12])
C6 = rep(range(1, 7), [16, 16, 16, 16, 16, 8])


def column(ref, cur, test, threshold=None, strict=False):
    """One categorical column through the engine; None is a missing value (Evidently's NaN)."""

    def profile(values, exact):
        strings = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        return profile_column("x", "categorical", strings, exact=exact)

    options = DriftOptions(stattest=test, threshold=threshold, strict_evidently=strict)
    return compare_columns(profile(ref, False), profile(cur, True), options)


CASES = [
    # (id, reference, current, test, threshold, Evidently 0.7.23's score, drift)
    ("test_freq_obs_eq_freq_exp[chisquare]", R6, C6, "chisquare", 0.5, 0.6730876007, False),
    ("test_freq_obs_eq_freq_exp[hellinger]", R6, C6, "hellinger", 0.1, 0.06812774371, False),
    ("test_freq_obs_not_eq_freq_exp[chisquare]", rep(range(1, 7), [32, 36, 32, 28, 24, 24]), C6,
     "chisquare", 0.5, 0.6730876007, False),
    ("test_freq_obs_not_eq_freq_exp[hellinger]", rep(range(1, 7), [32, 36, 32, 28, 24, 24]), C6,
     "hellinger", 0.1, 0.06812774371, False),
    ("test_cat_feature_with_nans[chisquare]", rep(["a", "b", None], [10] * 3),
     rep(["a", "b", None], [10] * 3), "chisquare", 0.5, 1.0, False),
    ("test_cat_feature_with_nans[hellinger]", rep(["a", "b", None], [10] * 3),
     rep(["a", "b", None], [10] * 3), "hellinger", 0.1, 0.0, False),
    ("test_chi_stat_test_cat_feature", rep("abc", [10] * 3), rep("abc", [10] * 3), "chisquare",
     0.5, 1.0, False),
    ("test_z_stat_test_cat_feature[0]", ["a", "b"] * 10, ["a", "b"] * 10, "z", 0.5, 1.0, False),
    # Evidently's direct call counts NaN as "not a" (p = 1.0); its reports, like this engine,
    # drop NaN first: the reference is then all "a" (Evidently 0.7.23 on the cleaned data).
    ("test_z_stat_test_cat_feature[1]", ["a", None] * 10, ["a", "b"] * 10, "z", 0.5,
     0.0061698993205441255, True),
    ("test_g_test", rep("abc", [5, 5, 8]), rep("abc", [4, 6, 8]), "g_test", 0.5, 0.8176220134,
     False),
    ("test_pvalue_fisher_exact[0]", list("abbaab") * 15, list("bbabba") * 15, "fisher_exact",
     0.1, 0.03397227432, True),
    ("test_pvalue_fisher_exact[1]", list("abbaab"), ["a"] * 6, "fisher_exact", 0.1,
     0.1818181818, False),
    ("test_pvalue_fisher_exact[2]", ["a"] * 6, ["a"] * 6, "fisher_exact", 0.1, 1.0, False),
    ("test_pvalue_fisher_exact[3]", list("abbbab"), list("bbbaba"), "fisher_exact", 0.1, 1.0,
     False),
    ("test_pvalue_fisher_exact[4]", ["a"] * 6, ["b"] * 6, "fisher_exact", 0.1, 0.002164502165,
     True),
    ("test_pvalue_fisher_exact[5]", list("aaabb") * 30, list("bbbaa") * 30, "fisher_exact", 0.1,
     0.000784398715, True),
    ("test_tvd_stattest[0]", R6, C6, "TVD", 0.1, 0.928, False),
    ("test_tvd_stattest[1]", R6, rep(range(1, 7), [10, 10, 24, 24, 10, 10]), "TVD", 0.1, 0.085,
     True),
    ("test_tvd_stattest[2]", R6, rep(range(1, 7), [0, 0, 0, 0, 0, 88]), "TVD", 0.1, 0.0, True),
    ("test_tvd_stattest[3]", R6, R6, "TVD", 0.1, 1.0, False),
    ("test_tvd_stattest[4]", R6, rep(range(1, 7), [10, 24, 12, 16, 8, 16]), "TVD", 0.5, 0.309,
     True),
]  # fmt: skip


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize(
    "ref, cur, test, threshold, expected, drift",
    [pytest.param(*case[1:], id=SRC + case[0]) for case in CASES],
)
def test_evidently_case(ref, cur, test, threshold, expected, drift, strict):
    """The same number in both modes: none of these cases meets a deliberate difference (the
    chi-square cells hold at least 5 rows; fisher_exact's and g_test's samples are equal in
    size; TVD permutes the rows in Evidently's order, as they arrive grouped)."""
    result = column(ref, cur, test, threshold, strict)
    assert result.test == test
    assert result.score == pytest.approx(expected, rel=1e-3, abs=1e-4)
    assert result.drifted is drift


def test_tvd_p_values_are_evidentlys_to_the_last_digit():
    """TVD's cases assert exact equality in Evidently (a p-value is a share of 1000)."""
    for name, ref, cur, test, threshold, expected, _ in CASES:
        if test == "TVD":
            assert column(ref, cur, test, threshold).score == expected, name


# test_for_null_fisher_exact: Evidently's direct call refuses NaN and +-inf. A report drops
# them first (a Parquet category column holds them as nulls here); the samples are then of
# unequal length, which Evidently refuses (re-run) and strict mode too. By default the table
# comes from the counts (docs, differences: "fisher_exact on samples of unequal size").
NULL_CASES = [
    (["a", None, "b", "a", "a", "b"], list("bbabba")),
    (["a", None, "a", "a", "b"], ["a", "a", "a", "a", None, "a"]),
    ([None, None, None, "a", "b", "a"], ["a", "a", None, "a", "a", "b"]),
    ([None, "b", None, "b", "a", "b"], ["b", None, "b", "a", "b", "a"]),
]


@pytest.mark.parametrize(
    "ref, cur", NULL_CASES, ids=[f"{SRC}test_for_null_fisher_exact[{i}]" for i in range(4)]
)
def test_fisher_exact_after_missing_values_are_dropped(ref, cur):
    from scipy import stats

    with pytest.raises(DriftInputError, match="not of equal length"):
        column(ref, cur, "fisher_exact", strict=True)
    kept_ref = [v for v in ref if v is not None]
    kept_cur = [v for v in cur if v is not None]
    table = [[kept_cur.count("b"), kept_cur.count("a")], [kept_ref.count("b"), kept_ref.count("a")]]
    result = column(ref, cur, "fisher_exact")
    assert result.score == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-9)


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize(
    "ref, cur",
    [(list("acaaab"), list("bbabba")), (["a", 1, "a", 3, "b", "m"], ["a", "a", 2, "a", "b", "a"])],
    ids=[f"{SRC}test_for_multiple_categories_fisher_exact[{i}]" for i in range(2)],
)
def test_fisher_exact_refuses_more_than_two_categories(ref, cur, strict):
    message = "unique categories > 2" if strict else "compares two categories"
    with pytest.raises(DriftInputError, match=message):
        column(ref, cur, "fisher_exact", strict=strict)


def test_fisher_exact_takes_samples_of_any_size_unless_strict():
    """docs, differences: "fisher_exact on samples of unequal size"."""
    ref, cur = list("abbaab") * 10, list("bbabba") * 7
    with pytest.raises(DriftInputError, match="not of equal length"):
        column(ref, cur, "fisher_exact", strict=True)
    from scipy import stats

    expected = stats.fisher_exact([[28, 14], [30, 30]]).pvalue
    assert column(ref, cur, "fisher_exact").score == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "ref, cur, table",
    [
        ([1, 0, 1, 0], [1, 0, 1, 0], [[2, 2], [2, 2]]),
        ([1, 1, 1, 1], [0, 0, 0, 0], [[0, 4], [4, 0]]),
        ([0, 0, 0, 0], [0, 0, 0, 0], [[0, 4], [0, 4]]),
        ([1, 1, 1, 0], [0, 1, 1, 0], [[2, 2], [3, 1]]),
    ],
    ids=[f"{UTILS}test_generate_fisher2x2_contingency_table[{i}]" for i in range(4)],
)
def test_fisher_table(ref, cur, table):
    """Counts of the sorted categories (0, 1) of both sides, as the engine aligns them."""
    keys = max(max(ref), max(cur)) + 1
    counts = np.bincount(ref, minlength=keys), np.bincount(cur, minlength=keys)
    assert fisher_table(*counts).tolist() == table


@pytest.mark.parametrize(
    "ref, cur",
    [([1, 0, 1], [1, 0, 1, 0]), ([1, 1, 1, 1], [0])],
    ids=[
        f"{UTILS}test_input_data_length_check_generate_fisher2x2_contingency_table[{i}]"
        for i in range(2)
    ],
)
def test_fisher_exact_unequal_lengths_raise_in_strict_mode(ref, cur):
    with pytest.raises(DriftInputError, match="not of equal length"):
        column(ref, cur, "fisher_exact", strict=True)
    assert 0 <= column(ref, cur, "fisher_exact").score <= 1


@pytest.mark.parametrize(
    "cur, observed, expected",
    [
        ([16, 16, 16, 16, 16, 8], 0.0628, 0.99),
        ([16, 16, 16, 16, 16, 8], 0.204, 0.14),
        ([0, 0, 0, 0, 0, 88], 0.863, 0.0),
        ([16, 18, 16, 14, 12, 12], 0.0, 1.0),
    ],
    ids=[f"{UTILS}test_permutation_test[{i}]" for i in range(4)],
)
def test_permutation_test_with_100_iterations(cur, observed, expected):
    """Evidently's permutation_test with its default of 100 iterations, seed 0, R6 as the
    reference: exact equality, as Evidently asserts."""
    reference = np.array([16, 18, 16, 14, 12, 12])
    assert permutation_p_value(reference, np.array(cur), observed, iterations=100) == expected


def test_g_test_rescales_the_expected_counts_unless_strict():
    """docs, differences: "g_test on samples of unequal size". Evidently passes the raw
    reference counts, which scipy refuses unless both sides have as many rows."""
    from scipy import stats

    ref, cur = rep("abc", [10, 10, 16]), rep("abc", [4, 6, 8])
    with pytest.raises(DriftInputError, match="differ in size"):
        column(ref, cur, "g_test", strict=True)
    expected = stats.power_divergence([4, 6, 8], [5, 5, 8], lambda_="log-likelihood").pvalue
    assert column(ref, cur, "g_test").score == pytest.approx(expected, rel=1e-9)
    # Equal sizes: the same number in both modes (the ported test_g_test case above).


def test_g_test_on_one_category_is_no_drift_unless_strict():
    """docs, differences: "a test over a single category" (Evidently: NaN, no drift)."""
    same = ["a"] * 20
    assert column(same, same, "g_test").score == 1.0
    strict = column(same, same, "g_test", strict=True)
    assert np.isnan(strict.score) and not strict.drifted


def test_tvd_above_the_row_order_limit_draws_from_the_counts():
    """docs, differences: "TVD above 10,000 rows". The null distribution is the same; the
    p-value differs from the rows permuted (strict) by Monte-Carlo error only."""
    ref = rep("abc", [6000, 4000, 2000])
    near = rep("abc", [4000, 2740, 1260])  # shares 0.5/0.3425/0.1575 vs 0.5/0.333/0.167
    drawn, permuted = column(ref, near, "TVD"), column(ref, near, "TVD", strict=True)
    assert 0.05 < permuted.score < 0.95
    assert abs(drawn.score - permuted.score) <= 4 * np.sqrt(0.25 / 1000)


def test_tvd_with_many_categories_of_few_rows_permutes_the_rows():
    """A draw from the counts costs about 20 permuted rows per category: 100,000 categories
    of one row a side took 42 s drawn, 5 s permuted. Up to 8 rows per category the rows are
    permuted, which is also Evidently's procedure (the same p-value as strict)."""
    rng = np.random.default_rng(3)
    keys = [f"k{i:04d}" for i in range(1500)]
    shifted = np.linspace(0.7, 1.3, 1500)
    ref = rep(keys, rng.multinomial(6000, np.full(1500, 1 / 1500)))  # 11,000 rows in all
    cur = rep(keys, rng.multinomial(5000, shifted / shifted.sum()))
    permuted = column(ref, cur, "TVD", strict=True).score
    assert 0 < permuted < 0.05  # 0.012 (drawn from the counts instead: 0.007)
    assert column(ref, cur, "TVD").score == permuted


# Not from Evidently's tests: inputs checked on Evidently 0.7.23 (its numbers, re-run), where
# strict mode must give Evidently's and the defaults differ only as the docs say.
CHECKED = [
    # (id, reference, current, test, Evidently 0.7.23 = strict, default)
    ("kl_div", R6, C6, "kl_div", 0.01890967696532045, 0.01890967696532045),
    ("kl_div with a new category", R6, rep([1, 2, 3, 7], [30, 30, 20, 8]), "kl_div",
     2.881228348965255, 2.881228348965255),
    # docs, differences: "chi-square with sparse or new categories" (pooled: no drift).
    ("chisquare with a new category", R6, rep(range(1, 8), [16, 16, 16, 16, 16, 7, 1]),
     "chisquare", 0.0, 0.6164324406252328),  # the new cell expects 0.5 rows, not 0
    # docs, differences: "a test over a single category" (Evidently: NaN, no drift).
    ("chisquare on one category", ["a"] * 20, ["a"] * 30, "chisquare", np.nan, 1.0),
    ("z on two constant sides", ["a"] * 20, ["b"] * 30, "z", 1.5374368445009168e-12,
     1.5374368445009168e-12),
    ("z", rep("ab", [20, 5]), rep("ab", [12, 30]), "z", 4.582935700558899e-05,
     4.582935700558899e-05),
]  # fmt: skip


@pytest.mark.parametrize(
    "ref, cur, test, evidently, default", [pytest.param(*c[1:], id=c[0]) for c in CHECKED]
)
def test_checked_on_evidently(ref, cur, test, evidently, default):
    strict = column(ref, cur, test, strict=True).score
    assert strict == pytest.approx(evidently, rel=1e-3, abs=1e-4, nan_ok=True)
    assert column(ref, cur, test).score == pytest.approx(default, rel=1e-3, abs=1e-4)
