"""The registry holds every stattest of Evidently 0.7.23 under its own name, with Evidently's
display name, column kinds, default threshold and drift rule
(``evidently/legacy/calculations/stattests/*.py``: each ``StatTest(...)`` and its ``func``'s
comparison)."""

from __future__ import annotations

import pytest

from mlops_assets.drift.registry import REGISTRY

NUM, CAT, TEXT = {"numerical"}, {"categorical"}, {"text"}

# name: (display_name, allowed_feature_types, default_threshold, drift rule)
EVIDENTLY = {
    "anderson": ("Anderson-Darling", NUM, 0.1, "p<"),
    "chisquare": ("chi-square p_value", CAT, 0.05, "p<"),
    "cramer_von_mises": ("Cramer-von Mises", NUM, 0.1, "p<="),
    "ed": ("Energy-distance", NUM, 0.1, "d>"),
    "es": ("Epps-Singleton", NUM, 0.05, "p<"),
    "fisher_exact": ("Fisher's Exact test", CAT, 0.1, "p<"),
    "g_test": ("g_test", CAT, 0.1, "p<"),
    "hellinger": ("Hellinger distance", NUM | CAT, 0.1, "d>="),
    "jensenshannon": ("Jensen-Shannon distance", NUM | CAT, 0.1, "d>="),
    "kl_div": ("Kullback-Leibler divergence", NUM | CAT, 0.1, "d>="),
    "ks": ("K-S p_value", NUM, 0.05, "p<="),
    "mannw": ("Mann-Whitney U-rank test", NUM, 0.05, "p<"),
    "empirical_mmd": ("empirical_mmd", NUM, 0.1, "p<"),
    "psi": ("PSI", NUM | CAT, 0.1, "d>="),
    "t_test": ("t_test", NUM, 0.05, "p<"),
    "TVD": ("Total-Variation-Distance", CAT, 0.1, "p<"),
    "wasserstein": ("Wasserstein distance (normed)", NUM, 0.1, "d>="),
    "z": ("Z-test p_value", CAT, 0.05, "p<"),
    "perc_text_content_drift": ("Percentile text content drift", TEXT, 0.95, "d>"),
    "abs_text_content_drift": ("Absolute text content drift", TEXT, 0.55, "d>"),
}


def test_the_registry_has_exactly_evidentlys_stattests():
    assert sorted(REGISTRY) == sorted(EVIDENTLY)


@pytest.mark.parametrize("name", sorted(EVIDENTLY))
def test_each_test_has_evidentlys_name_kinds_threshold_and_rule(name):
    display, kinds, threshold, rule = EVIDENTLY[name]
    test = REGISTRY[name]
    assert (test.display, set(test.kinds), test.default_threshold, test.rule) == (
        display,
        kinds,
        threshold,
        rule,
    )


@pytest.mark.parametrize(
    ("rule", "score", "threshold", "drifted"),
    [
        ("p<", 0.05, 0.05, False), ("p<", 0.0499, 0.05, True),
        ("p<=", 0.05, 0.05, True), ("p<=", 0.0501, 0.05, False),
        ("d>=", 0.1, 0.1, True), ("d>=", 0.0999, 0.1, False),
        ("d>", 0.1, 0.1, False), ("d>", 0.1001, 0.1, True),
        ("p<", float("nan"), 0.05, False), ("d>=", float("nan"), 0.1, False),
    ],
)  # fmt: skip
def test_the_drift_rules_at_their_boundaries(rule, score, threshold, drifted):
    test = next(t for t in REGISTRY.values() if t.rule == rule)
    assert test.drifted(score, threshold) is drifted
