"""`mlops drift` on files and values a new user or an attacker brings: bytes that are not text,
numbers at the edge of floating point, columns with a hundred thousand categories. Each case
was a traceback, a silent wrong verdict or a memory blow-up before it was fixed."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_assets.drift.categorical_tests import permutation_p_value, total_variation
from mlops_assets.drift.engine import DriftInputError, DriftOptions, drift_files
from mlops_assets.drift.numerical_tests import mmd_p_value
from mlops_assets.drift.registry import REGISTRY
from mlops_assets.drift.report import to_html


def _files(tmp_path, reference: dict, current: dict):
    paths = tmp_path / "reference.parquet", tmp_path / "current.parquet"
    for path, columns in zip(paths, (reference, current), strict=True):
        pq.write_table(pa.table(columns), path)
    return paths


def _strict_json(report) -> dict:
    """The JSON report, parsed as strict JSON (no NaN or Infinity)."""

    def refuse(constant):
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(json.dumps(report.to_dict(plots=True)), parse_constant=refuse)


def test_binary_column_that_is_not_text_is_refused_without_its_bytes(tmp_path):
    """A binary Parquet column is categorical; bytes that are not UTF-8 made Arrow raise
    ArrowInvalid (a traceback). Now a refusal naming the column, quoting no value."""
    secret = b"\xffsecret-4242\xfe"
    ref, cur = _files(tmp_path, {"blob": pa.array([secret, b"a"] * 5)}, {"blob": [b"a"] * 10})
    with pytest.raises(DriftInputError, match="'blob' holds values that are not UTF-8") as error:
        drift_files(ref, cur)
    assert "secret" not in str(error.value) and "4242" not in str(error.value)


@pytest.mark.parametrize("stattest", [None, "ks", "hellinger", "psi", "jensenshannon", "kl_div"])
def test_values_near_the_largest_float_are_binned(tmp_path, stattest):
    """Values near +-1.7e308 span a range wider than the largest float: numpy's bin edges
    raised "Too many bins for data range" (for the Sturges bins and the report's plots)."""
    rng = np.random.default_rng(0)
    edge = [1.7e308, -1.7e308]
    ref, cur = _files(
        tmp_path,
        {"x": np.concatenate([edge, rng.normal(0, 1, 200)])},
        {"x": np.concatenate([edge, rng.normal(0, 1, 200)])},
    )
    report = drift_files(ref, cur, DriftOptions(stattest=stattest))
    (column,) = _strict_json(report)["columns"]
    assert column["score"] is not None and not column["drifted"]
    assert len(column["bins"]) == 30 and sum(column["reference_shares"]) == pytest.approx(1)
    assert "<svg" in to_html(report)


@pytest.mark.parametrize("exponent", [1000, -1000, -1060])
def test_empirical_mmd_does_not_depend_on_the_scale(exponent):
    """The RBF kernel's width is the median distance, so the p-value is scale-free. Values
    near 1e301 made the squared median distance overflow (OverflowError); near 1e-301 it
    underflowed to a width of 0 (ZeroDivisionError, reported as p = 1). Scaled by a power of
    two they give the p-value of the unscaled values."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, 60), rng.normal(0.8, 1, 50)
    expected = mmd_p_value(x, y)
    assert expected < 0.1  # drift: the verdict must survive the scaling
    with np.errstate(all="ignore"):  # subnormal values at -1060
        assert mmd_p_value(np.ldexp(x, exponent), np.ldexp(y, exponent)) == expected


def test_empirical_mmd_on_values_near_the_largest_float(tmp_path):
    rng = np.random.default_rng(1)
    edge = [1.7e308, -1.7e308]
    ref, cur = _files(
        tmp_path,
        {"x": np.concatenate([edge, rng.normal(0, 1, 100)])},
        {"x": np.concatenate([edge, rng.normal(3, 1, 100)])},
    )
    for strict in (False, True):
        report = drift_files(
            ref, cur, DriftOptions(stattest="empirical_mmd", strict_evidently=strict)
        )
        (column,) = _strict_json(report)["columns"]
        assert column["score"] == 0.0 and column["drifted"]  # was p = 1 (no drift) or an error


def test_a_score_that_is_not_a_number_says_why(tmp_path):
    """Numbers around 1e307 overflow the Wasserstein distance's sums: the score was NaN and
    the column silently "not drifted". It still has no score, but the report says why (strict
    mode reports Evidently's NaN as it does)."""
    rng = np.random.default_rng(2)
    ref, cur = _files(
        tmp_path, {"x": rng.normal(0, 1, 200) * 1e307}, {"x": rng.normal(5, 1, 200) * 1e307}
    )
    with np.errstate(all="ignore"):
        ours = _strict_json(drift_files(ref, cur, DriftOptions(stattest="wasserstein")))
        strict = DriftOptions(stattest="wasserstein", strict_evidently=True)
        evidently = _strict_json(drift_files(ref, cur, strict))
    assert ours["columns"][0]["score"] is None and ours["columns"][0]["note"].startswith("no score")
    assert evidently["columns"][0]["score"] is None and evidently["columns"][0]["note"] == ""


def test_tvd_on_many_categories_holds_a_block_of_draws_not_all(tmp_path):
    """TVD's 1000 permuted splits were held as one iterations x categories matrix, with four
    temporaries of its size: 6.4 GB peak for 100,000 distinct strings a side. Drawn a block at
    a time, the p-value is the same (the same draws in the same order)."""
    reference = np.ones(50_000, dtype=np.int64)
    current = np.zeros(50_000, dtype=np.int64)
    current[:25_000] = 2
    tracemalloc.start()
    try:
        p = permutation_p_value(reference, current, iterations=100, row_order=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64e6  # was about 200 MB for these 100 draws
    pooled = reference + current
    drawn = np.random.default_rng(0).multivariate_hypergeometric(pooled, 50_000, 100)
    observed = total_variation(reference, current)
    assert p == np.mean(observed <= total_variation(drawn, pooled - drawn))
    assert not math.isnan(p)


@pytest.mark.parametrize("stattest", [None, "wasserstein", "t_test"])
def test_a_column_empty_on_both_sides_has_not_drifted(tmp_path, stattest):
    """Two files whose column holds no value (a header-only CSV, an all-missing column) were
    "DATASET DRIFT", every column drifted: nothing changed. One empty side still drifts."""
    empty = pa.array([None, None, math.nan], pa.float64())
    ref, cur = _files(tmp_path, {"x": empty, "y": [1.0, 2, 3]}, {"x": empty, "y": empty})
    report = drift_files(ref, cur, DriftOptions(stattest=stattest))
    columns = {c["column"]: c for c in _strict_json(report)["columns"]}
    assert not columns["x"]["drifted"] and columns["x"]["note"] == "no values on either side"
    assert columns["x"]["score"] == (1.0 if REGISTRY[columns["x"]["test"]].p_value else 0.0)
    assert columns["y"]["drifted"] and columns["y"]["note"] == "no values in the current data"


def test_an_infinite_distance_is_null_in_the_json_and_drifted(tmp_path):
    """A current window around 1e306 against a reference around 1: the Wasserstein distance
    overflows to infinity, which json.dumps wrote as Infinity (not JSON) and, with a constant
    reference, the pooled spread raised OverflowError. Now: null, drifted, and a note."""
    rng = np.random.default_rng(4)
    ref, cur = _files(
        tmp_path,
        {"x": rng.normal(0, 1, 300), "c": np.ones(300)},
        {"x": rng.normal(0, 1, 200) * 1e306, "c": rng.normal(0, 1, 200) * 1e306},
    )
    with np.errstate(all="ignore"):
        report = drift_files(ref, cur, DriftOptions(stattest="wasserstein"))
    columns = {c["column"]: c for c in _strict_json(report)["columns"]}
    assert columns["x"]["score"] is None and columns["x"]["drifted"]
    assert columns["x"]["note"] == "the score is infinite (overflowed)"
    assert columns["c"]["score"] is None  # its pooled spread is infinite too: no score


def test_the_cli_prints_a_drifted_column_without_a_finite_score(tmp_path):
    from typer.testing import CliRunner

    from mlops_assets.cli.drift import app

    rng = np.random.default_rng(5)
    ref, cur = _files(tmp_path, {"x": rng.normal(0, 1, 300)}, {"x": rng.normal(0, 1, 200) * 1e306})
    result = CliRunner().invoke(app, [str(ref), str(cur), "--stattest", "wasserstein"])
    assert result.exit_code == 0, result.output
    assert "x: wasserstein n/a" in result.output


@pytest.mark.parametrize(
    "as_type",
    [lambda a: a.dictionary_encode(), lambda a: a.cast(pa.string_view())],
    ids=["dictionary (a pandas category column)", "string_view"],
)
def test_a_text_column_stored_as_dictionary_or_string_view(tmp_path, as_type):
    """A pandas category column is a dictionary in Parquet, and Arrow may write string views:
    --text-column refused both ("is not a text column: its type is dictionary<...>")."""
    rng = np.random.default_rng(6)
    words = np.array(["apple", "pear", "plum", "fig", "kiwi", "lime", "grape", "melon"])
    texts = [pa.array([" ".join(rng.choice(words[lo : lo + 6], 5)) for _ in range(300)])
             for lo in (0, 2)]  # fmt: skip
    ref, cur = _files(tmp_path, {"t": as_type(texts[0])}, {"t": as_type(texts[1])})
    options = DriftOptions(stattest="abs_text_content_drift", text_columns=("t",))
    (column,) = drift_files(ref, cur, options).columns
    plain = tmp_path / "plain"
    plain.mkdir()
    expected = drift_files(*_files(plain, {"t": texts[0]}, {"t": texts[1]}), options).columns[0]
    assert column.kind == "text" and column.drifted and column.score == expected.score
