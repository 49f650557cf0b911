"""The model card: built from a version's model.json and gate verdict, every section present,
every value shown as text, nothing personal in it."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_assets import catalogue
from mlops_assets.markdown import md_plain
from mlops_assets.security.scan import IDENTIFIER_PATTERNS
from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.model_card import (
    NOT_RECORDED,
    label_delay,
    recorded_robustness,
    sections,
    summary,
    title,
    to_html,
    to_markdown,
    write_card,
)
from mlops_assets.training.trainer import TrainingConfig, train_model
from tests.training.conftest import home_registry, skip_robustness_and_shap

# The classifier's declaration with its two quickest candidates: a card's sections do not
# depend on which candidates were searched, and a training takes 0.3 s instead of 4.7.
CLASSIFIER = replace(
    catalogue.model("default_classifier"), candidates=("logistic_l1", "logistic_l2")
)
FAST = TrainingConfig(folds=2, bootstrap_rounds=20)
SECTIONS = (
    "Intended use", "Training data", "Features and protected attributes",
    "Candidate search and the winner", "Metrics on the holdout", "Fairness by group",
    "Robustness", "SHAP summary", "Gate decision", "Lineage", "Known limitations",
)  # fmt: skip
# The only HTML the page is made of: a value never adds a tag.
TAGS = {"html", "head", "meta", "title", "style", "body", "main", "section", "h1", "h2", "h3",
        "table", "tr", "th", "td", "ul", "li", "p", "figure", "img"}  # fmt: skip


@pytest.fixture(scope="module")
def versions(features_con, tmp_path_factory):
    """A champion and a challenger gated against it (with a paired test), on small data. The
    cards read are the challenger's: the champion's robustness and SHAP values (which the gate
    does not read) are not measured."""
    registry = home_registry(tmp_path_factory.mktemp("home"))
    data = load_training_data(features_con, CLASSIFIER)
    with pytest.MonkeyPatch.context() as patched:
        skip_robustness_and_shap(patched, data.spec.columns)
        first = train_model(data, registry, FAST)
    assert first.decision.promoted
    second = train_model(data, registry, TrainingConfig(folds=2, bootstrap_rounds=20, seed=1))
    return registry, data, first, second


def _card(registry, version: str) -> tuple[dict, dict | None]:
    return (
        registry.verified_card("default_classifier", version).data,
        registry.verdict("default_classifier", version),
    )


def test_the_card_of_a_trained_version_has_every_section(versions, tmp_path):
    registry, _, _, second = versions
    card, verdict = _card(registry, second.card.version)
    page = write_card(tmp_path, card, verdict, primary="roc_auc")
    markdown, html = (tmp_path / "card.md").read_text(), page.read_text()
    for name in SECTIONS:
        assert f"## {name}" in markdown and f"<h2>{name}</h2>" in html
    # Intended use and limitations, from the component's YAML, recorded by training.
    assert card["card"]["intended_use"] == CLASSIFIER.card.intended_use
    assert CLASSIFIER.card.limitations[0] in html
    # Every trial of the search, the winner marked; the protected attributes and their use.
    assert len(card["search"]) == len(second.search.trials)
    assert html.count(">winner<") == 1
    for attribute in CLASSIFIER.measured_only:
        assert f"<td>{attribute}</td><td></td><td>protected attribute: measured" in html
    # Metrics with intervals, robustness, the gate's paired test and its p-value, lineage.
    low, high = card["metric_intervals"]["roc_auc"]
    assert f"[{low:.4f}, {high:.4f}]" in html
    assert set(recorded_robustness(card)) == {
        "noise_10pct_std", "missing_30pct", "extreme_x1000", "negative", "unseen_categories"
    }  # fmt: skip
    assert verdict["test"] is not None
    assert f"<th>p-value</th><td>{verdict['test']['p_value']:.3g}</td>" in html
    assert card["code_version"] in html and card["seal"]["key"] in html
    assert "scikit-learn" in html


def test_the_card_holds_no_identifier_shaped_value(versions, tmp_path):
    registry, _, _, second = versions
    write_card(tmp_path, *_card(registry, second.card.version), primary="roc_auc")
    for name in ("card.md", "card.html"):
        text = (tmp_path / name).read_text()
        for kind, pattern in IDENTIFIER_PATTERNS.items():
            assert not re.search(pattern, text), (name, kind)


FAIRNESS = {  # the format of plan issue 20 (training/fairness.py)
    "threshold": 0.24,
    "rounds": 200,
    "attributes": {
        "age_band": {
            "groups": {
                "18-24": {"count": 812, "selection_rate": 0.21,
                          "selection_rate_ci": [0.18, 0.24], "roc_auc": 0.77},
                "missing": {"count": 12, "selection_rate": 0.5},
            },
            "disparate_impact_ratio": 0.71,
            "disparate_impact_ratio_ci": [0.6, 0.8],
            "four_fifths_rule": False,
        }
    },
    "violations": ["age_band: disparate-impact ratio 0.71 < 0.8"],
}  # fmt: skip
EXPLANATION = {
    "method": "linear",
    "scale": "log-odds",
    "expected_value": -1.2,
    "rows": 500,
    "mean_abs_shap": {"bureau_score": 0.41, "loan_to_income": 0.2},
}


def test_fairness_shap_and_the_gate_render_from_the_agreed_formats():
    card = {"model": "m", "version": "0123456789abcdef", "fairness": FAIRNESS,
            "explanation": EXPLANATION}  # fmt: skip
    verdict = {
        "promoted": False,
        "reason": "fairness worse",
        "test": {"metric": "roc_auc", "method": "delong", "difference": 0.01,
                 "ci": [-0.01, 0.03], "p_value": 0.21, "level": 0.95},
        "fairness": {"worse": ["age_band: disparate-impact ratio 0.71 vs 0.85"]},
    }  # fmt: skip
    html = to_html(title(card), sections(card, verdict))
    assert "<h3>age_band</h3>" in html
    assert "<tr><td>18-24</td><td>812</td><td>0.2100 [0.1800, 0.2400]</td><td>0.7700</td>" in html
    assert "<tr><td>missing</td><td>12</td><td>0.5000</td><td>not recorded</td>" in html
    assert "<td>disparate_impact_ratio</td><td>0.7100 [0.6000, 0.8000]</td>" in html
    assert "<td>four_fifths_rule</td><td>no</td>" in html
    assert "<li>age_band: disparate-impact ratio 0.71 &lt; 0.8</li>" in html
    assert "<tr><td>bureau_score</td><td>0.4100</td></tr>" in html
    assert "<th>p-value</th><td>0.21</td>" in html
    assert "<li>age_band: disparate-impact ratio 0.71 vs 0.85</li>" in html
    shown = dict(summary(card, verdict, primary="roc_auc", champion=False))
    assert shown["fairness"] == "1 bound(s) broken: age_band: disparate-impact ratio 0.71 < 0.8"
    assert shown["gate decision"] == "not promoted: fairness worse"
    assert shown["p-value"] == "0.21 (delong test of roc_auc)"
    assert shown["champion"] == "no"
    unmeasured = to_html(title({}), sections({}, None))
    assert "<h2>Fairness by group</h2>\n<p>not measured</p>" in unmeasured
    assert "<p>not decided yet (no gate verdict)</p>" in unmeasured


HOSTILE = (
    "<script>alert(1)</script> <img src=x onerror=alert(2)> [link](http://evil.example/a) "
    '![i](http://evil.example/i.png) | cell | `code` **bold** # "quote" \x1b[2J\x1b]8;;x\x07 '
    "\u202eevil\r\nnext\tline &amp;"
)


def _hostile_card(real: dict) -> dict:
    """``real`` with hostile text in every text field and odd types everywhere else."""
    card = json.loads(json.dumps(real))
    card.update(
        model=HOSTILE, version=HOSTILE, table=HOSTILE, candidate=HOSTILE, created_at=HOSTILE,
        params={HOSTILE: [HOSTILE, {"x": None}]}, cv_score="high", train_score=None,
        metrics={HOSTILE: HOSTILE, "roc_auc": [1, 2]}, metric_intervals={"roc_auc": "[0, 1]"},
        rows=[1, 2], validation=HOSTILE, split_at=7, applied_until={"a": 1},
        signature={"features": [HOSTILE, 3, None], "dtypes": [],
                   "protected": {"measured_only": HOSTILE, "used_as_input": [HOSTILE, {}],
                                 "justification": HOSTILE}},
        search=[HOSTILE, {"candidate": HOSTILE, "params": HOSTILE, "cv_score": "x"}],
        fairness={"attributes": {HOSTILE: {"groups": {HOSTILE: {HOSTILE: HOSTILE,
                  f"{HOSTILE}_ci": [HOSTILE, 1]}}, "x": [1, 2, 3]}, "y": HOSTILE},
                  "violations": [HOSTILE, 5]},
        robustness={HOSTILE: {"finite": HOSTILE}}, explanation={"mean_abs_shap": [HOSTILE]},
        libraries={HOSTILE: HOSTILE}, seal=HOSTILE,
        card={"intended_use": HOSTILE, "limitations": [HOSTILE, {HOSTILE: 1}]},
    )  # fmt: skip
    return card


def test_hostile_model_json_values_are_shown_as_text(versions, tmp_path):
    registry, _, _, second = versions
    card, verdict = _card(registry, second.card.version)
    card = _hostile_card(card)
    verdict = {"promoted": HOSTILE, "reason": HOSTILE, "at": 5, "test": {"ci": HOSTILE,
               "p_value": HOSTILE, "method": HOSTILE}, "fairness": {"worse": HOSTILE}}  # fmt: skip
    (tmp_path / "plot.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "x'onerror=alert(1).png").write_bytes(b"")  # a name no plot has: not embedded
    page = write_card(tmp_path, card, verdict, primary="roc_auc")
    html, markdown = page.read_text(), (tmp_path / "card.md").read_text()
    for text in (html, markdown):
        assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
        assert "\\x1b" in text and "\\u202e" in text
    assert set(re.findall(r"<\s*/?\s*([A-Za-z0-9]+)", html)) <= TAGS | {"DOCTYPE"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "evil.example" not in "".join(re.findall(r"<[^>]*>", html))  # never in a tag
    assert "onerror" not in "".join(re.findall(r"<[^>]*>", html))
    assert html.count("<img ") == 1 and 'alt="plot"' in html
    assert "\\[link\\]\\(http://evil.example/a\\)" in markdown
    assert "!\\[i\\]" in markdown and "](http" not in markdown
    assert not re.search(r"(?<!\\)<", markdown) and "\\<script\\>" in markdown
    # A line break in a value is shown, it does not end its table row or paragraph.
    assert "\\r\\nnext" in md_plain(markdown) and "\\r\\nnext" in html
    assert not any(line.startswith("next") for line in (*markdown.splitlines(), *html.splitlines()))
    assert recorded_robustness(card) is None
    shown = summary(card, verdict, primary="roc_auc", champion=True)
    assert dict(shown)["gate decision"] == HOSTILE  # shown as data; the CLI escapes it


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
FIELDS = ("card", "search", "fairness", "robustness", "explanation", "signature", "metrics",
          "metric_intervals", "rows", "libraries", "seal", "params", "applied_until",
          "created_at", "threshold")  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), JSON), JSON)
def test_any_json_in_model_json_or_gate_json_renders(card, verdict):
    parts = sections(card, verdict if isinstance(verdict, dict) else None, primary="roc_auc")
    assert to_markdown(title(card), parts) and to_html(title(card), parts)
    assert len(summary(card, verdict, primary="roc_auc")) == 9


def test_the_label_delay_is_derived_from_the_newest_labelled_row_and_the_training_time():
    card = {"applied_until": "2025-03-01 00:00:00", "created_at": "2025-03-11T12:00:00+00:00"}
    assert label_delay(card).startswith("10.5 days from the newest labelled row")
    assert label_delay({"applied_until": "yesterday", "created_at": None}) == NOT_RECORDED


def test_only_robustness_of_the_recorded_shape_is_used():
    good = {"noise": {"finite": True, "in_range": False, "mean_abs_change": 0.1}}
    assert recorded_robustness({"robustness": good}) == good
    for odd in (None, {}, [], {"noise": {"finite": "yes", "in_range": True,
                                         "mean_abs_change": 0.1}}):  # fmt: skip
        assert recorded_robustness({"robustness": odd}) is None


def test_the_robustness_check_computes_an_older_versions_scenarios_on_its_own_inputs(
    tmp_path, monkeypatch
):
    """A version registered before training recorded robustness, which took an attribute as
    input that is protected since (the demo's first champion took age band): the check
    computes its scenarios on the rows as its own signature takes them (it failed with
    'columns are missing' when it used today's signature)."""
    from dataclasses import replace

    from mlops_assets.resources import WarehouseResource
    from mlops_assets.training import trainer
    from mlops_assets.training.assets import robustness_report
    from tests.training.conftest import feature_warehouse

    database = tmp_path / "warehouse.duckdb"
    con = feature_warehouse(database=str(database))
    older = replace(
        CLASSIFIER,
        features=(*CLASSIFIER.features, "age_band"),
        use_protected=("age_band",),
        use_protected_justification="x",
    )
    data = load_training_data(con, older)
    con.close()
    registry = home_registry(tmp_path)
    monkeypatch.setattr(trainer, "robustness", lambda *args, **kwargs: {})  # not recorded
    version = train_model(data, registry, FAST).card.version
    assert "age_band" in registry.card(CLASSIFIER.name, version).data["signature"]["features"]

    warehouse = WarehouseResource(path=str(database))
    report, measured = robustness_report(registry, CLASSIFIER, warehouse, version)
    assert measured == "now (model.json records none)"
    assert len(report) == 5 and all(r["finite"] and r["in_range"] for r in report.values())
