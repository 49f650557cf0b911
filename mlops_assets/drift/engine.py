"""Data drift: compare a current dataset with a reference, column by column.

    report = drift_files("reference.parquet", "current.parquet")       # two files
    report = compare_profiles(reference_profile, current_profile)     # a stored reference

Columns are independent tasks computed in parallel: on local threads by default (numpy and
Arrow release the GIL for the heavy parts), or on a Dask ``distributed`` cluster when a client
is given. Each task reads one column of each side (Parquet is columnar), so memory is bounded
by the largest columns being compared (one per core), not by the table.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_assets.drift import stattests as st
from mlops_assets.drift.profile import (
    ColumnProfile,
    DriftInputError,
    Profile,
    Undefined,
    column_kind,
    profile_column,
)
from mlops_assets.drift.registry import REGISTRY, ColumnTest, default_test, lookup

__all__ = ["DriftInputError", "DriftOptions", "compare_profiles", "drift_files"]

PLOT_BINS = 30
PLOT_CATEGORIES = 20
CORRECTIONS = ("none", "bh")


@dataclass(frozen=True)
class DriftOptions:
    """Which test and threshold each column gets, with Evidently's precedence: a column's own
    test beats its kind's (``num_stattest``, ``cat_stattest``, ``text_stattest``), which beats
    ``stattest``; None everywhere is Evidently's automatic choice. Thresholds likewise: a
    column's own, its kind's, ``threshold``, else the chosen test's default."""

    stattest: str | None = None
    per_column_stattest: dict[str, str] = field(default_factory=dict)
    num_stattest: str | None = None
    cat_stattest: str | None = None
    text_stattest: str | None = None
    threshold: float | None = None
    per_column_threshold: dict[str, float] = field(default_factory=dict)
    num_threshold: float | None = None
    cat_threshold: float | None = None
    text_threshold: float | None = None
    drift_share: float = 0.5
    correction: str = "none"  # "bh": Benjamini-Hochberg across the p-value tests
    # Which side's size chooses between tests and distances: Evidently looks at the
    # reference only ("reference"), so a small current window gets a distance whose chance
    # level exceeds its threshold; "smaller" looks at the smaller side (the daily monitor).
    select_by: str = "reference"
    # Evidently's exact numbers: every deliberate difference of this engine switched off.
    strict_evidently: bool = False
    text_columns: tuple[str, ...] = ()  # string columns compared as text, not categories

    def __post_init__(self) -> None:
        if self.select_by not in ("reference", "smaller"):
            raise DriftInputError(f"select_by must be reference or smaller, got {self.select_by!r}")
        for test in [self.stattest, *self.per_column_stattest.values()]:
            if test is not None:
                lookup(test)
        for kind, test in self._by_kind(self.num_stattest, self.cat_stattest, self.text_stattest):
            if test is not None:
                lookup(test, kind)
        thresholds = {
            "threshold": self.threshold,
            "num_threshold": self.num_threshold,
            "cat_threshold": self.cat_threshold,
            "text_threshold": self.text_threshold,
        }
        for column, threshold in self.per_column_threshold.items():
            thresholds[f"the threshold of column {column!r}"] = threshold
        for what, threshold in thresholds.items():
            if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
                raise DriftInputError(f"{what} must be a number >= 0, got {threshold}")
        if not 0 < self.drift_share <= 1:
            raise DriftInputError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.correction not in CORRECTIONS:
            raise DriftInputError(f"correction must be 'none' or 'bh', got {self.correction!r}")
        if self.strict_evidently and self.correction != "none":
            raise DriftInputError(
                "strict Evidently mode reports Evidently's p-values: it takes no correction"
            )

    @staticmethod
    def _by_kind(numerical, categorical, text) -> tuple:
        return (("numerical", numerical), ("categorical", categorical), ("text", text))

    def test_for(self, column: str, kind: str) -> str | None:
        """The test named for this column, or None for the automatic choice."""
        by_kind = dict(self._by_kind(self.num_stattest, self.cat_stattest, self.text_stattest))
        default = by_kind.get(kind) or self.stattest
        return self.per_column_stattest.get(column, default)

    def threshold_for(self, column: str, kind: str, test: ColumnTest) -> float:
        if column in self.per_column_threshold:
            return self.per_column_threshold[column]
        by_kind = dict(self._by_kind(self.num_threshold, self.cat_threshold, self.text_threshold))
        for threshold in (by_kind.get(kind), self.threshold):
            if threshold is not None:
                return threshold
        return test.default_threshold


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
            if not math.isfinite(row["score"]):  # undefined (strict: Evidently's NaN) or
                row["score"] = None  # overflowed: JSON has no NaN or Infinity
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
    if REGISTRY[c.test].p_value:
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
    kind, name = reference.kind, reference.name
    named = options.test_for(name, kind)
    forced = lookup(named, kind, name) if named else None
    if reference.rows == 0 or current.rows == 0:
        empty = "reference" if reference.rows == 0 else "current"
        if options.strict_evidently:  # Evidently's error, word for word
            raise DriftInputError(
                f"An empty column {name!r} was provided for drift calculation in the {empty} "
                "dataset."
            )
        test = forced or default_test(kind, reference.rows, 0 if kind == "text" else 6)
        threshold = options.threshold_for(name, kind, test)
        # Evidently raises on an empty column and loses the whole report; here the column is
        # reported as drifted (every value went missing, or all arrived at once), unless both
        # sides are empty: then nothing changed.
        drifted = reference.rows != current.rows
        score = float(drifted != test.p_value)  # p = 0 or distance 1 when drifted
        note = f"no values in the {empty} data" if drifted else "no values on either side"
        result = ColumnDrift(name, kind, test.name, score, threshold, drifted, note=note)
        return _describe(result, reference, current)
    counts = _aligned_counts(reference, current)
    distinct = len(counts.keys) if counts is not None else max(reference.distinct, current.distinct)
    size = reference.rows
    if options.select_by == "smaller" and not options.strict_evidently:
        size = min(reference.rows, current.rows)
    test = forced or default_test(kind, size, distinct)
    if test.needs == "raw" and reference.values is not None and not reference.sample.exact:
        raise DriftInputError(
            f"{test.name} needs every reference value of {name!r}; the stored reference "
            f"profile keeps {len(reference.values):,} quantiles of {reference.rows:,} rows"
        )
    threshold = options.threshold_for(name, kind, test)
    pair = st.Pair(reference, current, counts, options.strict_evidently)
    try:
        score = float(test.score(pair))
    except Undefined as why:  # no score for this column: not drifted, the note says why
        result = ColumnDrift(name, kind, test.name, math.nan, threshold, False, note=str(why))
        return _describe(result, reference, current, counts)
    drifted, note = test.verdict(pair, score, threshold)
    result = ColumnDrift(name, kind, test.name, score, threshold, drifted, note=note)
    return _describe(result, reference, current, counts)


def _aligned_counts(reference: ColumnProfile, current: ColumnProfile) -> st.Counts | None:
    """Counts of the union of both sides' values, or None when the reference has too many
    distinct numbers to keep them all (then it is binned instead)."""
    if reference.keys is None or reference.kind == "text":
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


def _describe(result: ColumnDrift, reference, current, counts=None) -> ColumnDrift:
    """Sizes, missing shares and the distribution plot's bins."""
    result.reference_rows, result.current_rows = reference.rows, current.rows
    result.reference_missing_share = reference.missing_share
    result.current_missing_share = current.missing_share
    if reference.rows == 0 or current.rows == 0 or reference.kind == "text":
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
        edges = st.bin_edges(lo, hi, PLOT_BINS)
        ref = st.weighted_histogram(reference.sample, edges) / reference.rows
        cur = st.weighted_histogram(current.sample, edges) / current.rows
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
        tested = [r for r in results if REGISTRY[r.test].p_value and not r.note]
        adjusted = st.benjamini_hochberg(np.array([r.score for r in tested]))
        for r, p in zip(tested, adjusted, strict=True):
            r.note = f"p = {r.score:.3g} before Benjamini-Hochberg"
            r.score = float(p)
            r.drifted = REGISTRY[r.test].drifted(r.score, r.threshold)
    return DriftReport(
        results, options.drift_share, reference_rows, current_rows, correction=options.correction
    )


def run_tasks(task: Callable, items: list, client=None) -> list:
    """``task(item)`` for every item, in parallel: on a Dask ``distributed`` client when one is
    given, else on local threads, one per core (numpy and Arrow release the GIL for the heavy
    parts). Locally a plain thread pool, not Dask's threaded scheduler: the tasks are
    independent, and ``dask.compute`` imports ``distributed`` (a quarter of a second) just to
    look for a client, which `mlops drift` would pay on every run."""
    if client is not None:
        return client.gather(client.map(task, items, pure=False))
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        return list(pool.map(task, items))
    finally:
        pool.shutdown(cancel_futures=True)  # a failed column: the columns not begun are dropped


# --- files -----------------------------------------------------------------------------------


def parquet_columns(path: Path) -> dict[str, str | None]:
    """Column name -> kind (None: a time or nested column, not compared)."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise DriftInputError(f"{path}: cannot read as Parquet: {error}") from error
    repeated = sorted(n for n, times in Counter(schema.names).items() if times > 1)
    if repeated:
        raise DriftInputError(f"{path}: repeated column name(s) {', '.join(map(repr, repeated))}")
    return {f.name: column_kind(f.type) for f in schema}


def open_parquet(path: Path, kinds: dict[str, str]) -> pq.ParquetFile:
    """A Parquet file to read the columns ``kinds`` (name -> kind) from, one at a time. Its
    categories are read as Parquet stores strings, dictionary encoded: counting them is then
    counting integer codes, not hashing every string. (A ``ParquetFile``, not
    ``pq.read_table``, which loads pyarrow.dataset and pandas.)"""
    categorical = [name for name, kind in kinds.items() if kind == "categorical"]
    return pq.ParquetFile(path, read_dictionary=categorical or None)


def read_column(parquet: pq.ParquetFile, name: str) -> pa.ChunkedArray:
    # One thread per read: the column groups are the parallel tasks already.
    return parquet.read(columns=[name], use_threads=False).column(0)


def column_groups(columns: list[str], cores: int) -> list[list[str]]:
    """The columns in a few interleaved groups (4 per core, for balance), so that each task
    opens each file once: opening parses the whole footer, which for a file of thousands of
    columns costs more than reading one of them."""
    count = min(len(columns), 4 * cores)
    return [columns[i::count] for i in range(count)]


def drift_files(
    reference: Path,
    current: Path,
    options: DriftOptions | None = None,
    *,
    columns: list[str] | None = None,
    client=None,
) -> DriftReport:
    """Drift between two Parquet files. Every reference value is at hand, so every test is
    exact: nothing is summarised to quantiles."""
    options = options or DriftOptions()
    ref_kinds, cur_kinds = parquet_columns(Path(reference)), parquet_columns(Path(current))
    wanted = columns or list(ref_kinds)
    # A column named in an option but absent (a typo) is refused: Evidently ignores it silently.
    named = dict.fromkeys([*wanted, *options.text_columns, *options.per_column_stattest,
                           *options.per_column_threshold])  # fmt: skip
    absent = [c for c in named if c not in cur_kinds or c not in ref_kinds]
    if absent:
        raise DriftInputError(f"columns missing from one of the files: {', '.join(absent)}")
    changed = [c for c in wanted if ref_kinds[c] != cur_kinds[c]]
    if changed:
        raise DriftInputError(
            "columns whose type differs between the files: "
            + ", ".join(f"{c} ({ref_kinds[c]} vs {cur_kinds[c]})" for c in changed)
        )
    for name in options.text_columns:
        if ref_kinds[name] != "categorical":
            raise DriftInputError(f"column {name!r} is {ref_kinds[name]}, not text")
        ref_kinds[name] = "text"
    compared = [c for c in wanted if ref_kinds[c] is not None]

    def task(names: list[str]) -> list[ColumnDrift]:
        kinds = {name: ref_kinds[name] for name in names}
        results = []
        with open_parquet(reference, kinds) as ref_file, open_parquet(current, kinds) as cur_file:
            for name, kind in kinds.items():  # one column in memory at a time
                ref = profile_column(name, kind, read_column(ref_file, name), exact=True)
                cur = profile_column(name, kind, read_column(cur_file, name), exact=True)
                results.append(compare_columns(ref, cur, options))
        return results

    cores = sum(client.nthreads().values()) if client is not None else os.cpu_count()
    groups = run_tasks(task, column_groups(compared, cores or 1), client)
    by_name = {result.column: result for group in groups for result in group}
    results = [by_name[name] for name in compared]
    ref_rows = pq.ParquetFile(reference).metadata.num_rows
    cur_rows = pq.ParquetFile(current).metadata.num_rows
    report = finish(results, options, ref_rows, cur_rows)
    report.skipped = [c for c in wanted if ref_kinds[c] is None]
    return report
