"""Column profiles: what drift detection needs of a dataset, in a few kilobytes per column.

A reference profile is computed once (when a model is trained, or from a reference file) and
stored; monitoring then reads only the current window. Per column it keeps:

* numerical: row and missing counts, mean, standard deviation, min and max, the distinct
  count, the sorted values themselves up to ``EXACT_ROWS`` rows or else ``QUANTILES`` evenly
  spaced quantiles (Kolmogorov-Smirnov and Wasserstein work on those), and the value counts
  when there are at most ``FEW_VALUES`` distinct values (the tests that bin numbers as
  categories use them);
* categorical: row and missing counts and the count of every category;
* text: row and missing counts and the texts themselves (the text tests train a classifier on
  them; a stored profile keeps at most ``TEXT_ROWS`` of them).

Missing values (null, NaN, +-infinity) are counted and left out of every statistic, as
Evidently does. Profiles are stored as one Parquet file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EXACT_ROWS = 10_000
QUANTILES = 10_000
FEW_VALUES = 20  # up to this many distinct reference values, numbers are binned as categories
TEXT_ROWS = 5_000  # texts kept by a stored profile (a file comparison keeps every one)
KINDS = ("numerical", "categorical", "text")


class DriftInputError(ValueError):
    """The two datasets cannot be compared (a missing column, a changed type, a bad option, a
    test that does not apply to a column)."""


class Undefined(Exception):
    """A test cannot score this column (a text column with no word left to learn from): it is
    reported with no score, as not drifted, and the message as its note (quoting no value)."""


@dataclass(frozen=True)
class Sample:
    """A numerical column as an equally weighted sorted sample: every value when it is small
    (or when the caller keeps every value), else quantiles at evenly spaced levels; ``rows`` is
    the true number of values."""

    values: np.ndarray
    rows: int

    @property
    def exact(self) -> bool:
        return len(self.values) == self.rows


def column_kind(arrow_type: pa.DataType) -> str | None:
    """numerical for numbers, categorical for everything else, None for times (not compared:
    time always moves) and nested values (lists, structs, maps: no single value to count)."""
    if pa.types.is_temporal(arrow_type) or pa.types.is_nested(arrow_type):
        return None
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    return "numerical" if any(is_type(arrow_type) for is_type in numeric) else "categorical"


@dataclass
class ColumnProfile:
    name: str
    kind: str
    rows: int  # non-missing values
    missing: int
    distinct: int
    keys: np.ndarray | None = None  # sorted distinct values (categorical, or few numbers)
    counts: np.ndarray | None = None
    values: np.ndarray | None = None  # numerical: sorted values or quantiles
    texts: np.ndarray | None = None  # text: the texts (object array of str)
    mean: float = float("nan")
    std: float = float("nan")  # population standard deviation (ddof 0), as Evidently
    min: float = float("nan")
    max: float = float("nan")

    @property
    def sample(self) -> Sample:
        return Sample(self.values, self.rows)

    @property
    def missing_share(self) -> float:
        total = self.rows + self.missing
        return self.missing / total if total else 0.0


def numbers(array: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, int]:
    """The finite values of a numerical column as float64, and how many were missing (null,
    NaN or infinite)."""
    kept = [np.empty(0)]
    for chunk in chunks(array):
        if pa.types.is_integer(chunk.type) or pa.types.is_floating(chunk.type):
            values = view(chunk)
        else:  # decimals: numpy has no such type, Arrow converts them
            values = view(chunk.cast(pa.float64(), safe=False))
        keep = np.isfinite(values)
        if chunk.null_count:
            keep &= present(chunk)
        kept.append(np.asarray(values[keep], dtype=np.float64))
    values = np.concatenate(kept)
    return values, len(array) - len(values)


def chunks(array: pa.ChunkedArray | pa.Array) -> list[pa.Array]:
    return array.chunks if isinstance(array, pa.ChunkedArray) else [array]


# Arrow's columns are read into numpy from their buffers, not by ``Array.to_numpy`` (which
# imports pandas, a quarter of a second of `mlops drift`'s start-up), and with Arrow's methods
# where a computation is needed (they load pyarrow.compute only when called).


def view(array: pa.Array) -> np.ndarray:
    """The values of a primitive Arrow array (numbers, dictionary codes) as a read-only numpy
    view of its buffer, whatever its null slots hold."""
    dtype = np.dtype(array.type.to_pandas_dtype())  # numpy's type for Arrow's (no pandas)
    if len(array) == 0:
        return np.empty(0, dtype)
    return np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * dtype.itemsize)


def present(array: pa.Array) -> np.ndarray:
    """Which slots of an Arrow array hold a value: its validity bitmap, unpacked."""
    end = array.offset + len(array)
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], np.uint8), count=end, bitorder="little")
    return bits[array.offset :].astype(bool)


def profile_numbers(
    name: str, array: pa.ChunkedArray | pa.Array, exact: bool = False
) -> ColumnProfile:
    values, missing = numbers(array)
    values.sort(kind="quicksort")
    return profile_sorted(name, values, missing, exact)


def profile_sorted(name: str, values: np.ndarray, missing: int, exact: bool) -> ColumnProfile:
    """Profile of the sorted finite values of a numerical column; ``exact`` keeps them all
    (a current window) instead of quantiles."""
    rows = len(values)
    profile = ColumnProfile(name, "numerical", rows, missing, distinct=0)
    if rows == 0:
        profile.values = values
        return profile
    begins = values[1:] != values[:-1]  # where a new distinct value begins (after the first)
    profile.distinct = int(np.count_nonzero(begins)) + 1
    if profile.distinct <= FEW_VALUES:
        bounds = np.concatenate([[0], np.flatnonzero(begins) + 1, [rows]])
        profile.keys = values[bounds[:-1]]
        profile.counts = np.diff(bounds).astype(np.int64)
    if exact:
        profile.values = values
    elif rows <= EXACT_ROWS:
        profile.values = values.copy()
    else:
        levels = (np.arange(QUANTILES) + 0.5) / QUANTILES
        profile.values = values[np.minimum((levels * rows).astype(np.int64), rows - 1)]
    profile.mean = float(values.mean())
    profile.std = float(values.std())
    profile.min, profile.max = float(values[0]), float(values[-1])
    return profile


def category_counts(array: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """Sorted categories (as text), their counts, and the number of missing values. A
    dictionary-encoded column (strings as Parquet stores them) is counted by its codes."""
    if pa.types.is_dictionary(array.type):
        values, counts = dictionary_counts(array)
    else:
        counted = array.drop_null().value_counts()
        values, counts = texts(counted.field("values")), view(counted.field("counts"))
    keys, key = np.unique(np.array(values, dtype=object).astype(str), return_inverse=True)
    counts = np.bincount(key, weights=counts, minlength=len(keys)).astype(np.int64)
    seen = counts > 0  # a dictionary may hold values that do not occur (or read alike)
    return keys[seen], counts[seen], array.null_count


def dictionary_counts(array: pa.ChunkedArray | pa.Array) -> tuple[list[str], np.ndarray]:
    """The values of a dictionary-encoded column and how often each occurs (nulls left out).
    Each chunk (a Parquet row group) has a dictionary of its own: they are unified first."""
    if isinstance(array, pa.ChunkedArray):
        array = array.unify_dictionaries()
    parts = chunks(array)
    if not parts:
        return [], np.zeros(0, dtype=np.int64)
    dictionary = parts[0].dictionary
    counts = np.zeros(len(dictionary), dtype=np.int64)
    for chunk in parts:
        codes = view(chunk.indices)
        if chunk.indices.null_count:
            codes = codes[present(chunk.indices)]
        counts += np.bincount(codes.astype(np.int64, copy=False), minlength=len(dictionary))
    return texts(dictionary), counts


def texts(values: pa.Array) -> list[str]:
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    return values.to_pylist()


def profile_categories(name: str, array: pa.ChunkedArray | pa.Array) -> ColumnProfile:
    try:
        keys, counts, missing = category_counts(array)
    except pa.ArrowInvalid:  # a binary column's bytes that are not text (no value quoted)
        raise DriftInputError(f"column {name!r} holds values that are not UTF-8 text") from None
    return ColumnProfile(
        name, "categorical", int(counts.sum()), missing, len(keys), keys=keys, counts=counts
    )


def valid_utf8(name: str, array: pa.Array) -> pa.Array:
    """A string array, checked: a Parquet file may hold any bytes in a string column, and
    Arrow's conversion of them to Python fails with a message that quotes them."""
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        raise DriftInputError(f"column {name!r} holds text that is not valid UTF-8") from None
    return array


def profile_texts(
    name: str, array: pa.ChunkedArray | pa.Array, exact: bool = False
) -> ColumnProfile:
    """The non-missing texts of a column (at most ``TEXT_ROWS`` of them, evenly spaced, unless
    ``exact``)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):  # a pandas category column, as Parquet keeps it
        array = array.dictionary_decode()
    if pa.types.is_string_view(array.type):
        array = array.cast(pa.large_string())
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        raise DriftInputError(f"column {name!r} is not a text column: its type is {array.type}")
    texts = valid_utf8(name, array).drop_null().to_numpy(zero_copy_only=False)
    texts = np.asarray(texts, dtype=object)
    rows = len(texts)
    if not exact and rows > TEXT_ROWS:
        texts = texts[np.linspace(0, rows - 1, TEXT_ROWS).astype(np.int64)]
    return ColumnProfile(name, "text", rows, array.null_count, distinct=0, texts=texts)


def profile_column(
    name: str, kind: str, array: pa.ChunkedArray | pa.Array, *, exact: bool = False
) -> ColumnProfile:
    """Profile of one column; ``exact`` keeps every numerical value and text (for a current
    window, or a reference whose values the tests need)."""
    if kind == "numerical":
        return profile_numbers(name, array, exact)
    if kind == "text":
        return profile_texts(name, array, exact)
    return profile_categories(name, array)


def profile_frame(frame, kinds: dict[str, str], *, exact: bool = False) -> Profile:
    """Profile the ``kinds`` (column -> numerical/categorical) of a pandas DataFrame.
    ``exact`` keeps every numerical value (a current window), not quantiles."""
    profile = Profile(rows=len(frame))
    for name, kind in kinds.items():
        array = pa.Array.from_pandas(frame[name])
        profile.columns[name] = profile_column(name, kind, array, exact=exact)
    return profile


@dataclass
class Profile:
    """Profiles of every compared column of a dataset."""

    columns: dict[str, ColumnProfile] = field(default_factory=dict)
    rows: int = 0

    def save(self, path: Path) -> Path:
        records = []
        for c in self.columns.values():
            numeric_keys = c.kind == "numerical" and c.keys is not None
            records.append(
                {
                    "name": c.name,
                    "kind": c.kind,
                    "rows": c.rows,
                    "missing": c.missing,
                    "distinct": c.distinct,
                    "category_keys": [str(k) for k in c.keys] if c.kind == "categorical" else None,
                    "number_keys": [float(k) for k in c.keys] if numeric_keys else None,
                    "counts": None if c.counts is None else c.counts.tolist(),
                    "values": None if c.values is None else c.values.tolist(),
                    "texts": None if c.texts is None else [str(t) for t in c.texts],
                    "mean": c.mean,
                    "std": c.std,
                    "min": c.min,
                    "max": c.max,
                }
            )
        table = pa.Table.from_pylist(records, schema=PROFILE_SCHEMA).replace_schema_metadata(
            {"rows": str(self.rows)}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path

    @classmethod
    def load(cls, path: Path) -> Profile:
        table = pq.read_table(path, schema=PROFILE_SCHEMA)
        profile = cls(rows=int(pq.read_schema(path).metadata[b"rows"]))
        for r in table.to_pylist():
            keys = r["category_keys"] if r["kind"] == "categorical" else r["number_keys"]
            profile.columns[r["name"]] = ColumnProfile(
                r["name"],
                r["kind"],
                r["rows"],
                r["missing"],
                r["distinct"],
                keys=None
                if keys is None
                else np.asarray(keys, dtype=object if r["kind"] == "categorical" else np.float64),
                counts=None if r["counts"] is None else np.asarray(r["counts"], dtype=np.int64),
                values=None if r["values"] is None else np.asarray(r["values"], dtype=np.float64),
                texts=None if r["texts"] is None else np.asarray(r["texts"], dtype=object),
                mean=r["mean"],
                std=r["std"],
                min=r["min"],
                max=r["max"],
            )
        return profile


PROFILE_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("kind", pa.string()),
        ("rows", pa.int64()),
        ("missing", pa.int64()),
        ("distinct", pa.int64()),
        ("category_keys", pa.list_(pa.string())),
        ("number_keys", pa.list_(pa.float64())),
        ("counts", pa.list_(pa.int64())),
        ("values", pa.list_(pa.float64())),
        ("texts", pa.list_(pa.large_string())),
        ("mean", pa.float64()),
        ("std", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
    ]
)
