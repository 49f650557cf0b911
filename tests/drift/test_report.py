"""Drift reports for people: every day gets its pages, and data in them stays text."""

import numpy as np
import pandas as pd

from mlops_assets.drift.engine import compare_profiles
from mlops_assets.drift.multivariate import domain_classifier
from mlops_assets.drift.profile import profile_frame
from mlops_assets.drift.report import markdown, to_html

HOSTILE = "<script>alert(1)</script>[/x]![a](http://x)"


def _report(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict):
    report = compare_profiles(
        profile_frame(reference, kinds), profile_frame(current, kinds, exact=True)
    )
    report.multivariate = domain_classifier(reference, current)
    return report


def test_a_day_too_small_for_the_domain_classifier_gets_its_reports():
    """A day of three applications: the classifier gives no verdict, and the HTML and markdown
    reports say so (they formatted its missing AUC and failed the daily drift report)."""
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"amount": rng.normal(size=200)})
    report = _report(reference, reference.head(3), {"amount": "numerical"})
    assert report.multivariate["score"] is None
    assert "no verdict: too few rows (3)" in to_html(report)
    assert "gives no verdict: too few rows (3)" in markdown(report)


def test_the_html_report_shows_names_and_values_as_text():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({HOSTILE: rng.choice([HOSTILE, "<img src=http://x>"], 300)})
    page = to_html(_report(frame, frame.head(100), {HOSTILE: "categorical"}), HOSTILE)
    assert "<script" not in page and "<img" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;[/x]![a](http://x)") >= 3
