"""Drift reports for people: every day gets its pages, and data in them stays text."""

import re

import numpy as np
import pandas as pd

from mlops_assets.drift.engine import compare_profiles
from mlops_assets.drift.multivariate import domain_classifier
from mlops_assets.drift.profile import profile_frame
from mlops_assets.drift.report import _svg, markdown, to_html

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


def test_the_distribution_bars_sit_where_their_bins_are():
    """Each bin's pair of bars: the reference's at the start of its slot, the current's half a
    slot on, heights proportional to the shares (the tallest 86 of 90 pixels)."""
    bins, ref, cur = ["a", "<b>", "c"], [0.5, 0.25, 0.25], [0.2, 0.3, 0.5]
    svg = _svg(bins, ref, cur)
    slot = (360 - 4) / 3
    bar = slot / 2 - 0.5
    rects = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', svg)
    assert len(rects) == 6
    for i, share in enumerate(ref + cur):
        x, y, width, height = map(float, rects[2 * (i % 3) + i // 3])
        assert x == round(2 + (i % 3) * slot + (i // 3) * bar, 1)
        assert width == round(bar, 1)
        assert height == round(86 * share / 0.5, 1) and y == round(90 - 86 * share / 0.5, 1)
    assert "&lt;b&gt;: 25.00%" in svg and "<b>" not in svg
    assert _svg([], [], []).endswith('aria-label="distribution"></svg>')
