"""Evidently 0.7.23's test choice: the automatic one (no test named) and the look-up by name,
which refuses a test for a column kind it does not take. Ported from
evidently tests/stattests/test_registry.py and
evidently tests/calculations/stattests/test_get_stattest.py."""

import numpy as np
import pyarrow as pa
import pytest

from mlops_assets.drift.engine import DriftOptions, compare_columns
from mlops_assets.drift.profile import DriftInputError, profile_column
from mlops_assets.drift.registry import REGISTRY, lookup

GET = "evidently tests/calculations/stattests/test_get_stattest.py::"
REG = "evidently tests/stattests/test_registry.py::"


def column(ref, cur, kind, **options):
    def profile(values, exact):
        return profile_column("x", kind, pa.array(values), exact=exact)

    return compare_columns(profile(ref, False), profile(cur, True), DriftOptions(**options))


@pytest.mark.parametrize(
    "values, kind, expected",
    [
        ([1.0] * 10, "numerical", "z"),
        (list(range(1, 12)), "numerical", "ks"),
        (list(range(1, 12)) * 1000, "numerical", "wasserstein"),
        (list(range(1, 6)) * 1000, "numerical", "jensenshannon"),
        (["a", "b", "c"] * 10, "categorical", "chisquare"),
        (["a", "b"] * 10, "categorical", "z"),
        (["a", "b"] * 10000, "categorical", "jensenshannon"),
    ],
    ids=[f"{GET}test_get_default_stattest[{i}]" for i in range(7)],
)
def test_the_automatic_choice(values, kind, expected):
    """The same data on both sides, as in Evidently's case."""
    result = column(values, values, kind)
    assert result.test == expected
    assert not result.drifted


@pytest.mark.parametrize(
    "name, kind",
    [
        ("ks", "numerical"),
        ("z", "categorical"),
        ("chisquare", "categorical"),
        ("jensenshannon", "numerical"),
        ("kl_div", "numerical"),
        ("psi", "numerical"),
        ("wasserstein", "numerical"),
    ],
    ids=[f"{REG}test_get_stattest_valid_resolve[{i}]" for i in range(7)],
)
def test_a_test_resolves_by_name(name, kind):
    assert lookup(name, kind).name == name


NUMERICAL = ["anderson", "cramer_von_mises", "ed", "es", "hellinger", "jensenshannon", "kl_div",
             "ks", "mannw", "empirical_mmd", "psi", "t_test", "wasserstein"]  # fmt: skip
CATEGORICAL = ["chisquare", "fisher_exact", "g_test", "hellinger", "jensenshannon", "kl_div",
               "psi", "TVD", "z"]  # fmt: skip
TEXT = ["abs_text_content_drift", "perc_text_content_drift"]


def test_every_test_applies_to_the_kinds_evidently_allows():
    """evidently tests/stattests/test_registry.py::test_use_stattest_by_name: the allowed
    (kind, name) pairs, and no other."""
    allowed = {(k, n) for k, names in (("numerical", NUMERICAL), ("categorical", CATEGORICAL),
                                       ("text", TEXT)) for n in names}  # fmt: skip
    registered = {(kind, name) for name, test in REGISTRY.items() for kind in test.kinds}
    assert registered == allowed
    for kind, name in allowed:
        assert lookup(name, kind).name == name


@pytest.mark.parametrize(
    "name, kind",
    [("ks", "categorical"), ("z", "numerical"), ("chisquare", "numerical")],
    ids=[f"{REG}test_get_stattest_invalid_type[{i}]" for i in range(3)],
)
def test_a_test_is_refused_for_a_kind_it_does_not_take(name, kind):
    """Evidently raises StatTestInvalidFeatureTypeError; so does the look-up here, the per-kind
    option, and a column's test named globally (the issue found z and chisquare accepted on a
    numerical column)."""
    with pytest.raises(DriftInputError, match=f"{name} does not apply to a {kind} column"):
        lookup(name, kind)
    option = {"numerical": "num_stattest", "categorical": "cat_stattest"}[kind]
    with pytest.raises(DriftInputError, match=f"{name} does not apply"):
        DriftOptions(**{option: name})
    values = np.arange(30) % 3 if kind == "numerical" else np.array(["a", "b", "c"] * 10)
    for options in ({"stattest": name}, {"per_column_stattest": {"x": name}}):
        with pytest.raises(DriftInputError, match=f"{name} does not apply to column 'x'"):
            column(values.astype(float) if kind == "numerical" else values, values, kind,
                   **options)  # fmt: skip


def test_the_automatic_choice_still_tests_few_numbers_as_categories():
    """Evidently's automatic choice takes chisquare or z for a numerical column with at most 5
    values (no type check there); only naming them is refused."""
    values = [0.0, 1.0, 2.0] * 10
    assert column(values, values, "numerical").test == "chisquare"


@pytest.mark.parametrize("name", ["no_such_test", "KS", ""])
def test_an_unknown_test_is_refused(name):
    """evidently tests/stattests/test_registry.py::test_get_stattest_missing_stattest."""
    with pytest.raises(DriftInputError, match="unknown stattest"):
        lookup(name)
    with pytest.raises(DriftInputError, match="unknown stattest"):
        DriftOptions(stattest=name)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_no_threshold_means_the_tests_default(name):
    """evidently tests/stattests/test_registry.py::test_stattest_default_threshold."""
    test = REGISTRY[name]
    kind = sorted(test.kinds)[0]
    assert DriftOptions(stattest=name).threshold_for("x", kind, test) == test.default_threshold
    assert DriftOptions(stattest=name, threshold=0.3).threshold_for("x", kind, test) == 0.3
