"""Every column test, by the name Evidently 0.7 gives it: one registry serves `mlops drift`,
the daily monitor and every model's monitoring.

A test is a function of a :class:`~mlops_assets.drift.stattests.Pair` (one column's reference
and current profiles) that returns a score, and one :class:`ColumnTest` entry in ``TESTS``
that says which column kinds it applies to, its default threshold and its drift rule, all as
in Evidently (``evidently.legacy.calculations.stattests``). Adding a test is one function and
one entry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlops_assets.drift import categorical_tests as cat
from mlops_assets.drift import numerical_tests as nt
from mlops_assets.drift import stattests as st
from mlops_assets.drift import text_drift
from mlops_assets.drift.profile import DriftInputError

NUMERICAL = frozenset({"numerical"})
CATEGORICAL = frozenset({"categorical"})
BOTH = NUMERICAL | CATEGORICAL
TEXT = frozenset({"text"})
SMALL_REFERENCE = 1000  # Evidently's switch from statistical tests to distances

RULES = {
    "p<": lambda score, threshold: score < threshold,
    "p<=": lambda score, threshold: score <= threshold,
    "d>=": lambda score, threshold: score >= threshold,
    "d>": lambda score, threshold: score > threshold,
}


@dataclass(frozen=True)
class ColumnTest:
    name: str  # Evidently's name: what --stattest takes
    display: str  # Evidently's display name (the method its reports show)
    kinds: frozenset[str]  # the column kinds it applies to
    default_threshold: float
    rule: str  # drift when: "p<" p-value < threshold, "p<=", "d>=" distance >= threshold, "d>"
    score: Callable[[st.Pair], float]
    # What the score needs to be exact: "counts" (categories or few numbers: always exact),
    # "moments", "values" (every reference value; from a stored profile's quantiles it is an
    # approximation), "raw" (every value: refused on a stored profile's quantiles) or "text".
    needs: str = "counts"
    # A bound that depends on the data, compared with the score (by ``rule``) in place of the
    # threshold, and a note that shows it: perc_text_content_drift's percentile of random
    # classifiers' ROC AUCs.
    limit: Callable[[st.Pair, float], tuple[float, str]] | None = None

    @property
    def p_value(self) -> bool:
        return self.rule.startswith("p")

    def drifted(self, score: float, threshold: float) -> bool:
        """The verdict; a score that is not a number (Evidently's NaN) is no drift."""
        return not math.isnan(score) and RULES[self.rule](score, threshold)

    def verdict(self, pair: st.Pair, score: float, threshold: float) -> tuple[bool, str]:
        """The verdict on a column and a note (the data's own bound, when the test has one; why
        there is no score, when the score is not a number)."""
        if math.isnan(score):  # strict: Evidently's NaN, as it reports it
            return False, "" if pair.strict else (
                "no score: the test is undefined on these values (numbers too large for its "
                "floating-point arithmetic)"
            )  # fmt: skip
        if math.isinf(score):  # a distance too large for floating point: null in the JSON
            return self.drifted(score, threshold), "the score is infinite (overflowed)"
        if self.limit is None:
            return self.drifted(score, threshold), ""
        bound, note = self.limit(pair, threshold)
        return self.drifted(score, bound), note


TESTS = (
    ColumnTest("ks", "K-S p_value", NUMERICAL, 0.05, "p<=", st.ks_test, "values"),
    ColumnTest("chisquare", "chi-square p_value", CATEGORICAL, 0.05, "p<", st.chisquare),
    ColumnTest("z", "Z-test p_value", CATEGORICAL, 0.05, "p<", st.z_test),
    ColumnTest(
        "wasserstein",
        "Wasserstein distance (normed)",
        NUMERICAL,
        0.1,
        "d>=",
        st.wasserstein,
        "values",
    ),
    ColumnTest(
        "jensenshannon",
        "Jensen-Shannon distance",
        BOTH,
        0.1,
        "d>=",
        st.jensenshannon_test,
        "values",
    ),
    ColumnTest("psi", "PSI", BOTH, 0.1, "d>=", st.psi_test, "values"),
    ColumnTest("kl_div", "Kullback-Leibler divergence", BOTH, 0.1, "d>=", st.kl_div_test, "values"),
    ColumnTest("hellinger", "Hellinger distance", BOTH, 0.1, "d>=", st.hellinger_test, "values"),
    # -- numerical tests on scipy (numerical_tests.py) --
    ColumnTest("anderson", "Anderson-Darling", NUMERICAL, 0.1, "p<", nt.anderson, "values"),
    ColumnTest(
        "cramer_von_mises", "Cramer-von Mises", NUMERICAL, 0.1, "p<=", nt.cramer_von_mises, "values"
    ),
    ColumnTest("ed", "Energy-distance", NUMERICAL, 0.1, "d>", nt.energy_distance, "values"),
    ColumnTest("es", "Epps-Singleton", NUMERICAL, 0.05, "p<", nt.epps_singleton, "values"),
    ColumnTest(
        "mannw", "Mann-Whitney U-rank test", NUMERICAL, 0.05, "p<", nt.mann_whitney, "values"
    ),
    ColumnTest("t_test", "t_test", NUMERICAL, 0.05, "p<", nt.t_test, "moments"),
    ColumnTest("empirical_mmd", "empirical_mmd", NUMERICAL, 0.1, "p<", nt.empirical_mmd, "raw"),
    # -- categorical tests (categorical_tests.py) --
    ColumnTest("fisher_exact", "Fisher's Exact test", CATEGORICAL, 0.1, "p<", cat.fisher_exact),
    ColumnTest("g_test", "g_test", CATEGORICAL, 0.1, "p<", cat.g_test),
    ColumnTest("TVD", "Total-Variation-Distance", CATEGORICAL, 0.1, "p<", cat.tvd_test),
    # -- text tests (text_drift.py) --
    ColumnTest(
        "abs_text_content_drift",
        "Absolute text content drift",
        TEXT,
        0.55,
        "d>",
        text_drift.domain_classifier_auc,
        "text",
    ),
    ColumnTest(
        "perc_text_content_drift",
        "Percentile text content drift",
        TEXT,
        0.95,
        "d>",
        text_drift.domain_classifier_auc,
        "text",
        limit=text_drift.random_classifier_limit,
    ),
)
REGISTRY: dict[str, ColumnTest] = {test.name: test for test in TESTS}


def lookup(name: str, kind: str | None = None, column: str | None = None) -> ColumnTest:
    """The test called ``name``; with ``kind``, refused unless it applies to that kind of
    column (as Evidently refuses ``z`` or ``chisquare`` on a numerical one)."""
    test = REGISTRY.get(name)
    if test is None:
        raise DriftInputError(f"unknown stattest {name!r}: choose one of {', '.join(REGISTRY)}")
    if kind is not None and kind not in test.kinds:
        where = f"column {column!r}, which is {kind}" if column else f"a {kind} column"
        raise DriftInputError(
            f"{name} does not apply to {where}: it tests {' or '.join(sorted(test.kinds))} columns"
        )
    return test


def names_for(kind: str) -> list[str]:
    return [test.name for test in TESTS if kind in test.kinds]


def default_test(kind: str, reference_rows: int, distinct: int) -> ColumnTest:
    """Evidently 0.7's choice when no test is named. ``distinct`` counts the values of
    reference and current together, missing values excluded; ``reference_rows`` counts
    non-missing rows. A numerical column with at most 5 values gets a categorical test, as in
    Evidently."""
    if kind == "text":
        return REGISTRY["abs_text_content_drift" if reference_rows > SMALL_REFERENCE
                        else "perc_text_content_drift"]  # fmt: skip
    if reference_rows <= SMALL_REFERENCE:
        if kind == "numerical" and distinct > 5:
            return REGISTRY["ks"]
        return REGISTRY["chisquare" if distinct > 2 else "z"]
    if kind == "numerical" and distinct > 5:
        return REGISTRY["wasserstein"]
    return REGISTRY["jensenshannon"]
