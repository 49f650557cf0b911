"""Dagster wiring of monitoring: the daily-partitioned `monitoring/drift_report` asset and the
`retrain_on_drift` sensor."""

import json
import warnings
from datetime import date

import dagster as dg
from pydantic import Field

from mlops_assets.ops.alerts import alert
from mlops_assets.faults import crash_point
from mlops_assets.features.assets import FEATURES_KEY
from mlops_assets.ingestion.assets import landing_days
from mlops_assets.markdown import md_table, placement_metadata
from mlops_assets.drift import report as drift_report_text
from mlops_assets.monitoring.daily import (
    MONITOR_DRIFT_SHARE,
    REPORTS_TABLE,
    MonitorConfig,
    NoChampion,
    monitor_days,
    monitor_options,
    store,
)
from mlops_assets.ops.health import ASSETS_TABLE, HEALTH_KEY, RUNS_TABLE, record_run
from mlops_assets.drift.multivariate import DEFAULT_THRESHOLD
from mlops_assets.parallel import Placement
from mlops_assets.resources import (
    WRITER_POOL,
    DaskResource,
    RegistryResource,
    WarehouseResource,
)
from mlops_assets.settings import get_settings
from mlops_assets.training.assets import SCORES_KEY
from mlops_assets.warehouse import connection as warehouse_connection

DRIFT_KEY = dg.AssetKey(["monitoring", "drift_report"])
# What a drift episode retrains: both models and the scores (the drift report is partitioned
# by day and follows with the next daily run).
RETRAIN = dg.AssetSelection.assets(
    dg.AssetKey(["models", "default_classifier"]),
    dg.AssetKey(["models", "loss_regressor"]),
    SCORES_KEY,
)


class DriftConfig(dg.Config):
    stattest: str | None = Field(
        default=None, description="One test for every column (default: chosen per column)."
    )
    threshold: float | None = Field(default=None, description="Drift threshold of the tests.")
    drift_share: float = Field(
        default=MONITOR_DRIFT_SHARE, description="Share of drifted columns that is drift."
    )
    correction: str = Field(default="none", description="none, or bh (Benjamini-Hochberg).")
    multivariate: bool = Field(default=True, description="Train a domain classifier per day.")
    domain_auc_threshold: float = Field(
        default=DEFAULT_THRESHOLD, description="Domain classifier ROC-AUC that is drift."
    )
    performance_window_days: int = Field(default=30, ge=1)
    min_labelled: int = Field(default=200, ge=10)
    performance_tolerance: float = Field(
        default=0.05, description="ROC-AUC drop below the champion's holdout that is drift."
    )

    def monitor_config(self) -> MonitorConfig:
        return MonitorConfig(
            drift=monitor_options(
                stattest=self.stattest,
                threshold=self.threshold,
                drift_share=self.drift_share,
                correction=self.correction,
            ),
            multivariate=self.multivariate,
            domain_auc_threshold=self.domain_auc_threshold,
            performance_window_days=self.performance_window_days,
            min_labelled=self.min_labelled,
            performance_tolerance=self.performance_tolerance,
        )


def _plottable(summary: dict) -> dict:
    """Numbers and flags of one day, as metadata the UI plots over partitions."""
    out = {}
    for key in ("share_drifted_columns", "domain_classifier_auc", "live_roc_auc"):
        if summary[key] is not None:
            out[key] = dg.MetadataValue.float(float(summary[key]))
    flags = ("drifted", "dataset_drift", "prediction_drift", "multivariate_drift")
    for key in (*flags, "performance_drift"):
        out[key] = dg.MetadataValue.bool(bool(summary[key]))
    out["rows"] = dg.MetadataValue.int(int(summary["rows"]))
    out["model_version"] = summary["model_version"]
    return out


def _drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    warehouse: WarehouseResource,
    registry: RegistryResource,
    dask: DaskResource,
):
    days = [date.fromisoformat(key) for key in context.partition_keys]
    placement = Placement()
    with warehouse.connect() as con:
        try:
            results = monitor_days(
                con,
                registry.open(),
                days,
                config.monitor_config(),
                client_factory=dask.client,
                placement=placement,
            )
        except NoChampion as reason:
            context.log.warning(f"drift report skipped: {reason}")
            return
        store(con, results)
        crash_point("drift.stored")
    reports_dir = get_settings().reports_dir / "drift"
    reports_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for result in results:
        summary = result.summary()
        # One observation per day, so the UI plots each day's numbers even when a backfill
        # materializes a range of days in one run.
        context.log_event(
            dg.AssetObservation(
                asset_key=DRIFT_KEY, partition=str(result.day), metadata=_plottable(summary)
            )
        )
        if result.report:
            path = reports_dir / f"{result.day}.html"
            path.write_text(drift_report_text.to_html(result.report, f"Drift on {result.day}"))
        flags = [k for k in ("dataset", "prediction", "multivariate", "performance")
                 if summary[f"{k}_drift"]]  # fmt: skip
        rows.append(
            [
                str(result.day),
                result.rows,
                "-"
                if summary["share_drifted_columns"] is None
                else f"{summary['share_drifted_columns']:.0%}",
                "-"
                if summary["domain_classifier_auc"] is None
                else f"{summary['domain_classifier_auc']:.3f}",
                "-" if summary["live_roc_auc"] is None else f"{summary['live_roc_auc']:.3f}",
                ", ".join(flags) or "none",
            ]
        )
    drifted = [r for r in results if r.drifted]
    if drifted:
        alert(
            "drift",
            f"drift on {len(drifted)} of {len(results)} days "
            f"({drifted[0].day} … {drifted[-1].day}), champion {drifted[0].model_version}",
            {"days": [_alert_row(r) for r in drifted], "reports": str(reports_dir)},
            logger=context.log,
        )
    last = results[-1]
    metadata = {
        **_plottable(last.summary()),
        "days": dg.MetadataValue.md(
            md_table(
                ["day", "rows", "drifted columns", "domain AUC", "live ROC-AUC", "drift"],
                rows[-60:],
            )
        ),
        "drifted_days": dg.MetadataValue.int(sum(r.drifted for r in results)),
        "placement": placement_metadata(placement),
        "dagster/table_name": REPORTS_TABLE,
    }
    if last.report:
        metadata["latest"] = dg.MetadataValue.md(drift_report_text.markdown(last.report))
        metadata["html_report"] = dg.MetadataValue.path(str(reports_dir / f"{last.day}.html"))
    yield dg.MaterializeResult(metadata=metadata)


with warnings.catch_warnings():
    # Single-run backfills (beta) let one run report a whole range of days.
    warnings.simplefilter("ignore", dg.BetaWarning)
    drift_report = dg.asset(
        key=DRIFT_KEY,
        # raw/applications, day for day: each report covers that landing day's applications,
        # and a backfill of the raw days ("Materialize all" in the UI) includes the reports.
        deps=[FEATURES_KEY, SCORES_KEY, dg.AssetKey(["raw", "applications"])],
        partitions_def=landing_days,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="monitoring",
        pool=WRITER_POOL,
        output_required=False,
        kinds={"duckdb", "dask"},
        description="Each day's applications (features and champion scores) against the "
        "champion's training reference: per-column drift (Evidently's DataDriftPreset tests), "
        "a domain classifier, prediction drift and, once labels arrive, performance drift. "
        f"Rows in {REPORTS_TABLE}; HTML reports under $MLOPS_HOME/reports/drift/.",
    )(_drift_report)


def _alert_row(result) -> dict:
    summary = result.summary()
    keys = ("dataset_drift", "share_drifted_columns", "performance_drift", "live_roc_auc")
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


@dg.sensor(
    name="retrain_on_drift",
    asset_selection=RETRAIN,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains both models and re-scores when a day's drift report shows dataset "
    "drift or performance drift: once per drift episode, at most once per "
    f"{COOLDOWN_DAYS} days of data.",
)
def retrain_on_drift(context: dg.SensorEvaluationContext):
    cursor = RetrainCursor(context.cursor)
    result = context.instance.fetch_observations(
        DRIFT_KEY, limit=1000, cursor=cursor.after, ascending=True
    )
    observations = []
    for record in result.records:
        observation = record.asset_observation
        metadata = observation.metadata
        drifted = any(
            metadata[key].value for key in ("dataset_drift", "performance_drift") if key in metadata
        )
        observations.append((observation.partition, drifted))
    triggers = episodes(observations, cursor)
    if result.records:
        cursor.after = result.cursor
    # Episodes found together (a backfill of past days) would retrain on the same data: one
    # run, keyed by the latest of them.
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-{triggers[-1]}",
                tags={"mlops/trigger": f"drift on {', '.join(triggers)}"},
            )
        ]
        if triggers
        else [],
        skip_reason=None
        if triggers
        else f"no new drift episode in {len(observations)} new drift reports",
        cursor=cursor.dumps(),
    )


pipeline_runs = dg.AssetSpec(
    HEALTH_KEY,
    group_name="monitoring",
    kinds={"duckdb"},
    description=f"Pipeline health, one record per run: `{RUNS_TABLE}` (status, duration, rows "
    f"quarantined, checks) and `{ASSETS_TABLE}` (per asset: step duration, rows in and out, "
    "quarantine rate, checks). Written after every run by `mlops run` and by the "
    "`record_pipeline_health` sensor.",
    metadata={"dagster/table_name": RUNS_TABLE},
)


def _record_health(context: dg.RunStatusSensorContext) -> None:
    settings = get_settings()
    if not settings.warehouse_path.exists():
        return
    run_id = context.dagster_run.run_id
    # A writer may hold the lock: wait a while; a tick that fails is evaluated again.
    with warehouse_connection(settings.warehouse_path, wait_seconds=30) as con:
        materialization = record_run(context.instance, run_id, con)
    context.instance.report_runless_asset_event(materialization)


def _health_sensor(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    return dg.run_status_sensor(
        run_status=status,
        name=f"record_pipeline_health_{status.value.lower()}",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records every {status.value.lower()} run in {RUNS_TABLE} and {ASSETS_TABLE}.",
    )(_record_health)


monitoring_assets = [drift_report]
monitoring_specs = [pipeline_runs]
monitoring_sensors = [
    retrain_on_drift,
    *(_health_sensor(s) for s in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)),
]
