"""SHAP explanations: every catalogue candidate type is explained per feature of its signature,
the contributions add up to the model's output on its own scale (to 1e-6), and reason codes are
the largest positive contributions with escaped, declared or generated texts."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mlops_assets import catalogue
from mlops_assets.training.candidates import CATALOGUE, STACKING, build_pipeline, build_stacking
from mlops_assets.training.dataset import FeatureSpec, load_training_data
from mlops_assets.training.explain import (
    Explainer,
    Explanation,
    explanation_summary,
    model_output,
    reason_codes,
)

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)

# What the permutation explainer compiles, in a process of its own: shap loaded as the
# platform loads it, one small explanation.
COMPILE_KERNELS = """
import numpy as np
from mlops_assets.training.explain import load_shap
shap = load_shap()
x = np.random.default_rng(0).random((12, 4))
masker = shap.maskers.Independent(x[:8], max_samples=8)
shap.PermutationExplainer(lambda z: z.sum(axis=1), masker, seed=0)(x[8:], max_evals=9, silent=True)
"""
PARAMS = {
    "logistic_l1": {"C": 0.1},
    "logistic_l2": {"C": 0.5},
    "random_forest": {"max_depth": 4, "min_samples_leaf": 20},
    "hist_gradient_boosting": {"learning_rate": 0.2, "max_leaf_nodes": 7},
    "adaboost": {"learning_rate": 1.0},
    "ridge": {"alpha": 1.0},
    "lasso": {"alpha": 1.0},
    "gradient_boosting": {"learning_rate": 0.1, "max_leaf_nodes": 7},
}
EXPECTED = {  # candidate -> (method, scale of a classifier)
    "logistic_l1": ("linear", "log-odds"),
    "logistic_l2": ("linear", "log-odds"),
    "random_forest": ("tree", "probability"),
    "hist_gradient_boosting": ("tree", "log-odds"),
    "adaboost": ("permutation", "probability"),
    STACKING: ("permutation", "probability"),
    "ridge": ("linear", None),
    "lasso": ("linear", None),
    "gradient_boosting": ("tree", None),
}
CASES = [
    (task_model, name)
    for task_model in ("default_classifier", "loss_regressor")
    for name, candidate in CATALOGUE.items()
    if catalogue.model(task_model).task in candidate.tasks
]


@pytest.fixture(scope="module")
def datasets(features_con):
    return {m: load_training_data(features_con, catalogue.model(m)) for m in dict(CASES)}


def fitted(data, name):
    classifier = data.model.is_classifier
    if name == STACKING:
        bases = ("logistic_l1", "random_forest", "hist_gradient_boosting")
        return build_stacking({b: PARAMS[b] for b in bases}, data.spec, seed=0).fit(
            data.x_train, data.y_train
        )
    model = build_pipeline(name, PARAMS[name], data.spec, seed=0, classifier=classifier)
    return model.fit(data.x_train, data.y_train)


def test_the_catalogue_is_covered():
    assert {name for _, name in CASES} == set(CATALOGUE)


@pytest.mark.parametrize(("model_name", "candidate"), CASES)
def test_contributions_add_up_to_the_output_on_the_models_scale(datasets, model_name, candidate):
    data = datasets[model_name]
    model = fitted(data, candidate)
    explainer = Explainer(
        model, data.spec, data.population, data.model.is_classifier, data.model.target
    )
    x = data.x_holdout.head(60)
    explanation = explainer.explain(x)
    method, scale = EXPECTED[candidate]
    assert explanation.method == method
    units = f"{data.model.target} units"
    assert explanation.scale == (scale if data.model.is_classifier else units)
    assert list(explanation.contributions.columns) == data.spec.columns  # per original feature
    assert explanation.contributions.shape == (len(x), len(data.spec.columns))
    # The output is the model's own, on its scale: log-odds are the logit of the probability.
    output = model_output(model, x, data.model.is_classifier, explanation.scale)
    np.testing.assert_allclose(explanation.output, output)
    if explanation.scale == "log-odds":
        probability = model.predict_proba(x)[:, 1]
        np.testing.assert_allclose(1 / (1 + np.exp(-explanation.output)), probability)
    total = explanation.expected_value + explanation.contributions.sum(axis=1).to_numpy()
    np.testing.assert_allclose(total, explanation.output, rtol=0, atol=1e-6)
    assert explanation.additivity_error() < 1e-6


def test_a_missing_indicator_and_one_hot_columns_belong_to_their_feature(datasets):
    """A row whose numeric feature is missing: its contribution (value column and indicator)
    is the feature's, on a linear model where it can be computed by hand."""
    data = datasets["default_classifier"]
    model = fitted(data, "logistic_l2")
    prepare, estimator = model.named_steps["prepare"], model[-1]
    imputer = prepare.named_transformers_["numeric"].steps[0][1]
    feature = data.spec.numeric[imputer.indicator_.features_[0]]  # missing in training
    x = data.x_holdout.head(5).copy()
    x.loc[:, feature] = np.nan
    explanation = Explainer(model, data.spec, data.population, True, "defaulted").explain(x)
    names = list(prepare.get_feature_names_out())
    coef = estimator.coef_[0]
    mean = prepare.transform(data.population[data.spec.columns]).mean(axis=0)
    row = prepare.transform(x)
    own = (f"numeric__{feature}", f"numeric__missingindicator_{feature}")
    owned = [i for i, n in enumerate(names) if n in own]
    assert len(owned) == 2  # the value (imputed) and its missing-value indicator
    by_hand = (coef[owned] * (row[:, owned] - mean[owned])).sum(axis=1)
    np.testing.assert_allclose(explanation.contributions[feature], by_hand, atol=1e-9)
    category = data.spec.categorical[0]
    owned = [i for i, n in enumerate(names) if n.startswith(f"categorical__{category}_")]
    by_hand = (coef[owned] * (row[:, owned] - mean[owned])).sum(axis=1)
    np.testing.assert_allclose(explanation.contributions[category], by_hand, atol=1e-9)


def test_the_permutation_explainer_batched_is_shaps_row_by_row(datasets):
    """The recorded-and-replayed batch gives exactly what shap gives calling the model itself."""
    import shap

    from mlops_assets.training.explain import BACKGROUND_ROWS, PERMUTATIONS, SEED, _Codes

    data = datasets["default_classifier"]
    model = fitted(data, "adaboost")
    x = data.x_holdout.head(8).reset_index(drop=True)
    explainer = Explainer(model, data.spec, data.population, True, "defaulted")
    batched = explainer.explain(x)
    background = data.population[data.spec.columns].head(BACKGROUND_ROWS)
    codes = _Codes(data.spec, pd.concat([background, x], ignore_index=True))
    direct = shap.PermutationExplainer(
        lambda z: model.predict_proba(codes.decode(z))[:, 1],
        shap.maskers.Independent(codes.encode(background), max_samples=BACKGROUND_ROWS),
        seed=SEED,
    )(codes.encode(x), max_evals=PERMUTATIONS * (2 * len(data.spec.columns) + 1), silent=True)
    np.testing.assert_allclose(batched.contributions.to_numpy(), direct.values, atol=1e-12)
    assert batched.expected_value == pytest.approx(float(np.ravel(direct.base_values)[0]))


SPEC = FeatureSpec(numeric=("income", "debt"), categorical=("purpose",))


def _explanation(contributions: list[list[float]]) -> Explanation:
    frame = pd.DataFrame(contributions, columns=SPEC.columns)
    return Explanation("linear", "log-odds", 0.0, frame.sum(axis=1).to_numpy(), frame)


def test_reason_codes_are_the_largest_positive_contributions_with_texts():
    explanation = _explanation([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.2], [0.2, 0.4, 0.0]])
    x = pd.DataFrame(
        {
            "income": [10.0, 1.0, np.nan],
            "debt": [1.0, 1.0, 9.0],
            "purpose": ["\x1b[2Jcar\n[/b]" + "x" * 60, "car", None],
        }
    )
    codes = reason_codes(
        explanation,
        x,
        SPEC,
        typical={"income": 5.0, "debt": 3.0},
        reasons={"debt": "Too much debt"},
    )
    assert codes[["row", "rank", "feature"]].values.tolist() == [
        [0, 1, "purpose"], [0, 2, "income"], [2, 1, "debt"], [2, 2, "income"],
    ]  # fmt: skip
    assert codes["contribution"].tolist() == [0.9, 0.5, 0.4, 0.2]
    purpose, income, debt, missing = codes["reason"]
    # A category is quoted escaped (no control character reaches a terminal) and cut short.
    assert (
        purpose.startswith("purpose is \\x1b[2Jcar\\n[/b]")
        and len(purpose) == len("purpose is ") + 40
    )
    assert purpose.isprintable()
    assert income == "income higher than typical"
    assert debt == "Too much debt"  # the model's declared text
    assert missing == "income missing"


def test_reason_codes_rank_at_most_four():
    spec = FeatureSpec(numeric=tuple(f"f{i}" for i in range(6)), categorical=())
    frame = pd.DataFrame([[0.1, 0.6, 0.3, 0.5, 0.2, 0.4]], columns=spec.columns)
    explanation = Explanation("tree", "log-odds", 0.0, frame.sum(axis=1).to_numpy(), frame)
    x = pd.DataFrame([[1.0] * 6], columns=spec.columns)
    codes = reason_codes(explanation, x, spec, typical={f: 2.0 for f in spec.columns})
    assert codes["feature"].tolist() == ["f1", "f3", "f5", "f2"]
    assert set(codes["reason"].str.endswith("lower than typical")) == {True}


def test_summary_is_the_mean_absolute_contribution_largest_first():
    explanation = _explanation([[0.5, -0.2, 0.1], [-0.3, 0.8, 0.1]])
    assert explanation_summary(explanation) == {
        "method": "linear",
        "scale": "log-odds",
        "expected_value": 0.0,
        "rows": 2,
        "mean_abs_shap": {
            "debt": pytest.approx(0.5), "income": pytest.approx(0.4), "purpose": pytest.approx(0.1)
        },
    }  # fmt: skip
    assert list(explanation_summary(explanation)["mean_abs_shap"]) == ["debt", "income", "purpose"]


def test_shaps_compiled_kernels_are_kept_for_the_next_process(tmp_path):
    """numba compiles the permutation explainer's kernels in the first process; the next one
    loads them from the cache and adds nothing to it (a kernel numba cannot reuse would add a
    file per process), and a damaged cache file means compiling that kernel again (and saving
    it), not failing."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_DEBUG_CACHE": "1"}

    def process() -> str:
        done = subprocess.run(
            [sys.executable, "-c", COMPILE_KERNELS], env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    first = process()
    assert "[cache] data saved" in first, first[-3000:]
    # The permutation explainer's output step too: for the identity link, the platform's
    # cached copy of shap's kernel, which takes the link as an argument and cannot cache.
    assert list(tmp_path.rglob("shap_kernels._identity_single_output-*.nbc")), first[-3000:]
    kept = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # One cache file damaged: compiled around, not an error; every other kernel is loaded. The
    # platform's own: of the two the explainer loads, the quicker to compile again (3.5 s
    # against shap's masking kernel's 6 s).
    [damaged] = tmp_path.rglob("shap_kernels._identity_single_output-*.nbc")
    damaged.write_bytes(damaged.read_bytes()[:20])
    second = process()
    saved = [line for line in second.splitlines() if "[cache] data saved" in line]
    assert saved == [f"[cache] data saved to '{damaged}'"], second[-3000:]
    assert "[cache] data loaded" in second, second[-3000:]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == kept  # no new file


def test_the_cached_output_step_computes_what_shaps_own_does():
    """The platform's copy of shap's ``_build_fixed_single_output`` for the identity link: the
    same mean outputs, through masks where every row varies, some do, and none do (carried
    over from the previous mask), and the same last outputs left behind."""
    from shap.links import identity
    from shap.utils import _masked_model

    from mlops_assets.training.shap_kernels import _identity_single_output

    rng = np.random.default_rng(3)
    samples, masks = 6, 40
    varying = rng.random((masks, samples)) < 0.4
    varying[::7] = True  # every row
    varying[3::9] = False  # none: the mean is carried over
    counts = varying.sum(1)
    positions = np.concatenate([[0], np.cumsum(counts)])
    outputs = rng.normal(size=positions[-1])
    start = rng.normal(size=samples)
    results = []
    for kernel, link in ((_masked_model._build_fixed_single_output, (identity, None)),
                         (_identity_single_output, ())):  # fmt: skip
        averaged, last = np.zeros(masks), start.copy()
        kernel(averaged, last, outputs, positions, varying, counts, *link)
        results.append((averaged, last))
    (theirs, their_last), (ours, our_last) = results
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(our_last, their_last)
    assert len(np.unique(theirs)) < masks  # the carry-over branch ran


def test_the_identity_link_goes_to_the_cached_step_and_any_other_to_shaps_own(monkeypatch):
    """Through shap's permutation explainer: the identity link's output step is the cached
    copy, and the explanation is the one shap's own step gives; another link (logit) goes to
    shap's own step."""
    from shap.utils import _masked_model

    from mlops_assets.training import shap_kernels
    from mlops_assets.training.explain import load_shap

    shap = load_shap()
    x = np.random.default_rng(1).random((14, 4))
    masker = shap.maskers.Independent(x[:8], max_samples=8)

    def explain(link=shap.links.identity):
        model = lambda z: 1 / (1 + np.exp(-(z.sum(axis=1) - 2)))  # noqa: E731
        explainer = shap.PermutationExplainer(model, masker, link=link, seed=0)
        return explainer(x[8:], max_evals=9, silent=True).values

    calls = []
    cached = shap_kernels._identity_single_output
    monkeypatch.setattr(
        shap_kernels, "_identity_single_output", lambda *a: calls.append(1) or cached(*a)
    )
    ours = explain()
    assert calls, "the identity link did not reach the cached step"
    calls.clear()
    explain(shap.links.logit)
    assert not calls, "another link reached the identity step"
    monkeypatch.setattr(
        _masked_model, "_build_fixed_output", _masked_model._build_fixed_output.__wrapped__
    )
    np.testing.assert_allclose(ours, explain(), rtol=0, atol=1e-12)
