"""Text-column drift against Evidently 0.7.23 (``abs_text_content_drift``,
``perc_text_content_drift``).

Evidently's only numeric text-drift test needs 20newsgroups (a download), so the expected values
here come from deterministic cases run on Evidently 0.7.23 (sklearn 1.9.1) with the script
/tmp/ev_research/text_cases.py (issue 21 research, section 2.5), whose generator ``docs`` is
copied below. The policy cases (no words left, too few texts) were run on the same Evidently.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_assets.drift.engine import DriftInputError, DriftOptions, compare_columns, drift_files
from mlops_assets.drift.files import as_parquet
from mlops_assets.drift.profile import profile_column
from mlops_assets.drift.registry import lookup
from mlops_assets.drift.report import markdown, to_html
from mlops_assets.drift.text_drift import (
    random_classifier_limit,
    roc_auc_random_classifier_percentile,
)

FRUIT = [f"fruit{i}" for i in range(100)]
TOOLS = [f"tool{i}" for i in range(100)]
TEXT_TESTS = ("abs_text_content_drift", "perc_text_content_drift")


def docs(n: int, share_tools: float, rng: np.random.RandomState) -> list[str]:
    """/tmp/ev_research/text_cases.py's generator: 5 to 11 words, each a tool word with
    probability ``share_tools``, else a fruit word."""
    out = []
    for _ in range(n):
        k = rng.randint(5, 12)
        words = [(TOOLS if rng.rand() < share_tools else FRUIT)[rng.randint(100)] for _ in range(k)]
        out.append(" ".join(words))
    return out


def case(n_ref: int, n_cur: int, share_tools: float) -> tuple[list[str], list[str]]:
    rng = np.random.RandomState(0)  # the reference first, then the current, from one stream
    return docs(n_ref, 0.0, rng), docs(n_cur, share_tools, rng)


def texts(name: str, values: list[str | None]):
    return profile_column(name, "text", pa.array(values, pa.string()), exact=True)


def compare(reference, current, **options):
    return compare_columns(texts("t", reference), texts("t", current), DriftOptions(**options))


# n_ref, n_cur, current's share of tool words, Evidently's ROC AUC (both tests), drift, default
CASES = [
    (200, 200, 0.0, 0.48120791880, False, "perc_text_content_drift"),
    (200, 200, 0.3, 0.67731886243, True, "perc_text_content_drift"),
    (1500, 500, 0.0, 0.52341116773, False, "abs_text_content_drift"),
    (1500, 500, 0.1, 0.71758972649, True, "abs_text_content_drift"),
]


@pytest.mark.parametrize(("n_ref", "n_cur", "share", "auc", "drift", "default"), CASES)
def test_evidently_text_cases(n_ref, n_cur, share, auc, drift, default):
    """Evidently 0.7.23, /tmp/ev_research/text_cases.py (research 2.5): the same AUC and verdict
    by both tests, and the same automatic choice (abs above 1000 reference rows)."""
    reference, current = case(n_ref, n_cur, share)
    for name in TEXT_TESTS:
        result = compare(reference, current, text_stattest=name)
        assert result.score == pytest.approx(auc, rel=1e-3, abs=1e-4)
        assert result.drifted is drift
        assert result.threshold == lookup(name).default_threshold
    assert compare(reference, current).test == default


def test_random_classifier_percentile_is_evidentlys():
    """evidently roc_auc_random_classifier_percentile(y=[0]*100+[1]*100, p_value=0.05), and the
    perc test's bound on the splits of the cases above (Evidently 0.7.23: the 95th percentile of
    1000 random classifiers on y_test of train_test_split(random_state=42))."""
    y = np.array([0] * 100 + [1] * 100)
    assert roc_auc_random_classifier_percentile(y, p_value=0.05) == pytest.approx(0.568275)
    for (n_ref, n_cur), expected in {(200, 200): 0.5701085318, (1500, 500): 0.5334050299}.items():
        reference, current = case(n_ref, n_cur, 0.0)
        limit, note = lookup("perc_text_content_drift").limit(_pair(reference, current), 0.95)
        assert limit == pytest.approx(expected, rel=1e-9)
        assert f"{expected:.4f}" in note and "95th percentile" in note


def test_rank_sums_give_sklearns_auc_with_and_without_ties():
    """The percentile's AUCs come from rank sums: sklearn's roc_auc_score (trapezoids, so ties
    count a half) on the same draws, the tie-free sort path and scipy's average ranks alike."""
    from sklearn.metrics import roc_auc_score

    from mlops_assets.drift.text_drift import _positive_rank_sums

    y = np.array([1, 0, 1, 0, 0, 1, 0])
    positive, n1, n0 = y == 1, 3, 4
    tied = np.array([[0.1, 0.1, 0.2, 0.3, 0.3, 0.3, 0.0], [0.5, 0.2, 0.2, 0.2, 0.9, 0.1, 0.5]])
    for draws in (np.random.RandomState(0).rand(5, 7), tied):
        aucs = (_positive_rank_sums(draws, positive) - n1 * (n1 + 1) / 2) / (n0 * n1)
        assert aucs == pytest.approx([roc_auc_score(y, row) for row in draws], abs=1e-12)


def _pair(reference, current):
    from mlops_assets.drift.stattests import Pair

    return Pair(texts("t", reference), texts("t", current))


def test_perc_verdict_uses_the_percentile_not_the_threshold():
    """perc reports the AUC against the threshold 0.95, but drifts when the AUC is above the
    95th percentile of random AUCs (0.5701 here): the note shows the bound the verdict used."""
    result = compare(*case(200, 200, 0.3), text_stattest="perc_text_content_drift")
    assert result.score < result.threshold and result.drifted
    assert "drift when ROC AUC > 0.5701" in result.note
    assert random_classifier_limit(_pair(*case(200, 200, 0.0)), 0.5)[0] == pytest.approx(0.5)


def test_perc_threshold_above_one_is_refused():
    with pytest.raises(DriftInputError, match="between 0 and 1"):
        compare(*case(200, 200, 0.3), text_stattest="perc_text_content_drift", text_threshold=2.0)


@pytest.mark.parametrize("name", TEXT_TESTS)
@pytest.mark.parametrize("kind", ["numerical", "categorical"])
def test_text_test_refused_on_other_kinds(name, kind):
    """Evidently refuses a stattest by name on a column type it does not allow
    (evidently tests/stattests/test_registry.py::test_get_stattest_invalid_type)."""
    with pytest.raises(DriftInputError, match=f"{name} does not apply to column 'x'"):
        lookup(name, kind, "x")
    column = profile_column("x", kind, pa.array([1.0, 2.0, 3.0] if kind == "numerical" else "abc"))
    with pytest.raises(DriftInputError, match="does not apply"):
        compare_columns(column, column, DriftOptions(per_column_stattest={"x": name}))


def test_categorical_test_refused_on_a_text_column():
    refused = "chisquare does not apply to column 't', which is text"
    with pytest.raises(DriftInputError, match=refused):
        compare(["a b"], ["c d"], per_column_stattest={"t": "chisquare"})
    with pytest.raises(DriftInputError, match="does not apply to a text column"):
        DriftOptions(text_stattest="ks")


# Evidently 0.7.23 raises sklearn's ValueError (the first three) or returns NaN (the last).
POLICY = [
    (["the and of"] * 20, ["we are here"] * 20, "empty vocabulary", "no words to learn from"),
    (["apple banana"] * 30, ["apple banana"] * 30, "After pruning, no terms remain", "no words"),
    (["apple pie", "banana split"], ["cherry cake", "grape juice", "lemon tart", "melon slice"],
     "number of classes has to be greater than one", "training half holds texts of one side"),
]  # fmt: skip


@pytest.mark.parametrize(("reference", "current", "evidently", "note"), POLICY)
def test_column_that_cannot_be_scored_is_not_compared(reference, current, evidently, note):
    """Where Evidently raises (and loses the whole report), the column is reported with no
    score, as not drifted, and a note; strict mode raises Evidently's (sklearn's) error."""
    for name in TEXT_TESTS:
        result = compare(reference, current, text_stattest=name)
        assert np.isnan(result.score) and not result.drifted
        assert result.note.startswith("not compared: ") and note in result.note
        with pytest.raises(DriftInputError, match=evidently):
            compare(reference, current, text_stattest=name, strict_evidently=True)


def test_one_sided_test_half_is_not_compared_and_strict_gives_evidentlys_nan():
    """1 reference and 3 current texts: the test half holds current texts only; Evidently 0.7.23
    gives AUC NaN, no drift (sklearn's undefined AUC)."""
    reference, current = ["apple pie"], ["cherry cake", "grape juice", "lemon tart"]
    for name in TEXT_TESTS:
        result = compare(reference, current, text_stattest=name)
        assert np.isnan(result.score) and not result.drifted and "one side only" in result.note
        strict = compare(reference, current, text_stattest=name, strict_evidently=True)
        assert np.isnan(strict.score) and not strict.drifted and strict.note == ""


HOSTILE = "<script>alert(1)</script>\x00\x1b[31m\u202e" + "x" * 200_000


@pytest.fixture
def text_files(tmp_path):
    """A reference and a drifted current file, as Parquet and CSV, with a text column (one
    missing and one hostile text) and a number column."""
    reference, current = case(200, 200, 0.3)
    reference[1], current[0] = None, HOSTILE
    for side, values in (("ref", reference), ("cur", current)):
        table = pa.table({"review": pa.array(values, pa.string()), "n": np.arange(200)})
        pq.write_table(table, tmp_path / f"{side}.parquet")
        table.to_pandas().to_csv(tmp_path / f"{side}.csv", index=False)
    return tmp_path


def _check_text_row(report, plots=False):
    data = report.to_dict(plots=plots)
    json.dumps(data, allow_nan=False)  # valid JSON
    row = next(c for c in data["columns"] if c["column"] == "review")
    assert (row["kind"], row["test"], row["threshold"]) == ("text", "perc_text_content_drift", 0.95)
    assert row["drifted"] and 0.55 < row["score"] < 1
    assert row["note"].startswith("drift when ROC AUC > ")
    assert (row["reference_rows"], row["current_rows"]) == (199, 200)
    assert row["reference_missing_share"] == pytest.approx(1 / 200)
    return row


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_text_column_of_a_file_in_the_json_and_html_report(text_files, suffix):
    """`mlops drift --text-column review` on Parquet and on CSV (converted by DuckDB): the text
    column is in the JSON report with its test, AUC, verdict and the note with the bound;
    hostile text breaks neither the report nor the HTML page, and no text appears in them."""
    options = DriftOptions(text_columns=("review",))
    with as_parquet(text_files / f"ref.{suffix}", text_files / f"cur.{suffix}") as (ref, cur):
        report = drift_files(ref, cur, options)
    row = _check_text_row(report, plots=True)
    assert row["bins"] == []  # no distribution plot for text
    page, summary = to_html(report), markdown(report)
    assert "review" in page and "perc_text_content_drift" in page and "review" in summary
    assert "alert(1)" not in page and "fruit" not in page
    assert [c.kind for c in report.columns if c.column == "n"] == ["numerical"]


def test_csv_that_is_not_utf8_is_refused_without_quoting_it(tmp_path):
    """DuckDB's error quotes a row of the file ("Original Line: ..."): the message says what is
    wrong and where, not what the row holds."""
    rows = "".join(f"apple{i % 7} secret{i},{i}\n" for i in range(50))
    (tmp_path / "ref.csv").write_text("review,n\n" + rows)
    (tmp_path / "cur.csv").write_bytes(f"review,n\n{rows}".encode() + b"caf\xe9 secret,51\n")
    with (
        pytest.raises(DriftInputError) as error,
        as_parquet(tmp_path / "ref.csv", tmp_path / "cur.csv") as (ref, cur),
    ):
        drift_files(ref, cur, DriftOptions(text_columns=("review",)))
    assert "not UTF-8" in str(error.value) and "secret" not in str(error.value)


def test_parquet_text_that_is_not_utf8_is_refused_without_quoting_it(tmp_path):
    """A Parquet string column may hold any bytes; Arrow's conversion error quotes them."""
    good = [f"apple{i % 7} banana word{i}" for i in range(60)]
    raw = [t.encode() for t in good[:-1]] + [b"caf\xe9 secret \xff"]
    pq.write_table(pa.table({"t": good}), tmp_path / "ref.parquet")
    pq.write_table(pa.table({"t": pa.array(raw, pa.binary()).view(pa.string())}), tmp_path / "c.pq")
    with pytest.raises(DriftInputError, match="column 't' holds text that is not valid UTF-8") as e:
        drift_files(tmp_path / "ref.parquet", tmp_path / "c.pq", DriftOptions(text_columns=("t",)))
    assert "secret" not in str(e.value)


def test_uncomparable_text_column_gives_valid_json_and_html(tmp_path):
    """A text column with no word left is reported as not compared: null score in the JSON,
    n/a on the page, the reason in the note."""
    for side, values in (("ref", ["the and of"] * 20), ("cur", ["we are here"] * 20)):
        pq.write_table(pa.table({"t": values}), tmp_path / f"{side}.parquet")
    report = drift_files(
        tmp_path / "ref.parquet", tmp_path / "cur.parquet", DriftOptions(text_columns=("t",))
    )
    (row,) = json.loads(json.dumps(report.to_dict(), allow_nan=False))["columns"]
    assert row["score"] is None and row["drifted"] is False and "not compared" in row["note"]
    assert "n/a" in to_html(report) and not report.dataset_drift
