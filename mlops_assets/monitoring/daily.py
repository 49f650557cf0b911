"""Daily monitoring of a model's champion: each day's rows of the model's table (its inputs and
champion scores) against the champion's training reference, and its live performance once
labels arrive (ROC-AUC for a classifier, RMSE for a regressor, against the holdout's).

Results of every model go to two warehouse tables, replaced per model and day (a re-run of a
day replaces that model's rows of that day):

    monitoring.drift_reports   one row per model and day: verdicts and scores
    monitoring.drift_columns   one row per model, day and column: test, score, threshold, drifted

Tables written before reports were per model (no ``model`` column) are rebuilt: they are
derived data, and re-materializing the days restores them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import groupby
from operator import itemgetter

import duckdb
import numpy as np
import pandas as pd

from mlops_assets.drift.engine import DriftOptions, DriftReport, compare_profiles
from mlops_assets.drift.multivariate import DEFAULT_THRESHOLD, domain_classifier
from mlops_assets.drift.profile import DriftInputError, Profile, profile_frame
from mlops_assets.features.validation import table_exists
from mlops_assets.monitoring.reference import PROFILE_FILE, SAMPLE_FILE, SCORE
from mlops_assets.parallel import Placement, map_chunks
from mlops_assets.sql import ident, table
from mlops_assets.training.dataset import labelled_filter
from mlops_assets.training.registry import Registry, RegistryError
from mlops_assets.training.spec import ModelSpec
from mlops_assets.warehouse import replace_rows

REPORTS_TABLE = "monitoring.drift_reports"
COLUMNS_TABLE = "monitoring.drift_columns"
TABLE_COLUMNS = {
    REPORTS_TABLE: "model varchar, day date, model_version varchar, rows bigint, "
    "dataset_drift boolean, share_drifted_columns double, n_drifted_columns bigint, "
    "n_columns bigint, prediction_drift boolean, domain_classifier_auc double, "
    "multivariate_drift boolean, performance_metric varchar, live_metric double, "
    "holdout_metric double, labelled bigint, performance_drift boolean, drifted boolean, "
    "created_at timestamp with time zone",
    COLUMNS_TABLE: "model varchar, day date, model_version varchar, column_name varchar, "
    "kind varchar, test varchar, score double, threshold double, drifted boolean",
}


# A day of ~1,000 applications where a quarter of the 28 compared columns drift is a real
# shift (on the demo data: at most 14 % before the drift day, at least 29 % after it);
# Evidently's 0.5 would wait for 15 columns. `mlops drift` keeps Evidently's 0.5.
MONITOR_DRIFT_SHARE = 0.25


def monitor_options(**overrides) -> DriftOptions:
    """The daily monitor's drift options: a quarter of the columns, and tests chosen by the
    smaller side, so a quiet day (a few dozen applications) gets statistical tests that
    account for its size instead of distances whose chance level is above their threshold."""
    return DriftOptions(**{"drift_share": MONITOR_DRIFT_SHARE, "select_by": "smaller", **overrides})


@dataclass(frozen=True)
class MonitorConfig:
    drift: DriftOptions = field(default_factory=monitor_options)
    multivariate: bool = True
    domain_auc_threshold: float = DEFAULT_THRESHOLD
    performance_window_days: int = 30
    min_labelled: int = 200  # labelled rows needed to judge live performance
    performance_tolerance: float = 0.05  # classifier: ROC-AUC drop below the holdout's
    rmse_tolerance: float = 0.2  # regressor: RMSE rise over the holdout's, relative


def performance_metric(spec: ModelSpec) -> str:
    """The metric live performance is judged on: ROC-AUC (classifier) or RMSE (regressor)."""
    return "roc_auc" if spec.is_classifier else "rmse"


@dataclass
class DayDrift:
    day: date
    model_version: str
    rows: int
    report: DriftReport | None  # None: no applications that day
    performance: dict = field(default_factory=dict)

    @property
    def dataset_drift(self) -> bool:
        return bool(self.report and self.report.dataset_drift)

    @property
    def prediction_drift(self) -> bool:
        return bool(
            self.report and any(c.drifted for c in self.report.columns if c.column == SCORE)
        )

    @property
    def multivariate_drift(self) -> bool:
        return bool(
            self.report and self.report.multivariate and self.report.multivariate["drifted"]
        )

    @property
    def drifted(self) -> bool:
        """What retrains: dataset drift or performance drift. The domain classifier is
        reported, not acted on: it also learns features that move with time by design."""
        return self.dataset_drift or self.performance_drift

    @property
    def performance_drift(self) -> bool:
        return bool(self.performance.get("drifted"))

    def summary(self) -> dict:
        report = self.report
        multivariate = (report.multivariate or {}) if report else {}
        return {
            "day": self.day,
            "model_version": self.model_version,
            "rows": self.rows,
            "dataset_drift": self.dataset_drift,
            "share_drifted_columns": report.share_drifted_columns if report else None,
            "n_drifted_columns": report.n_drifted_columns if report else None,
            "n_columns": report.n_columns if report else None,
            "prediction_drift": self.prediction_drift,
            "domain_classifier_auc": multivariate.get("score"),
            "multivariate_drift": self.multivariate_drift,
            "performance_metric": self.performance.get("metric"),
            "live_metric": self.performance.get("live"),
            "holdout_metric": self.performance.get("holdout"),
            "labelled": self.performance.get("labelled", 0),
            "performance_drift": self.performance_drift,
            "drifted": self.drifted,
        }


class NoChampion(RuntimeError):
    """There is no champion (or no scores) to monitor yet."""


# Days go to Dask workers from this many days and this many rows of them (unless a scheduler
# address is set: that cluster is running already). Fewer run on the step's threads: on 2 cores
# 9 days of ~1,100 rows took 2.1-2.4 s there against 3.2-3.4 s on workers started for them, 18
# days 3.3-3.5 s against 3.8-4.0 s, and a LocalCluster's start costs ~7 CPU-seconds; from about
# 40,000 rows the workers are quicker (36 days: 3.0-4.2 s warm against 5.5-6.9 s), the
# domain classifier's fits holding the GIL.
PARALLEL_FROM_DAYS = 8
PARALLEL_FROM_ROWS = 25_000


def drifts_on_cluster(days: int, rows: Callable[[], int], *, has_scheduler: bool) -> bool:
    """Whether ``days`` days go to the Dask cluster (see :data:`PARALLEL_FROM_DAYS`);
    ``rows()`` counts their rows, asked only when it decides; ``has_scheduler``: a scheduler
    address is set (:attr:`DaskResource.has_scheduler`)."""
    return days >= PARALLEL_FROM_DAYS and (has_scheduler or rows() >= PARALLEL_FROM_ROWS)


def monitor_days(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    spec: ModelSpec,
    days: list[date],
    config: MonitorConfig,
    client_factory=None,
    placement: Placement | None = None,
    *,
    has_scheduler: bool = False,
) -> list[DayDrift]:
    """Drift of each of ``days`` of ``spec``'s table against its champion's reference. With
    enough days and rows (:func:`drifts_on_cluster`; ``has_scheduler``: the client's cluster
    is at a scheduler address), days are Dask tasks on the client ``client_factory()`` gives
    (a context manager, such as ``DaskResource.client``): the reference is sent to the workers
    once, each task gets its day's rows. Else they run on this process's threads. One result
    per day, in day order."""
    days = sorted(set(days))
    version = registry.champion(spec.name)
    if version is None or not table_exists(con, spec.scores):
        raise NoChampion(f"{spec.name} has no champion and scores yet: nothing to monitor")
    try:
        reference = Profile.load(registry.attachment(spec.name, version, PROFILE_FILE))
        sample = pd.read_parquet(registry.attachment(spec.name, version, SAMPLE_FILE))
    except RegistryError as error:
        raise NoChampion(f"champion {version} has no drift reference: {error}") from error
    # An option for a column the champion does not have (a typo) is refused, not ignored.
    named = {*config.drift.per_column_stattest, *config.drift.per_column_threshold}
    unknown = sorted(named - set(reference.columns))
    if unknown:
        raise DriftInputError(
            f"drift options name columns that {spec.name}'s champion {version} does not "
            f"monitor: {', '.join(map(repr, unknown))}"
        )
    card = registry.card(spec.name, version).data
    labelled = _labelled(con, spec, version, card)
    # The champion's own inputs, as its reference profiled them (the table may have changed).
    features = [name for name in reference.columns if name != SCORE]
    frames = day_frames(con, spec, features, days)
    use_cluster = client_factory is not None and drifts_on_cluster(
        len(days), lambda: _rows_of(con, spec, days), has_scheduler=has_scheduler
    )
    with client_factory() if use_cluster else contextlib.nullcontext() as client:
        reports = list(
            map_chunks(
                day_report,
                frames,
                shared=(reference, sample, config),
                client=client,
                placement=placement,
            )
        )
    metric = performance_metric(spec)
    return [
        DayDrift(day, version, rows, report, _performance(labelled, day, card, config, metric))
        for day, (rows, report) in zip(days, reports, strict=True)
    ]


def day_report(
    current: pd.DataFrame, reference: Profile, sample: pd.DataFrame, config: MonitorConfig
) -> tuple[int, DriftReport | None]:
    """One day's rows against the reference: every column the reference profiles (the model's
    inputs and its score), then the domain classifier on the inputs. Returns the day's rows
    and the report (None for a day without rows)."""
    if current.empty:
        return 0, None
    kinds = {name: column.kind for name, column in reference.columns.items()}
    report = compare_profiles(
        reference, profile_frame(current, kinds, exact=True), config.drift, parallel=False
    )
    if config.multivariate:
        features = [name for name in kinds if name != SCORE]
        report.multivariate = domain_classifier(
            sample[features], current[features], threshold=config.domain_auc_threshold
        )
    return len(current), report


def _rows_of(con: duckdb.DuckDBPyConnection, spec: ModelSpec, days: list[date]) -> int:
    """The rows of ``spec``'s table on ``days``."""
    return con.execute(
        f"select count(*) from {table(spec.table)} "
        f"where cast({ident(spec.time_column)} as date) in (select unnest(?::date[]))",
        [days],
    ).fetchone()[0]


BATCH_VECTORS = 16  # DuckDB vectors (2,048 rows each) converted to pandas at a time


def day_frames(
    con: duckdb.DuckDBPyConnection, spec: ModelSpec, features: list[str], days: list[date]
) -> Iterator[pd.DataFrame]:
    """The inputs and champion scores of each of ``days`` (sorted), one frame a day (empty on
    a day without rows). One query over the days' range, sorted by day and converted a batch
    at a time, so memory follows a batch and a day, not the range."""
    columns_sql = ", ".join(f"f.{ident(c)}" for c in features)
    time_sql, key_sql = ident(spec.time_column), ident(spec.id_column)
    first = days[0]
    result = con.execute(
        f"""
        select date_diff('day', ?::date, cast(f.{time_sql} as date)) as _day, {columns_sql},
            s.score as {ident(SCORE)}
        from {table(spec.table)} as f
        join {table(spec.scores)} as s on s.{key_sql} = f.{key_sql} and s.mode = 'champion'
        where cast(f.{time_sql} as date) between ? and ?
        order by _day
        """,
        [first, first, days[-1]],
    )
    groups = groupby(_runs(result), key=itemgetter(0))
    group = next(groups, None)
    for day in days:
        number = (day - first).days
        while group is not None and group[0] < number:  # a day in the range not asked for
            group = next(groups, None)
        if group is None or group[0] > number:
            yield pd.DataFrame(columns=[*features, SCORE])
            continue
        parts = [piece for _, piece in group[1]]
        group = next(groups, None)
        frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        yield frame.drop(columns="_day").reset_index(drop=True)


def _runs(result: duckdb.DuckDBPyConnection) -> Iterator[tuple[int, pd.DataFrame]]:
    """(day number, rows) of each run of one day in each batch of a result sorted by day."""
    while not (batch := result.fetch_df_chunk(BATCH_VECTORS)).empty:
        numbers = batch["_day"].to_numpy()
        bounds = [*np.flatnonzero(numbers[1:] != numbers[:-1]) + 1, len(numbers)]
        start = 0
        for stop in bounds:
            yield int(numbers[start]), batch.iloc[start:stop]
            start = stop


def _labelled(con, spec: ModelSpec, version: str, card: dict) -> pd.DataFrame:
    """Labelled rows the champion never saw (after its training data), with their target as a
    number and their champion scores."""
    until = card.get("applied_until") or card["split_at"]
    condition_sql, params = labelled_filter(spec, alias="f")
    time_sql, key_sql = ident(spec.time_column), ident(spec.id_column)
    return con.execute(
        f"""
        select cast(f.{time_sql} as date) as day, cast(f.{ident(spec.target)} as double) as y,
            s.score
        from {table(spec.table)} as f
        join {table(spec.scores)} as s on s.{key_sql} = f.{key_sql}
            and s.mode = 'champion' and s.model_version = ?
        where {condition_sql} and f.{time_sql} > cast(? as timestamp)
        """,
        [version, *params, until],
    ).df()


def _performance(
    labelled: pd.DataFrame, day: date, card: dict, config: MonitorConfig, metric: str
) -> dict:
    """The champion's ``metric`` (roc_auc or rmse) on the labelled rows of the trailing window
    ending ``day``, against its holdout's: drift when ROC-AUC drops by more than
    ``performance_tolerance``, or RMSE rises by more than ``rmse_tolerance`` of the holdout's."""
    start = np.datetime64(day - timedelta(days=config.performance_window_days - 1))
    labelled_days = labelled["day"].to_numpy()
    window = labelled[(labelled_days >= start) & (labelled_days <= np.datetime64(day))]
    holdout = card["metrics"][metric]
    result = {"metric": metric, "labelled": len(window), "holdout": holdout}
    if len(window) < config.min_labelled:
        return result
    if metric == "roc_auc":
        if window["y"].nunique() < 2:
            return result
        from sklearn.metrics import roc_auc_score

        live = float(roc_auc_score(window["y"], window["score"]))
        drifted = holdout - live > config.performance_tolerance
    else:
        live = float(np.sqrt(np.mean((window["y"] - window["score"]) ** 2)))
        drifted = not math.isclose(holdout, 0.0) and (
            (live - holdout) / holdout > config.rmse_tolerance
        )
    result.update(live=live, change=live - holdout, drifted=bool(drifted))
    return result


def store(con: duckdb.DuckDBPyConnection, model: str, results: list[DayDrift]) -> bool:
    """Replace ``model``'s rows of these days in the monitoring tables, in one transaction.
    Tables from before reports were per model are dropped first (they are rebuilt as days are
    materialized again): returns whether that happened."""
    summaries = pd.DataFrame([r.summary() for r in results])
    names = [part.strip().split()[0] for part in TABLE_COLUMNS[COLUMNS_TABLE].split(",")]
    columns = pd.DataFrame(
        [
            {
                "day": r.day,
                "model_version": r.model_version,
                "column_name": c.column,
                "kind": c.kind,
                "test": c.test,
                "score": c.score,
                "threshold": c.threshold,
                "drifted": c.drifted,
            }
            for r in results
            if r.report
            for c in r.report.columns
        ],
        columns=names[1:],
    )
    summaries.insert(0, "model", model)
    columns.insert(0, "model", model)
    summaries["created_at"] = pd.Timestamp.now(tz="UTC")
    rebuilt = _drop_unnamed_tables(con)
    days = [r.day for r in results]
    tables = ((REPORTS_TABLE, summaries), (COLUMNS_TABLE, columns))
    replace_rows(
        con,
        {name: (TABLE_COLUMNS[name], frame) for name, frame in tables},
        "model = ? and day in (select unnest(?::date[]))",
        [model, days],
    )
    return rebuilt


def _drop_unnamed_tables(con: duckdb.DuckDBPyConnection) -> bool:
    """Drop the monitoring tables when they predate the ``model`` column."""
    schema, name = REPORTS_TABLE.split(".")
    columns = {
        c
        for (c,) in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [schema, name],
        ).fetchall()
    }
    if not columns or "model" in columns:
        return False
    for dotted in (REPORTS_TABLE, COLUMNS_TABLE):
        con.execute(f"drop table if exists {table(dotted)}")
    return True


def drifted_days(con: duckdb.DuckDBPyConnection, first: date, last: date) -> dict[str, list[date]]:
    """Model -> the days between ``first`` and ``last`` whose report retrains (``drifted``)."""
    if not table_exists(con, REPORTS_TABLE):
        return {}
    rows = con.execute(
        f"select model, day from {table(REPORTS_TABLE)} where drifted "
        "and day between ? and ? order by model, day",
        [first, last],
    ).fetchall()
    result: dict[str, list[date]] = {}
    for model, day in rows:
        result.setdefault(model, []).append(day)
    return result
