"""`mlops drift` on files: the JSON contract, exit codes, CSV and Parquet, reports, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MLOPS = str(Path(sys.executable).parent / "mlops")
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


def _drift(*args, check_code=None):
    # Wide enough that no message is wrapped (a path broken across lines is not found).
    env = {**os.environ, "COLUMNS": "400"}
    result = subprocess.run(
        [MLOPS, "drift", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    if check_code is not None:
        assert result.returncode == check_code, result.stdout + result.stderr[-2000:]
    return result


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
