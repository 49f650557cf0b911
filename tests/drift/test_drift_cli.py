"""`mlops drift` on files: the JSON contract, exit codes, CSV and Parquet, reports, errors. The
command runs in the test's process (typer's runner); tests/cli/test_startup.py runs it as a
process (what a drift run imports)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlops_assets.cli import app

KEYS = {"column", "kind", "test", "score", "threshold", "drifted"}


def _frame(rows: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.lognormal(10 - shift, 0.5, rows),
            "age": rng.integers(18, 80, rows),
            "term": rng.choice([36, 60], rows),
            "purpose": rng.choice(["car", "home", "debt"] + ["solar"] * int(shift > 0), rows),
            "channel": rng.choice(["web", "branch", "phone"], rows),
            "applied_at": pd.Timestamp("2025-01-01") + pd.to_timedelta(np.arange(rows), "min"),
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    ref, same, moved = _frame(3000, 1, 0), _frame(2000, 2, 0), _frame(2000, 3, 0.5)
    ref.to_parquet(root / "ref.parquet", index=False)
    same.to_parquet(root / "same.parquet", index=False)
    moved.to_csv(root / "moved.csv", index=False)
    moved[["income", "age"]].to_parquet(root / "narrow.parquet", index=False)
    return root


def _drift(*args, check_code=None) -> subprocess.CompletedProcess:
    """`mlops drift *args` in this process (typer's runner): its exit code, stdout and stderr.
    A refusal is a message, never a traceback (an uncaught error fails the test)."""
    # Wide enough that no message is wrapped (a path broken across lines is not found).
    result = CliRunner().invoke(app, ["drift", *map(str, args)], env={"COLUMNS": "400"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"mlops drift {args} raised") from result.exception
    if check_code is not None:
        assert result.exit_code == check_code, result.stdout + result.stderr[-2000:]
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_json_report_follows_the_contract_and_exit_is_0_either_way(files, tmp_path):
    out = tmp_path / "r.json"
    _drift(files / "ref.parquet", files / "moved.csv", "--json", out, check_code=0)
    report = json.loads(out.read_text())
    assert {"dataset_drift", "drift_share", "share_drifted_columns", "n_drifted_columns",
            "n_columns", "columns"} <= set(report)  # fmt: skip
    assert report["n_columns"] == 5  # applied_at is a time column: skipped
    assert report["skipped_columns"] == ["applied_at"]
    for column in report["columns"]:
        assert set(column) >= KEYS
        assert np.isfinite(column["score"])
    by_name = {c["column"]: c for c in report["columns"]}
    assert by_name["income"]["kind"] == "numerical" and by_name["income"]["drifted"]
    assert by_name["purpose"]["kind"] == "categorical" and by_name["purpose"]["drifted"]
    assert not by_name["channel"]["drifted"]
    assert report["n_drifted_columns"] == sum(c["drifted"] for c in report["columns"])
    assert report["share_drifted_columns"] == pytest.approx(report["n_drifted_columns"] / 5)
    _drift(files / "ref.parquet", files / "same.parquet", "--json", out, check_code=0)
    assert not json.loads(out.read_text())["dataset_drift"]


def test_fail_on_drift_exits_1_only_on_dataset_drift(files):
    _drift(files / "ref.parquet", files / "moved.csv", "--drift-share", "0.3", "--fail-on-drift",
           check_code=1)  # fmt: skip
    _drift(files / "ref.parquet", files / "same.parquet", "--fail-on-drift", check_code=0)


def test_stattest_threshold_and_per_column_options(files):
    options = ["--stattest", "psi", "--column-stattest", "income=ks", "--threshold", "0.2"]
    result = _drift(files / "ref.parquet", files / "moved.csv", "--json", "-", *options,
                    check_code=0)  # fmt: skip
    columns = {c["column"]: c for c in json.loads(result.stdout)["columns"]}
    assert columns["income"]["test"] == "ks" and columns["channel"]["test"] == "psi"
    assert {c["threshold"] for c in columns.values()} == {0.2}


def test_html_report_is_self_contained_and_small(files, tmp_path):
    out = tmp_path / "r.html"
    _drift(files / "ref.parquet", files / "moved.csv", "--html", out, check_code=0)
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert page.count("<svg") == 5 and "income" in page
    assert out.stat().st_size < 200_000


def test_unusable_inputs_exit_2_naming_the_problem(files, tmp_path):
    result = _drift(files / "ref.parquet", files / "narrow.parquet", check_code=2)
    assert "columns missing from one of the files" in result.stderr
    assert "purpose" in result.stderr
    result = _drift(files / "ref.parquet", tmp_path / "nope.csv", check_code=2)
    assert "no such file" in result.stderr
    result = _drift(files / "ref.parquet", files / "same.parquet", "--stattest", "magic",
                    check_code=2)  # fmt: skip
    assert "unknown stattest 'magic'" in result.stderr
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\xff\xfe garbage")
    assert _drift(files / "ref.parquet", bad).returncode == 2
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    result = _drift(files / "ref.parquet", broken, check_code=2)
    assert f"{broken}: cannot read as Parquet" in result.stderr  # the path is never wrapped


def test_drifted_column_names_are_printed_as_text(tmp_path):
    """Column names come from the user's files: Rich markup (`[/x]` crashed the command), a
    hyperlink, an emoji code and an escape sequence are shown as the text they are."""
    names = ["[/x]", "[link=http://example.invalid]y[/link]", ":smile:", "esc\x1b[2J"]
    rng = np.random.default_rng(0)
    for name, shift in (("ref", 0), ("cur", 3)):
        frame = pd.DataFrame({c: rng.normal(shift, 1, 300) for c in names})
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    result = _drift(tmp_path / "ref.parquet", tmp_path / "cur.parquet", check_code=0)
    shown = result.stderr
    for text in ("  [/x]: ", "  [link=http://example.invalid]y[/link]: ", "  :smile:: "):
        assert text in shown
    assert (
        "  esc\\x1b[2J: " in shown and "\x1b" not in shown and "\U0001f604" not in shown
    )  # :smile:


@pytest.mark.parametrize(
    ("option", "where"),
    [("--html", "folder"), ("--html", "missing folder"), ("--html", "full disk"),
     ("--json", "folder")],
)  # fmt: skip
def test_a_report_path_that_cannot_be_written_exits_2_with_a_message(files, tmp_path, option,
                                                                     where):  # fmt: skip
    target = {
        "folder": tmp_path,
        "missing folder": tmp_path / "nope" / "report",
        "full disk": Path("/dev/full"),  # writable, but every write fails (ENOSPC)
    }[where]
    result = _drift(files / "ref.parquet", files / "same.parquet", option, target, check_code=2)
    assert "Traceback" not in result.stderr
    assert str(target) in result.stderr


def test_paths_with_glob_characters_name_those_files_only(tmp_path):
    """DuckDB's readers expand ``[12]``, ``*`` and ``?``: ``lit[12].csv`` in ``g[1]*?`` read the
    decoys ``g1x/lit1.csv`` instead (drift where there is none)."""
    folder, decoys = tmp_path / "g[1]*?{a,b}", tmp_path / "g1x{a,b}"
    folder.mkdir()
    decoys.mkdir()
    same, moved = _frame(1500, 1, 0), _frame(1500, 3, 0.5)
    same.to_parquet(folder / "lit[12].parquet", index=False)
    same.to_csv(folder / "lit[12].csv", index=False)
    moved.to_parquet(decoys / "lit1.parquet", index=False)
    moved.to_csv(decoys / "lit1.csv", index=False)
    out = tmp_path / "r.json"
    ref, cur = folder / "lit[12].parquet", folder / "lit[12].csv"
    _drift(ref, cur, "--multivariate", "--json", out, check_code=0)
    report = json.loads(out.read_text())
    assert report["n_drifted_columns"] == 0
    assert report["multivariate"]["drifted"] is False


def test_a_parquet_file_with_repeated_column_names_is_exit_2(files, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([[1.0, 2.0], [3.0, 4.0]], names=["income", "income"]), path)
    result = _drift(files / "ref.parquet", path, check_code=2)
    assert "repeated column name(s) 'income'" in result.stderr + result.stdout


@pytest.mark.parametrize("option", ["--json", "--html"])
def test_a_report_path_that_is_not_a_regular_file_is_exit_2(files, tmp_path, option):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    result = _drift(files / "ref.parquet", files / "same.parquet", option, fifo, check_code=2)
    assert "not a regular file" in result.stderr + result.stdout


# --- options: each test and threshold where Evidently would put it ------------------------------
# In-process (typer's runner): these need no fresh interpreter, and there are many.


def _invoke(*args, code: int):
    result = CliRunner().invoke(app, ["drift", *map(str, args)])
    assert result.exit_code == code, result.output
    # A refusal is a message, never a traceback (an uncaught error would be the exception).
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def _columns(result) -> dict[str, dict]:
    return {c["column"]: c for c in json.loads(result.stdout)["columns"]}


def test_a_columns_own_option_beats_its_kinds_which_beats_the_global_one(files):
    result = _invoke(
        files / "ref.parquet", files / "same.parquet", "--json", "-",
        "--stattest", "jensenshannon", "--num-stattest", "hellinger", "--cat-stattest", "psi",
        "--column-stattest", "income=ks", "--threshold", "0.9", "--num-threshold", "0.3",
        "--column-threshold", "age=0.4", code=0,
    )  # fmt: skip
    chosen = {name: (c["test"], c["threshold"]) for name, c in _columns(result).items()}
    assert chosen == {"income": ("ks", 0.3), "age": ("hellinger", 0.4),
                      "term": ("hellinger", 0.3), "purpose": ("psi", 0.9),
                      "channel": ("psi", 0.9)}  # fmt: skip


def test_a_column_name_holding_equals_signs_is_split_at_the_last_one(tmp_path):
    """A test name or a number never holds '=', a column name may: `a=b=psi` is column `a=b`."""
    rng = np.random.default_rng(0)
    for name in ("ref", "cur"):
        frame = pd.DataFrame({"a=b": rng.normal(0, 1, 200), "c": rng.normal(0, 1, 200)})
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    result = _invoke(tmp_path / "ref.parquet", tmp_path / "cur.parquet", "--json", "-",
                     "--column-stattest", "a=b=psi", "--column-threshold", "a=b=0.3",
                     code=0)  # fmt: skip
    columns = _columns(result)
    assert (columns["a=b"]["test"], columns["a=b"]["threshold"]) == ("psi", 0.3)
    assert (columns["c"]["test"], columns["c"]["threshold"]) == ("ks", 0.05)


def test_strict_evidently_refuses_an_empty_column_with_evidentlys_error(tmp_path):
    """Here a column whose values all went missing is drifted; Evidently raises (its message,
    word for word, with --strict-evidently)."""
    pd.DataFrame({"x": [1.0, 2.0, 3.0]}).to_parquet(tmp_path / "ref.parquet", index=False)
    pd.DataFrame({"x": [None, None, None]}, dtype="float64").to_parquet(
        tmp_path / "cur.parquet", index=False
    )
    files = (tmp_path / "ref.parquet", tmp_path / "cur.parquet")
    column = _columns(_invoke(*files, "--json", "-", code=0))["x"]
    assert column["drifted"] and column["note"] == "no values in the current data"
    result = _invoke(*files, "--strict-evidently", code=2)
    assert ("An empty column 'x' was provided for drift calculation in the current dataset."
            in result.stderr)  # fmt: skip


def test_text_columns_get_the_text_tests_and_options(tmp_path):
    rng = np.random.RandomState(0)
    fruit, tools = [f"fruit{i}" for i in range(100)], [f"tool{i}" for i in range(100)]

    def notes(share_tools: float) -> list[str]:
        return [" ".join((tools if rng.rand() < share_tools else fruit)[rng.randint(100)]
                         for _ in range(rng.randint(5, 12))) for _ in range(200)]  # fmt: skip

    for name, share in (("ref", 0.0), ("cur", 0.3)):
        frame = pd.DataFrame({"note": notes(share), "channel": rng.choice(["a", "b"], 200)})
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    files = (tmp_path / "ref.parquet", tmp_path / "cur.parquet")
    as_text = _columns(_invoke(*files, "--json", "-", "--text-column", "note", code=0))
    assert as_text["note"]["kind"] == "text" and as_text["channel"]["kind"] == "categorical"
    assert as_text["note"]["test"] == "perc_text_content_drift"  # 200 reference rows
    options = ["--text-stattest", "abs_text_content_drift", "--text-threshold", "0.9",
               "--cat-threshold", "0.2"]  # fmt: skip
    chosen = _columns(_invoke(*files, "--json", "-", "--text-column", "note", *options, code=0))
    assert (chosen["note"]["test"], chosen["note"]["threshold"]) == ("abs_text_content_drift", 0.9)
    assert chosen["channel"]["threshold"] == 0.2
    assert _columns(_invoke(*files, "--json", "-", code=0))["note"]["kind"] == "categorical"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--num-stattest", "chisquare"], "chisquare does not apply to a numerical column"),
        (["--cat-stattest", "ks"], "ks does not apply to a categorical column"),
        (["--text-stattest", "psi"], "psi does not apply to a text column"),
        (["--column-stattest", "income=chisquare"],
         "chisquare does not apply to column 'income', which is numerical"),
        (["--column-stattest", "income=magic"], "unknown stattest 'magic'"),
        (["--column-stattest", "income"], "--column-stattest wants COLUMN=TEST, got 'income'"),
        (["--column-stattest", "=ks"], "--column-stattest wants COLUMN=TEST, got '=ks'"),
        (["--column-stattest", "income=ks", "--column-stattest", "income=psi"],
         "--column-stattest names column 'income' twice"),
        (["--column-threshold", "income=high"],
         "--column-threshold wants COLUMN=X, X a number: got 'income=high'"),
        (["--column-threshold", "income="], "--column-threshold wants COLUMN=X, got 'income='"),
        (["--column-threshold", "income=nan"],
         "the threshold of column 'income' must be a number >= 0, got nan"),
        (["--column-threshold", "income=1e999"],
         "the threshold of column 'income' must be a number >= 0, got inf"),
        (["--column-threshold", "income=-0.1"],
         "the threshold of column 'income' must be a number >= 0, got -0.1"),
        (["--num-threshold", "nan"], "num_threshold must be a number >= 0, got nan"),
        (["--cat-threshold", "-1"], "cat_threshold must be a number >= 0, got -1"),
        (["--column-threshold", "incme=0.1"], "columns missing from one of the files: incme"),
        (["--column-stattest", "incme=ks"], "columns missing from one of the files: incme"),
        (["--text-column", ""], "--text-column wants a column name, got ''"),
        (["--text-column", "income"], "column 'income' is numerical, not text"),
        (["--strict-evidently", "--correction", "bh"], "it takes no correction"),
        # Arguments are text: no Rich markup read in them, control characters escaped.
        (["--column-threshold", "[/b]\x1b[2J=0.1"],
         "columns missing from one of the files: [/b]\\x1b[2J"),
        # (repr escapes the bell, then printing doubles repr's backslash)
        (["--column-stattest", "x=[red]\x07"], "unknown stattest '[red]\\\\x07'"),
    ],
)  # fmt: skip
def test_a_bad_option_exits_2_naming_the_problem(files, options, message):
    result = _invoke(files / "ref.parquet", files / "same.parquet", *options, code=2)
    assert message in result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
