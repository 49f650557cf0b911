"""Dagster wiring of the model monitor, per model: its daily-partitioned drift report
``monitoring/<model>/drift_report``, its ``retrain_<model>_on_drift`` sensor and the identifier
check on the monitoring tables (:func:`build_monitor_defs`)."""

import dataclasses
import json
import warnings
from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field, ValidationError, create_model, model_validator

from mlops_assets.drift import report as drift_report_text
from mlops_assets.drift.engine import DriftOptions
from mlops_assets.drift.multivariate import DEFAULT_THRESHOLD
from mlops_assets.faults import crash_point
from mlops_assets.markdown import md_table, placement_metadata
from mlops_assets.monitoring.daily import (
    COLUMNS_TABLE,
    MONITOR_DRIFT_SHARE,
    REPORTS_TABLE,
    DayDrift,
    MonitorConfig,
    NoChampion,
    monitor_days,
    monitor_options,
    store,
)
from mlops_assets.ops.alerting import AlertsResource
from mlops_assets.parallel import Placement
from mlops_assets.partitions import LANDING_DAYS
from mlops_assets.resources import (
    WRITER_POOL,
    DaskResource,
    RegistryResource,
    WarehouseResource,
)
from mlops_assets.security.checks import build_identifier_checks
from mlops_assets.training.spec import ModelSpec, SpecError


def drift_key(spec: ModelSpec) -> dg.AssetKey:
    """The model's drift report asset: ``monitoring/<model>/drift_report``."""
    return dg.AssetKey(["monitoring", spec.name, "drift_report"])


def _model_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey(["models", spec.name])


def _table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


class DriftConfig(dg.Config):
    """The daily monitor's options. Which test and threshold a column gets, as in Evidently:
    its own (``per_column_*``), else its kind's (``num_``, ``cat_``, ``text_``), else the
    global one, else Evidently's choice and the test's default. Checked when the run starts:
    an unknown test, a test for the wrong kind or a bad threshold fails it with the reason."""

    stattest: str | None = Field(
        default=None, description="One test for every column (default: chosen per column)."
    )
    num_stattest: str | None = Field(default=None, description="The test of numerical columns.")
    cat_stattest: str | None = Field(default=None, description="The test of categorical columns.")
    text_stattest: str | None = Field(default=None, description="The test of text columns.")
    per_column_stattest: dict[str, str] = Field(
        default={}, description="A test for each listed column: {column: test}."
    )
    threshold: float | None = Field(default=None, description="Drift threshold of the tests.")
    num_threshold: float | None = Field(
        default=None, description="The threshold of numerical columns."
    )
    cat_threshold: float | None = Field(
        default=None, description="The threshold of categorical columns."
    )
    text_threshold: float | None = Field(default=None, description="The threshold of text columns.")
    per_column_threshold: dict[str, float] = Field(
        default={}, description="A threshold for each listed column: {column: threshold}."
    )
    drift_share: float = Field(
        default=MONITOR_DRIFT_SHARE, description="Share of drifted columns that is drift."
    )
    correction: str = Field(default="none", description="none, or bh (Benjamini-Hochberg).")
    strict_evidently: bool = Field(
        default=False,
        description="Evidently 0.7's exact numbers and errors: every deliberate difference off "
        "(tests are then chosen by the reference's size, as Evidently does).",
    )
    multivariate: bool = Field(default=True, description="Train a domain classifier per day.")
    domain_auc_threshold: float = Field(
        default=DEFAULT_THRESHOLD, description="Domain classifier ROC-AUC that is drift."
    )
    performance_window_days: int = Field(default=30, ge=1)
    min_labelled: int = Field(default=200, ge=10)
    performance_tolerance: float = Field(
        default=0.05, description="Classifier: ROC-AUC drop below its holdout's that is drift."
    )
    rmse_tolerance: float = Field(
        default=0.2,
        description="Regressor: RMSE rise over its holdout's, relative, that is drift.",
    )

    @model_validator(mode="after")
    def _valid_drift_options(self) -> "DriftConfig":
        self.drift_options()  # a DriftInputError is a ValueError: pydantic reports its message
        return self

    def drift_options(self) -> DriftOptions:
        """The fields that are drift options (the same names), on the monitor's defaults."""
        names = {f.name for f in dataclasses.fields(DriftOptions)} & set(type(self).model_fields)
        return monitor_options(**{name: getattr(self, name) for name in names})

    def monitor_config(self) -> MonitorConfig:
        return MonitorConfig(
            drift=self.drift_options(),
            multivariate=self.multivariate,
            domain_auc_threshold=self.domain_auc_threshold,
            performance_window_days=self.performance_window_days,
            min_labelled=self.min_labelled,
            performance_tolerance=self.performance_tolerance,
            rmse_tolerance=self.rmse_tolerance,
        )


def _plottable(summary: dict) -> dict:
    """Numbers and flags of one day, as metadata the UI plots over partitions."""
    out = {}
    for key in ("share_drifted_columns", "domain_classifier_auc"):
        if summary[key] is not None:
            out[key] = dg.MetadataValue.float(float(summary[key]))
    if summary["live_metric"] is not None:  # live_roc_auc or live_rmse
        live = f"live_{summary['performance_metric']}"
        out[live] = dg.MetadataValue.float(float(summary["live_metric"]))
    flags = ("drifted", "dataset_drift", "prediction_drift", "multivariate_drift")
    for key in (*flags, "performance_drift"):
        out[key] = dg.MetadataValue.bool(bool(summary[key]))
    out["rows"] = dg.MetadataValue.int(int(summary["rows"]))
    out["model_version"] = summary["model_version"]
    return out


def _report_rows(results: list[DayDrift]) -> list[list]:
    rows = []
    for result in results:
        summary = result.summary()
        flags = [k for k in ("dataset", "prediction", "multivariate", "performance")
                 if summary[f"{k}_drift"]]  # fmt: skip
        rows.append(
            [
                str(result.day),
                result.rows,
                _fmt(summary["share_drifted_columns"], "{:.0%}"),
                _fmt(summary["domain_classifier_auc"], "{:.3f}"),
                _fmt(summary["live_metric"], "{:.3f}"),
                ", ".join(flags) or "none",
            ]
        )
    return rows


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def model_drift_config(spec: ModelSpec) -> type[DriftConfig]:
    """The monitor's config with the model's declared defaults (``drift:`` in its defs.yaml):
    the launchpad shows them and a run's config overrides them. An unknown key or a bad option
    is refused when the code loads, not when a run starts."""
    if not spec.drift:
        return DriftConfig
    known = DriftConfig.model_fields
    unknown = sorted(set(spec.drift) - set(known))
    if unknown:
        raise SpecError(
            f"model {spec.name}: drift has no key {', '.join(map(repr, unknown))} (its keys: "
            f"{', '.join(known)})"
        )
    fields = {
        name: (
            known[name].annotation,
            Field(default=value, description=known[name].description, validate_default=True),
        )
        for name, value in spec.drift.items()
    }
    config = create_model(f"DriftConfig_{spec.name}", __base__=DriftConfig, **fields)
    try:
        config()
    except ValidationError as error:
        reasons = "; ".join(
            ": ".join([*map(str, e["loc"][:1]), e["msg"].removeprefix("Value error, ")])
            for e in error.errors()
        )
        raise SpecError(f"model {spec.name}: drift: {reasons}") from None
    return config


def build_drift_report(spec: ModelSpec) -> dg.AssetsDefinition:
    """The model's daily drift report asset."""
    key = drift_key(spec)

    def drift_report(
        context: dg.AssetExecutionContext,
        config: DriftConfig,
        warehouse: WarehouseResource,
        registry: RegistryResource,
        dask: DaskResource,
        alerts: AlertsResource,
    ):
        days = [date.fromisoformat(partition) for partition in context.partition_keys]
        placement = Placement()
        with warehouse.connect() as con:
            try:
                results = monitor_days(
                    con,
                    registry.open(),
                    spec,
                    days,
                    config.monitor_config(),
                    client_factory=dask.client,
                    placement=placement,
                    has_scheduler=dask.has_scheduler,
                )
            except NoChampion as reason:
                context.log.warning(f"drift report skipped: {reason}")
                return
            if store(con, spec.name, results):
                context.log.warning(
                    f"{REPORTS_TABLE} and {COLUMNS_TABLE} predated per-model reports: rebuilt "
                    "from these days (materialize earlier days again to restore them)"
                )
            crash_point("drift.stored")
        reports_dir = Path(registry.reports_path) / "drift" / spec.name
        reports_dir.mkdir(parents=True, exist_ok=True)
        for result in results:
            # One observation per day, so the UI plots each day's numbers even when a
            # backfill materializes a range of days in one run.
            context.log_event(
                dg.AssetObservation(
                    asset_key=key,
                    partition=str(result.day),
                    metadata=_plottable(result.summary()),
                )
            )
            if result.report:
                title = f"{spec.name}: drift on {result.day}"
                html = drift_report_text.to_html(result.report, title)
                (reports_dir / f"{result.day}.html").write_text(html)
        drifted = [r for r in results if r.drifted]
        if drifted:
            alerts.send(
                "drift",
                f"{spec.name}: drift on {len(drifted)} of {len(results)} days "
                f"({drifted[0].day} … {drifted[-1].day}), champion {drifted[0].model_version}",
                {
                    "model": spec.name,
                    "days": [_alert_row(r) for r in drifted],
                    "reports": str(reports_dir),
                },
                logger=context.log,
            )
        last = results[-1]
        header = ["day", "rows", "drifted columns", "domain AUC", "live metric", "drift"]
        metadata = {
            **_plottable(last.summary()),
            "days": dg.MetadataValue.md(md_table(header, _report_rows(results)[-60:])),
            "drifted_days": dg.MetadataValue.int(sum(r.drifted for r in results)),
            "placement": placement_metadata(placement),
            "dagster/table_name": REPORTS_TABLE,
        }
        if last.report:
            metadata["latest"] = dg.MetadataValue.md(drift_report_text.markdown(last.report))
            metadata["html_report"] = dg.MetadataValue.path(str(reports_dir / f"{last.day}.html"))
        yield dg.MaterializeResult(metadata=metadata)

    drift_report.__annotations__["config"] = model_drift_config(spec)
    with warnings.catch_warnings():
        # Single-run backfills (beta) let one run report a whole range of days.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(
            key=key,
            deps=[_table_key(spec.table), _table_key(spec.scores)],
            partitions_def=LANDING_DAYS,
            backfill_policy=dg.BackfillPolicy.single_run(),
            group_name="monitoring",
            pool=WRITER_POOL,
            output_required=False,
            kinds={"duckdb", "dask"},
            description=f"Each day's rows of {spec.table} ({spec.name}'s inputs and champion "
            "scores) against the champion's training reference: per-column drift (Evidently's "
            "DataDriftPreset tests), a domain classifier, prediction drift and, once labels "
            "arrive, performance drift "
            f"({'ROC-AUC' if spec.is_classifier else 'RMSE'} against the holdout's). Rows in "
            f"{REPORTS_TABLE} and {COLUMNS_TABLE} (model = {spec.name}); HTML reports under "
            f"$MLOPS_HOME/reports/drift/{spec.name}/.",
        )(drift_report)


def _alert_row(result: DayDrift) -> dict:
    summary = result.summary()
    keys = ("dataset_drift", "share_drifted_columns", "performance_drift", "live_metric")
    return {"day": str(result.day), **{k: summary[k] for k in keys}}


class RetrainCursor:
    """Sensor state: the last observation read, whether a drift episode is open, and the day of
    the last retraining."""

    def __init__(self, text: str | None) -> None:
        state = json.loads(text) if text else {}
        self.after: str | None = state.get("after")
        self.episode: bool = state.get("episode", False)
        self.last_trigger: str | None = state.get("last_trigger")

    def dumps(self) -> str:
        return json.dumps(
            {"after": self.after, "episode": self.episode, "last_trigger": self.last_trigger}
        )


COOLDOWN_DAYS = 7


def episodes(observations: list[tuple[str, bool]], cursor: RetrainCursor) -> list[str]:
    """The days (partition keys) that start a drift episode and retrain: a drifted day after a
    clean one, at least ``COOLDOWN_DAYS`` after the last retraining. Updates ``cursor``."""
    triggers = []
    for day, drifted in observations:
        if not drifted:
            cursor.episode = False
            continue
        if cursor.episode:
            continue
        cursor.episode = True
        last = cursor.last_trigger
        if last and (date.fromisoformat(day) - date.fromisoformat(last)).days < COOLDOWN_DAYS:
            continue
        cursor.last_trigger = day
        triggers.append(day)
    return triggers


def drift_observations(instance: dg.DagsterInstance, key: dg.AssetKey, cursor: RetrainCursor):
    """The (day, drifted) of the drift report observations after the cursor, and the records'
    cursor (None when there are none)."""
    result = instance.fetch_observations(key, limit=1000, cursor=cursor.after, ascending=True)
    observations = []
    for record in result.records:
        observation = record.asset_observation
        metadata = observation.metadata
        drifted = any(
            metadata[k].value for k in ("dataset_drift", "performance_drift") if k in metadata
        )
        observations.append((observation.partition, drifted))
    return observations, result.cursor if result.records else None


def build_retrain_sensor(spec: ModelSpec) -> dg.SensorDefinition:
    """Retrains the model and re-scores when a day of its drift report shows dataset or
    performance drift: once per drift episode, at most once per ``COOLDOWN_DAYS`` of data."""
    key = drift_key(spec)

    def retrain_on_drift(context: dg.SensorEvaluationContext):
        cursor = RetrainCursor(context.cursor)
        observations, after = drift_observations(context.instance, key, cursor)
        triggers = episodes(observations, cursor)
        if after:
            cursor.after = after
        # Episodes found together (a backfill of past days) would retrain on the same data:
        # one run, keyed by the latest of them.
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"drift-{triggers[-1]}",
                    tags={"mlops/trigger": f"{spec.name} drift on {', '.join(triggers)}"},
                )
            ]
            if triggers
            else [],
            skip_reason=None
            if triggers
            else f"no new drift episode in {len(observations)} new drift reports",
            cursor=cursor.dumps(),
        )

    return dg.sensor(
        name=f"retrain_{spec.name}_on_drift",
        # The drift report is partitioned by day and follows with the next daily run.
        asset_selection=dg.AssetSelection.assets(_model_key(spec), _table_key(spec.scores)),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retrains {spec.name} and re-scores {spec.scores} when a day's drift "
        "report shows dataset drift or performance drift: once per drift episode, at most once "
        f"per {COOLDOWN_DAYS} days of data.",
    )(retrain_on_drift)


def build_monitor_defs(spec: ModelSpec, identifier_names: frozenset[str]) -> dg.Definitions:
    """The model's monitor: its daily drift report, its retrain-on-drift sensor and the
    identifier check on the monitoring tables it writes (no column named like one of
    ``identifier_names``, every feed's, and no identifier-shaped value)."""
    report = build_drift_report(spec)
    checks = build_identifier_checks(
        [report.key], identifier_names, tables_of={report.key: [REPORTS_TABLE, COLUMNS_TABLE]}
    )
    return dg.Definitions(
        assets=[report], sensors=[build_retrain_sensor(spec)], asset_checks=[checks]
    )
