"""Data drift: compare a current dataset with a reference, column by column.

    report = drift_files("reference.parquet", "current.parquet")       # two files
    report = compare_profiles(reference_profile, current_profile)     # a stored reference

Columns are independent tasks computed in parallel with Dask: on local threads by default
(numpy and Arrow release the GIL for the heavy parts), or on a ``distributed`` cluster when a
client is given. Each task reads one column of each side (Parquet is columnar), so memory is
bounded by the largest column, not by the table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_assets.drift import stattests as st
from mlops_assets.drift.profile import (
    ColumnProfile,
    Profile,
    column_kind,
    profile_column,
)

PLOT_BINS = 30
PLOT_CATEGORIES = 20


class DriftInputError(ValueError):
    """The two datasets cannot be compared (a missing column, a changed type, a bad option)."""


@dataclass(frozen=True)
class DriftOptions:
    stattest: str | None = None  # None: Evidently's default choice per column
    per_column_stattest: dict[str, str] = field(default_factory=dict)
    threshold: float | None = None  # None: the test's default (0.05 for p-values, 0.1 else)
    drift_share: float = 0.5
    correction: str = "none"  # "bh": Benjamini-Hochberg across the p-value tests
    # Which side's size chooses between tests and distances: Evidently looks at the
    # reference only ("reference"), so a small current window gets a distance whose chance
    # level exceeds its threshold; "smaller" looks at the smaller side (the daily monitor).
    select_by: str = "reference"

    def __post_init__(self) -> None:
        if self.select_by not in ("reference", "smaller"):
            raise DriftInputError(f"select_by must be reference or smaller, got {self.select_by!r}")
        for test in [self.stattest, *self.per_column_stattest.values()]:
            if test is not None and test not in st.TESTS:
                raise DriftInputError(f"unknown stattest {test!r}: choose one of {st.TESTS}")
        if not 0 < self.drift_share <= 1:
            raise DriftInputError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.correction not in ("none", "bh"):
            raise DriftInputError(f"correction must be 'none' or 'bh', got {self.correction!r}")

    def test_for(self, column: str) -> str | None:
        return self.per_column_stattest.get(column, self.stattest)

    def threshold_for(self, test: str) -> float:
        return self.threshold if self.threshold is not None else st.DEFAULT_THRESHOLDS[test]


@dataclass
class ColumnDrift:
    column: str
    kind: str
    test: str
    score: float
    threshold: float
    drifted: bool
    note: str = ""
    reference_rows: int = 0
    current_rows: int = 0
    reference_missing_share: float = 0.0
    current_missing_share: float = 0.0
    # For plots: bin labels and the share of each side in each bin.
    bins: list[str] = field(default_factory=list)
    reference_shares: list[float] = field(default_factory=list)
    current_shares: list[float] = field(default_factory=list)


@dataclass
class DriftReport:
    columns: list[ColumnDrift]
    drift_share: float
    reference_rows: int
    current_rows: int
    correction: str = "none"
    skipped: list[str] = field(default_factory=list)  # time and nested columns: not compared
    multivariate: dict | None = None

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def n_drifted_columns(self) -> int:
        return sum(c.drifted for c in self.columns)

    @property
    def share_drifted_columns(self) -> float:
        return self.n_drifted_columns / self.n_columns if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.columns) and self.share_drifted_columns >= self.drift_share

    def to_dict(self, plots: bool = False) -> dict:
        keys = ("column", "kind", "test", "score", "threshold", "drifted")
        extra = ("note", "reference_rows", "current_rows")
        extra += ("reference_missing_share", "current_missing_share")
        columns = []
        for c in sorted(self.columns, key=_severity):
            row = {k: getattr(c, k) for k in keys + extra}
            if plots:
                row.update(
                    bins=c.bins,
                    reference_shares=c.reference_shares,
                    current_shares=c.current_shares,
                )
            columns.append(row)
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "share_drifted_columns": self.share_drifted_columns,
            "n_drifted_columns": self.n_drifted_columns,
            "n_columns": self.n_columns,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "correction": self.correction,
            "skipped_columns": self.skipped,
            "multivariate": self.multivariate,
            "columns": columns,
        }


def _severity(c: ColumnDrift) -> tuple:
    """Drifted columns first, then by how far the score is past (or short of) its threshold:
    a distance's multiple of it, a p-value's fraction of it."""
    if c.test in st.P_VALUE_TESTS:
        strength = c.threshold / max(c.score, 1e-300)
    else:
        strength = c.score / c.threshold
    return (not c.drifted, -strength, c.column)


# --- one column ----------------------------------------------------------------------------


def compare_columns(
    reference: ColumnProfile, current: ColumnProfile, options: DriftOptions
) -> ColumnDrift:
    """Drift of one column; ``current`` must be an exact profile (every value kept)."""
    if reference.kind != current.kind:
        raise DriftInputError(
            f"column {reference.name!r} is {reference.kind} in the reference and "
            f"{current.kind} in the current data"
        )
    kind = reference.kind
    forced = options.test_for(reference.name)
    if reference.rows == 0 or current.rows == 0:
        empty = "reference" if reference.rows == 0 else "current"
        test = forced or ("wasserstein" if kind == "numerical" else "jensenshannon")
        threshold = options.threshold_for(test)
        # Evidently raises on an empty column and loses the whole report; here the column is
        # reported as drifted (every value went missing, or all arrived at once).
        score = 0.0 if test in st.P_VALUE_TESTS else 1.0
        result = ColumnDrift(reference.name, kind, test, score, threshold, True,
                             note=f"no values in the {empty} data")  # fmt: skip
        return _describe(result, reference, current)
    counts = _aligned_counts(reference, current)
    distinct = len(counts.keys) if counts is not None else max(reference.distinct, current.distinct)
    size = reference.rows
    if options.select_by == "smaller":
        size = min(reference.rows, current.rows)
    test = forced or st.default_test(kind, size, distinct)
    _check_applicable(test, reference, counts)
    threshold = options.threshold_for(test)
    score = _score(test, reference, current, counts)
    result = ColumnDrift(
        reference.name, kind, test, score, threshold, st.is_drift(test, score, threshold)
    )
    return _describe(result, reference, current, counts)


def _aligned_counts(reference: ColumnProfile, current: ColumnProfile) -> st.Counts | None:
    """Counts of the union of both sides' values, or None when the reference has too many
    distinct numbers to keep them all (then it is binned instead)."""
    if reference.keys is None:
        return None
    cur_keys, cur_counts = current.keys, current.counts
    if cur_keys is None:  # a current column with many values: count them from its values
        cur_keys, cur_counts = np.unique(current.values, return_counts=True)
    keys = np.union1d(reference.keys, cur_keys)
    return st.Counts(keys, _align(keys, reference.keys, reference.counts),
                     _align(keys, cur_keys, cur_counts))  # fmt: skip


def _align(keys: np.ndarray, own_keys: np.ndarray, own_counts: np.ndarray) -> np.ndarray:
    aligned = np.zeros(len(keys), dtype=np.float64)
    aligned[np.searchsorted(keys, own_keys)] = own_counts
    return aligned


def _check_applicable(test: str, reference: ColumnProfile, counts) -> None:
    if test in st.NUMERICAL_ONLY and reference.kind != "numerical":
        raise DriftInputError(f"{test} needs a numerical column; {reference.name!r} is categorical")
    if test in st.CATEGORICAL_ONLY and counts is None:
        raise DriftInputError(
            f"{test} compares categories; {reference.name!r} has {reference.distinct} distinct "
            f"numbers in the reference (at most {st.FEW_VALUES} can be compared as categories)"
        )


def _score(test: str, reference: ColumnProfile, current: ColumnProfile, counts) -> float:
    if test == "ks":
        return st.ks(reference.sample, current.sample)
    if test == "wasserstein":
        return st.wasserstein_normed(
            reference.sample, current.sample, reference.std, _pooled_std(reference, current)
        )
    if test == "chisquare":
        return st.chisquare(counts)
    if test == "z":
        return st.z_test(counts)
    ref_bins, cur_bins = _binned(test, reference, current, counts)
    ref, cur = st.shares(ref_bins, cur_bins, fill_zeroes=test == "psi")
    return {"jensenshannon": st.jensenshannon, "psi": st.psi, "hellinger": st.hellinger}[test](
        ref, cur
    )


def _binned(test, reference, current, counts) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin as Evidently bins them: categories (and numbers with at most 20 distinct
    reference values) by value; other numbers in Sturges bins over both sides' range (for the
    Hellinger distance: as many bins as Sturges gives for the number of distinct values)."""
    if counts is not None and (reference.kind == "categorical" or test != "hellinger"):
        return counts.reference, counts.current
    if counts is not None:  # hellinger on few numbers: Sturges over the distinct values
        edges = _sturges(reference, current, len(counts.keys))
        return (
            np.histogram(counts.keys.astype(np.float64), edges, weights=counts.reference)[0],
            np.histogram(counts.keys.astype(np.float64), edges, weights=counts.current)[0],
        )
    n = max(reference.distinct, current.distinct) if test == "hellinger" else None
    edges = _sturges(reference, current, n or reference.rows + current.rows)
    return st.weighted_histogram(reference.sample, edges), np.histogram(current.values, edges)[0]


def _sturges(reference: ColumnProfile, current: ColumnProfile, n: int) -> np.ndarray:
    """numpy's Sturges bin edges for ``n`` values spanning both sides' range."""
    lo, hi = min(reference.min, current.min), max(reference.max, current.max)
    return np.histogram_bin_edges(np.array([lo, hi]), bins=math.ceil(math.log2(n) + 1))


def _pooled_std(a: ColumnProfile, b: ColumnProfile) -> float:
    n = a.rows + b.rows
    mean = (a.rows * a.mean + b.rows * b.mean) / n
    var = (
        a.rows * (a.std**2 + (a.mean - mean) ** 2) + b.rows * (b.std**2 + (b.mean - mean) ** 2)
    ) / n
    return math.sqrt(var)


def _describe(result: ColumnDrift, reference, current, counts=None) -> ColumnDrift:
    """Sizes, missing shares and the distribution plot's bins."""
    result.reference_rows, result.current_rows = reference.rows, current.rows
    result.reference_missing_share = reference.missing_share
    result.current_missing_share = current.missing_share
    if reference.rows == 0 or current.rows == 0:
        return result
    if counts is not None:
        ref = counts.reference / counts.reference.sum()
        cur = counts.current / counts.current.sum()
        top = np.argsort(-np.maximum(ref, cur), kind="stable")[:PLOT_CATEGORIES]
        top.sort()
        labels = [_label(k) for k in counts.keys[top]]
        ref_shares, cur_shares = ref[top].tolist(), cur[top].tolist()
        if len(top) < len(counts.keys):
            labels.append("(other)")
            ref_shares.append(float(1 - ref[top].sum()))
            cur_shares.append(float(1 - cur[top].sum()))
    else:
        lo, hi = min(reference.min, current.min), max(reference.max, current.max)
        edges = np.histogram_bin_edges(np.array([lo, hi]), bins=PLOT_BINS)
        ref = st.weighted_histogram(reference.sample, edges) / reference.rows
        cur = np.histogram(current.values, edges)[0] / current.rows
        labels = [f"{edges[i]:.4g}" for i in range(PLOT_BINS)]
        ref_shares, cur_shares = ref.tolist(), cur.tolist()
    result.bins, result.reference_shares, result.current_shares = labels, ref_shares, cur_shares
    return result


def _label(key) -> str:
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key)


# --- whole datasets --------------------------------------------------------------------------


def compare_profiles(
    reference: Profile,
    current: Profile,
    options: DriftOptions | None = None,
    *,
    columns: list[str] | None = None,
    client=None,
    parallel: bool = True,
) -> DriftReport:
    """Compare ``columns`` (default: all of the reference's) of a stored reference profile with
    an exact profile of the current data (column by column in parallel unless ``parallel`` is
    false: the caller parallelises already)."""
    options = options or DriftOptions()
    columns = columns or list(reference.columns)
    absent = [c for c in columns if c not in current.columns]
    if absent:
        raise DriftInputError(f"columns missing from the current data: {', '.join(absent)}")
    unknown = [c for c in columns if c not in reference.columns]
    if unknown:
        raise DriftInputError(f"columns not in the reference profile: {', '.join(unknown)}")

    def task(name: str) -> ColumnDrift:
        return compare_columns(reference.columns[name], current.columns[name], options)

    results = run_tasks(task, columns, client) if parallel else [task(c) for c in columns]
    return finish(results, options, reference.rows, current.rows)


def finish(results: list[ColumnDrift], options: DriftOptions, reference_rows, current_rows):
    if options.correction == "bh":
        tested = [r for r in results if r.test in st.P_VALUE_TESTS and not r.note]
        adjusted = st.benjamini_hochberg(np.array([r.score for r in tested]))
        for r, p in zip(tested, adjusted, strict=True):
            r.note = f"p = {r.score:.3g} before Benjamini-Hochberg"
            r.score = float(p)
            r.drifted = st.is_drift(r.test, r.score, r.threshold)
    return DriftReport(
        results, options.drift_share, reference_rows, current_rows, correction=options.correction
    )


def run_tasks(task: Callable, items: list, client=None) -> list:
    """``task(item)`` for every item, in parallel: on a Dask ``distributed`` client when one is
    given, else on Dask's local threads."""
    import dask

    if client is not None:
        return client.gather(client.map(task, items, pure=False))
    delayed = [dask.delayed(task, pure=False)(item) for item in items]
    return list(dask.compute(*delayed, scheduler="threads", num_workers=os.cpu_count()))


# --- files -----------------------------------------------------------------------------------


def parquet_columns(path: Path) -> dict[str, str | None]:
    """Column name -> kind (None: a time or nested column, not compared)."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise DriftInputError(f"{path}: cannot read as Parquet: {error}") from error
    repeated = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if repeated:
        raise DriftInputError(f"{path}: repeated column name(s) {', '.join(map(repr, repeated))}")
    return {f.name: column_kind(f.type) for f in schema}


def drift_files(
    reference: Path,
    current: Path,
    options: DriftOptions | None = None,
    *,
    columns: list[str] | None = None,
    client=None,
) -> tuple[DriftReport, Profile]:
    """Drift between two Parquet files; returns the report and the reference's profile."""
    options = options or DriftOptions()
    ref_kinds, cur_kinds = parquet_columns(Path(reference)), parquet_columns(Path(current))
    wanted = columns or list(ref_kinds)
    absent = [c for c in wanted if c not in cur_kinds or c not in ref_kinds]
    if absent:
        raise DriftInputError(f"columns missing from one of the files: {', '.join(absent)}")
    changed = [c for c in wanted if ref_kinds[c] != cur_kinds[c]]
    if changed:
        raise DriftInputError(
            "columns whose type differs between the files: "
            + ", ".join(f"{c} ({ref_kinds[c]} vs {cur_kinds[c]})" for c in changed)
        )
    compared = [c for c in wanted if ref_kinds[c] is not None]

    def task(name: str) -> tuple[ColumnProfile, ColumnDrift]:
        kind = ref_kinds[name]
        ref = profile_column(name, kind, pq.read_table(reference, columns=[name])[name])
        cur_column = pq.read_table(current, columns=[name])[name]
        cur = profile_column(name, kind, cur_column, exact=True)
        return ref, compare_columns(ref, cur, options)

    pairs = run_tasks(task, compared, client)
    ref_rows = pq.ParquetFile(reference).metadata.num_rows
    cur_rows = pq.ParquetFile(current).metadata.num_rows
    report = finish([d for _, d in pairs], options, ref_rows, cur_rows)
    report.skipped = [c for c in wanted if ref_kinds[c] is None]
    return report, Profile({p.name: p for p, _ in pairs}, rows=ref_rows)
