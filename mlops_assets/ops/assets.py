"""Dagster wiring of pipeline operations: the ``monitoring/pipeline_runs`` health record with
the run-status sensors that write it, and the alert on failed runs (:func:`build_ops_defs`)."""

from pathlib import Path

import dagster as dg

from mlops_assets.ops.alerting import alerting_sensors
from mlops_assets.ops.health import ASSETS_TABLE, HEALTH_KEY, RUNS_TABLE, record_run
from mlops_assets.resources import WarehouseResource

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


def _record_health(context: dg.RunStatusSensorContext, warehouse: WarehouseResource) -> None:
    # Health is recorded into the warehouse the pipeline built; never create one for it.
    if not Path(warehouse.path).exists():
        return
    # A writer may hold the lock: the connection waits a while; a tick that fails is
    # evaluated again.
    with warehouse.connect() as con:
        materialization = record_run(context.instance, context.dagster_run.run_id, con)
    context.instance.report_runless_asset_event(materialization)


def _health_sensor(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    return dg.run_status_sensor(
        run_status=status,
        name=f"record_pipeline_health_{status.value.lower()}",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records every {status.value.lower()} run in {RUNS_TABLE} and {ASSETS_TABLE}.",
    )(_record_health)


def build_ops_defs() -> dg.Definitions:
    """Pipeline health (its asset and sensors) and the alert on failed runs."""
    return dg.Definitions(
        assets=[pipeline_runs],
        sensors=[
            *(
                _health_sensor(s)
                for s in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
            ),
            *alerting_sensors,
        ],
    )
