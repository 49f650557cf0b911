"""Pipeline health recorded by the run-status sensors, for runs the daemon launched."""

import dagster as dg
import duckdb

from mlops_assets.markdown import flow_metadata
from mlops_assets.ops.assets import build_ops_defs
from mlops_assets.ops.health import HEALTH_KEY
from mlops_assets.resources import WarehouseResource


@dg.asset(
    key=["raw", "things"],
    check_specs=[dg.AssetCheckSpec("balanced", asset=["raw", "things"])],
)
def things():
    return dg.MaterializeResult(
        metadata={**flow_metadata(200, 150), "dagster/row_count": 150},
        check_results=[dg.AssetCheckResult(check_name="balanced", passed=False)],
    )


@dg.asset(deps=[things])
def broken():
    raise RuntimeError("deterministic")


def _sensor(status: str) -> dg.RunStatusSensorDefinition:
    sensors = build_ops_defs().sensors
    return next(s for s in sensors if s.name == f"record_pipeline_health_{status}")


def test_sensor_records_a_failed_run_with_its_rows_and_checks(tmp_path):
    """The warehouse comes from the resource (no settings read from the environment)."""
    duckdb.connect(str(tmp_path / "warehouse.duckdb")).close()
    warehouse = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([things, broken], instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        [failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        sensor = _sensor("failure")
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=run,
            dagster_event=failure.dagster_event, resources={"warehouse": warehouse},
        )  # fmt: skip
        sensor(context)
        sensor(context)  # recorded twice: the rows are replaced, not duplicated
        health = instance.get_latest_materialization_event(HEALTH_KEY)
        assert health.asset_materialization.metadata["checks_failed"].value == 1
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        runs = con.execute(
            "select status, assets_materialized, rows_quarantined, checks_failed, failed_checks "
            "from monitoring.pipeline_runs"
        ).fetchall()
        assets = con.execute(
            "select asset, rows_in, rows_out, rows_quarantined, quarantine_rate, checks_failed "
            "from monitoring.pipeline_run_assets"
        ).fetchall()
    assert runs == [("FAILURE", 1, 50, 1, "raw/things:balanced")]
    assert assets == [("raw/things", 200, 150, 50, 0.25, 1)]


def test_no_warehouse_yet_records_nothing_and_creates_none(tmp_path):
    with dg.instance_for_test() as instance:
        result = dg.materialize([things], instance=instance)
        run = instance.get_run_by_id(result.run_id)
        [success] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
        sensor = _sensor("success")
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=run,
            dagster_event=success.dagster_event,
            resources={"warehouse": WarehouseResource(path=str(tmp_path / "none.duckdb"))},
        )  # fmt: skip
        sensor(context)
        assert instance.get_latest_materialization_event(HEALTH_KEY) is None
    assert not (tmp_path / "none.duckdb").exists()
