"""The engine's fast paths give what the slow ones gave: the Wasserstein merge is scipy's
distance, histograms of sorted values are numpy's, numbers read from Arrow buffers are
``to_numpy``'s, dictionary-encoded categories count as their strings; the local thread pool
runs every column, stops at an error, and a Dask client still gets the work."""

from __future__ import annotations

import decimal
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from mlops_assets.drift import engine
from mlops_assets.drift.engine import (
    DriftInputError,
    column_groups,
    drift_files,
    open_parquet,
    read_column,
    run_tasks,
)
from mlops_assets.drift.profile import Sample, category_counts, numbers, profile_column
from mlops_assets.drift.stattests import _wasserstein, weighted_histogram


@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 7), (5, 5), (200, 300), (3001, 2000)])
def test_the_wasserstein_merge_is_scipys_distance_with_ties(n, m):
    rng = np.random.default_rng(n * m)
    u = np.sort(np.round(rng.normal(0, 1, n), 1))  # rounded: many ties within and across
    v = np.sort(np.round(rng.normal(0.3, 1.5, m), 1))
    assert _wasserstein(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12)
    assert _wasserstein(u, u) == 0.0


def test_the_histogram_of_a_sorted_sample_is_numpys():
    values = np.sort(np.array([-1.0, 0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0]))
    edges = np.array([0.0, 1.0, 2.0, 3.0])  # values on every edge, and outside both ends
    expected = np.histogram(values, edges)[0]
    assert weighted_histogram(Sample(values, len(values)), edges).tolist() == expected.tolist()
    # A quantile sample stands for its true number of rows.
    assert weighted_histogram(Sample(values, 100), edges).tolist() == (expected * 10).tolist()


@pytest.mark.parametrize(
    "array",
    [
        pa.array([1.5, None, np.nan, np.inf, -2.0, -np.inf, 3.0]),
        pa.array([1.5, None, np.nan, np.inf, -2.0, -np.inf, 3.0]).slice(2, 4),  # an offset
        pa.array([7, None, -3, 2**60], pa.int64()),
        pa.array([1, None, 3, None, 5, 6, 7, 8, None, 10], pa.int32()).slice(1, 8),
        pa.array([2**64 - 1, 0], pa.uint64()),
        pa.array([1.5, None, 2.5], pa.float16()),
        pa.array([1, 2, 3], pa.uint8()),
        pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2)),
        pa.chunked_array([pa.array([1.0, None]), pa.array([], pa.float64()), pa.array([2.0])]),
        pa.chunked_array([], pa.float64()),
    ],
)
def test_numbers_read_from_arrow_buffers_are_the_finite_values(array):
    values, missing = numbers(array)
    everything = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
    finite = everything[np.isfinite(everything)]
    assert values.tolist() == finite.tolist()
    assert missing == len(everything) - len(finite)
    assert values.flags.writeable  # profiles sort them in place


def test_dictionary_encoded_categories_count_as_their_strings():
    words = ["car", None, "home", "car", "debt", None, "car", "solar"]
    plain = pa.chunked_array([pa.array(words[:4]), pa.array(words[4:])])
    # Two chunks with dictionaries of their own (as two row groups), an unused entry, a value
    # listed twice, and narrow (int8) codes.
    first = pa.DictionaryArray.from_arrays(
        pa.array([0, None, 1, 0], pa.int8()), pa.array(["car", "home", "unused"])
    )
    second = pa.DictionaryArray.from_arrays(
        pa.array([2, None, 0, 1], pa.int8()), pa.array(["car", "solar", "debt", "car"])
    )
    keys, counts, missing = category_counts(pa.chunked_array([first, second]))
    # A slice of a chunk: codes and nulls are read from the slice's offset.
    sliced = category_counts(pa.chunked_array([second.slice(1, 3)]))
    assert (sliced[0].tolist(), sliced[1].tolist(), sliced[2]) == (["car", "solar"], [1, 1], 1)
    expected = category_counts(plain)
    assert keys.tolist() == expected[0].tolist() == ["car", "debt", "home", "solar"]
    assert counts.tolist() == expected[1].tolist() == [3, 1, 1, 1]
    assert missing == expected[2] == 2
    empty = category_counts(pa.chunked_array([], pa.dictionary(pa.int32(), pa.string())))
    assert (empty[0].tolist(), empty[1].tolist(), empty[2]) == ([], [], 0)
    booleans = category_counts(pa.array([True, None, False, True]))
    assert (booleans[0].tolist(), booleans[1].tolist()) == (["false", "true"], [1, 2])


def test_strings_are_read_dictionary_encoded_and_give_the_same_drift(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for name, p in (("ref", [0.5, 0.3, 0.2]), ("cur", [0.3, 0.3, 0.4])):
        words = rng.choice(["car", "home", "debt"], 5000, p=p)
        table = pa.table({"purpose": pa.array(words, mask=rng.random(5000) < 0.05)})
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=1000)
        paths.append(tmp_path / f"{name}.parquet")
    with open_parquet(paths[0], {"purpose": "categorical"}) as parquet:
        read = read_column(parquet, "purpose")
    assert pa.types.is_dictionary(read.type) and read.num_chunks == 5
    plain = pq.read_table(paths[0])["purpose"]
    by_codes = profile_column("purpose", "categorical", read)
    by_strings = profile_column("purpose", "categorical", plain)
    assert by_codes.keys.tolist() == by_strings.keys.tolist()
    assert by_codes.counts.tolist() == by_strings.counts.tolist()
    assert by_codes.missing == by_strings.missing == plain.null_count
    column = drift_files(*paths).columns[0]
    assert column.test == "jensenshannon" and column.drifted


def test_local_tasks_run_every_item_in_order_and_raise_a_failing_ones_error():
    assert run_tasks(lambda x: x * x, list(range(50))) == [x * x for x in range(50)]

    def refuse(x):
        if x == 3:
            raise DriftInputError("column 3 cannot be compared")
        return x

    with pytest.raises(DriftInputError, match="column 3"):
        run_tasks(refuse, list(range(8)))


def test_a_dask_client_gets_the_columns_when_given(tmp_path):
    class Client:  # what run_tasks uses of distributed.Client
        def __init__(self):
            self.mapped = []

        def map(self, task, items, pure):
            self.mapped = list(items)
            return [task(item) for item in items]

        def gather(self, futures):
            return list(futures)

        def nthreads(self):
            return {"tcp://127.0.0.1:1": 1}

    table = pa.table({"a": np.arange(50.0), "b": np.arange(50.0) % 3})
    pq.write_table(table, tmp_path / "ref.parquet")
    pq.write_table(table, tmp_path / "cur.parquet")
    client = Client()
    report = drift_files(tmp_path / "ref.parquet", tmp_path / "cur.parquet", client=client)
    assert client.mapped == [["a"], ["b"]]  # one group per column: 4 groups per thread
    assert [c.column for c in report.columns] == ["a", "b"]


def test_column_groups_cover_every_column_once_in_a_few_balanced_groups():
    columns = [f"c{i}" for i in range(103)]
    groups = column_groups(columns, cores=2)
    assert len(groups) == 8
    assert sorted(c for g in groups for c in g) == sorted(columns)
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    assert column_groups(["a", "b"], cores=2) == [["a"], ["b"]]
    assert column_groups([], cores=2) == []


def test_a_wide_file_is_opened_once_per_group_not_once_per_column(tmp_path, monkeypatch):
    """Opening a Parquet file parses its whole footer: once per column made a file of
    thousands of columns quadratic (3,000 columns took 127 s)."""
    rng = np.random.default_rng(0)
    paths = []
    for side in ("ref", "cur"):
        table = pa.table({f"c{i}": rng.normal(0, 1, 50) for i in range(300)})
        pq.write_table(table, tmp_path / f"{side}.parquet")
        paths.append(tmp_path / f"{side}.parquet")
    opened = []

    def counting(path, kinds):
        opened.append(path)
        return open_parquet(path, kinds)

    monkeypatch.setattr(engine, "open_parquet", counting)
    report = drift_files(*paths)
    assert [c.column for c in report.columns] == [f"c{i}" for i in range(300)]
    assert (
        len(opened)
        == 2 * len(column_groups(list(range(300)), os.cpu_count() or 1))
        <= 2 * 4 * (os.cpu_count() or 1)
    )
