"""`mlops drift` takes a user's files: their column names are data, never SQL.

Hypothesis writes Parquet and CSV files whose column names hold quotes, semicolons, comments,
digits of other scripts, control characters, Rich markup and markdown, and one name that would
copy a file if it reached DuckDB as SQL text. The drift result covers each column by its name,
the multivariate sample reads exactly those columns, and no file appears. Behind the quoting,
the engine's DuckDB database can reach only its inputs' folders."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_assets.drift.engine import drift_files
from mlops_assets.drift.files import as_parquet, confined_connection
from mlops_assets.drift.multivariate import parquet_sample

PIECES = [
    '"', "'", ";", "--", "/*", "*/", "(", ")", ",", "`", "\\", "٢٠٢٥", "१२", "\x01", "\x1b[2J",
    "\t", "\u202e", "[/x]", "[b]", "[link=http://x]", "![a](http://x)", ":smile:", "select",
    "drop table t", "a", "Z", "é", " ",
]  # fmt: skip
HOSTILE = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _injection(folder: Path) -> str:
    """A name that, pasted into SQL unquoted or badly quoted, writes a file in ``folder``."""
    target = folder / "injected.csv"
    return f"x\" from (select 1); copy (select 1) to '{target}'; select \"x"


def _names(pieces: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    name = st.lists(pieces, min_size=1, max_size=4).map("".join)
    return st.lists(name, min_size=1, max_size=6, unique=True)


# Parquet: any text but a NUL (which no SQL quoting carries) and lone surrogates (not UTF-8);
# names may differ only by case.
parquet_names = _names(
    st.one_of(
        st.sampled_from(PIECES),
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    )
).filter(lambda names: all(names))
# DuckDB's CSV reader trims header names and tells names apart ignoring case, and a line break
# needs a sniffer that knows quotes: CSV names are the pieces, trimmed, non-empty, unique
# ignoring case.
csv_names = _names(st.sampled_from(PIECES)).map(lambda ns: [n.strip() for n in ns])
csv_names = csv_names.filter(lambda ns: all(ns) and len({n.casefold() for n in ns}) == len(ns))


def _drift_over(folder: Path, names: list[str], suffix: str) -> None:
    """Write reference and current files with columns ``names`` (and the injection) in
    ``folder``, compare them and sample them: every column by its name, no file written."""
    folder.mkdir(exist_ok=True)
    injection = _injection(folder)
    rng = np.random.default_rng(0)
    columns = [*(n for n in names if n != injection), injection]
    paths = []
    for side, rows, shift in (("reference", 60, 0.0), ("current", 40, 0.5)):
        frame = pd.DataFrame({c: rng.normal(shift, 1, rows) for c in columns})
        paths.append(folder / f"{side}.{suffix}")
        getattr(frame, f"to_{suffix}")(paths[-1], index=False)
    before = sorted(os.listdir(folder))
    with as_parquet(*paths) as (ref_path, cur_path):
        report = drift_files(ref_path, cur_path)
        sample = parquet_sample(ref_path, columns)
    assert sorted(c.column for c in report.columns) == sorted(columns)
    assert list(sample.columns) == columns and len(sample) == 60
    assert sorted(os.listdir(folder)) == before  # nothing was written, no injected.csv


@HOSTILE
@given(names=parquet_names)
def test_parquet_column_names_are_compared_by_name_and_never_run(names, tmp_path):
    _drift_over(tmp_path / "parquet", names, "parquet")


@HOSTILE
@given(names=csv_names)
def test_csv_column_names_are_compared_by_name_and_never_run(names, tmp_path):
    _drift_over(tmp_path / "csv", names, "csv")


def test_the_engine_database_reaches_only_its_inputs_folder(tmp_path):
    """The second wall: SQL that slipped past the quoting could still read or write nothing
    outside the folder of the file it samples."""
    inputs, outside = tmp_path / "inputs", tmp_path / "outside"
    inputs.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("keyring")
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(inputs / "data.parquet")
    with confined_connection(inputs / "data.parquet") as con:
        rows = con.execute("select count(*) from read_parquet(?)", [str(inputs / "data.parquet")])
        assert rows.fetchone() == (2,)
        for sql in (
            f"select * from read_text('{outside / 'secret.txt'}')",
            f"copy (select 1) to '{outside / 'written.csv'}'",
            f"copy (select 1) to '{inputs / '..' / 'outside' / 'written.csv'}'",
            "set enable_external_access = true",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
    with duckdb.connect() as other:  # another database of the process is not confined
        other.execute(f"copy (select 1) to '{outside / 'other.csv'}'")
    assert sorted(os.listdir(outside)) == ["other.csv", "secret.txt"]


def test_names_that_differ_only_by_case_or_hold_a_nul_are_sampled_by_position(tmp_path):
    """DuckDB binds names ignoring case (``"A"`` read ``a``'s values) and no quoting carries a
    NUL: the sample selects columns by position and names them as the file does."""
    data = tmp_path / "names.parquet"
    pd.DataFrame({"a": [1.0, 1.0], "A": [2.0, 2.0], "n\x00ul": [3.0, 3.0]}).to_parquet(data)
    sample = parquet_sample(data, ["A", "n\x00ul", "a"])
    assert list(sample.columns) == ["A", "n\x00ul", "a"]
    assert sample.iloc[0].tolist() == [2.0, 3.0, 1.0]


def test_nested_columns_are_skipped_like_time_columns(tmp_path):
    """A list, struct or map column has no single value to count (casting it to text raised
    ArrowNotImplementedError out of `mlops drift`): it is listed as not compared."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "amount": pa.array(np.arange(50, dtype=float)),
            "tags": pa.array([["a", "b"], ["c"]] * 25),
            "address": pa.array([{"city": "x", "zip": 1}] * 50),
            "extra": pa.array([[("k", 1)]] * 50, pa.map_(pa.string(), pa.int64())),
        }
    )
    pq.write_table(table, tmp_path / "nested.parquet")
    report = drift_files(tmp_path / "nested.parquet", tmp_path / "nested.parquet")
    assert [c.column for c in report.columns] == ["amount"]
    assert report.skipped == ["tags", "address", "extra"]
