"""The landing-file sensor: one run per landing day with new or changed files, never twice for
the same content."""

import dagster as dg

from mlops_assets.automation import landing_file_sensor
from mlops_assets.resources import LandingZone
from mlops_assets.sample_data.generator import GeneratorConfig, generate


def _tick(landing, cursor, **zone):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"landing": LandingZone(path=str(landing), **zone)}
    )
    result = landing_file_sensor(context)
    return result.run_requests, result.cursor


def test_new_and_changed_files_launch_their_day_once(tmp_path):
    landing = tmp_path / "landing"
    generate(GeneratorConfig(days=2, rows_per_day=5, seed=1), landing)
    requests, cursor = _tick(landing, None)
    assert [r.partition_key for r in requests] == ["2025-01-01", "2025-01-02"]
    first_keys = {r.run_key for r in requests}
    assert _tick(landing, cursor)[0] == []  # nothing new: nothing runs
    changed = landing / "applications" / "2025-01-02.csv"
    changed.write_text(changed.read_text() + changed.read_text().splitlines()[1] + "\n")
    (landing / "applications" / "notes.csv").write_text("not a landing day\n")  # refused
    (landing / "outcomes").mkdir(exist_ok=True)
    (landing / "outcomes" / "2025-01-03.csv").write_text("application_id,observed_at\n")
    requests, cursor = _tick(landing, cursor)
    assert [r.partition_key for r in requests] == ["2025-01-02", "2025-01-03"]
    assert not {r.run_key for r in requests} & first_keys  # a changed day is a new run
    assert "applications/2025-01-02.csv" in requests[0].tags["mlops/trigger"]
    assert _tick(landing, cursor)[0] == []


def test_the_sensor_takes_the_first_landing_day_from_its_resource(tmp_path):
    """Before, it resolved MLOPS_FIRST_LANDING_DATE from the environment on every tick."""
    landing = tmp_path / "landing"
    generate(GeneratorConfig(days=3, rows_per_day=5, seed=1), landing)
    requests, _ = _tick(landing, None, first_day="2025-01-02")
    assert [r.partition_key for r in requests] == ["2025-01-02", "2025-01-03"]


def test_odd_landing_entries_never_reach_a_run_request(tmp_path):
    """A bad partition key in a run request fails the whole tick (good days with it)."""
    from tests.ingestion.test_landing import odd_landing

    landing = odd_landing(tmp_path)
    (landing / "outcomes" / "2024-12-31.csv").write_text("a,b\n")  # before the first partition
    requests, cursor = _tick(landing, None)
    assert [r.partition_key for r in requests] == ["2025-01-05"]
    assert requests[0].tags["mlops/trigger"] == "landing files: outcomes/2025-01-05.csv"
    assert _tick(landing, cursor)[0] == []


def _materialized(instance, key, data_version=None, partition=None):
    tags = {"dagster/data_version": data_version} if data_version else {}
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key, partition=partition, tags=tags)
    )


def _requested(defs, instance, cursor):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    keys = {r.key.to_user_string() for r in result.results if r.true_subset.size}
    return keys, result.cursor


def test_downstream_updates_only_when_upstream_data_changed(tmp_path):
    from mlops_assets.definitions import defs as load

    defs = load()
    features = dg.AssetKey(["features", "loan_features"])
    scores = dg.AssetKey(["predictions", "loan_default_scores"])
    classifier = dg.AssetKey(["models", "default_classifier"])
    sensor = defs.resolve_sensor_def("automation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING  # the daemon evaluates them
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        requested, cursor = _requested(defs, instance, None)
        assert requested == set()  # nothing materialized: nothing starts on its own

        # An ingestion updates the dbt models and the features, in one request.
        _materialized(instance, dg.AssetKey(["raw", "applications"]), partition="2025-01-01")
        requested, cursor = _requested(defs, instance, cursor)
        assert {"marts/loan_applications", "features/loan_features"} <= requested
        assert not requested & {"predictions/loan_default_scores", "models/default_classifier"}

        # New feature content (and a model): scores follow; models never retrain on their own.
        _materialized(instance, features, "features-v1")
        _materialized(instance, classifier, "model-a")
        requested, cursor = _requested(defs, instance, cursor)
        assert "predictions/loan_default_scores" in requested
        assert "models/default_classifier" not in requested
        _materialized(instance, scores, "scores-1")
        requested, cursor = _requested(defs, instance, cursor)
        assert "predictions/loan_default_scores" not in requested

        # Features re-built with the same content, the model found its data unchanged: nothing.
        _materialized(instance, features, "features-v1")
        _materialized(instance, classifier, "model-a")
        requested, cursor = _requested(defs, instance, cursor)
        assert "predictions/loan_default_scores" not in requested

        # A new champion is new data for the scores.
        _materialized(instance, classifier, "model-b")
        requested, cursor = _requested(defs, instance, cursor)
        assert "predictions/loan_default_scores" in requested


def test_definitions_take_paths_and_landing_days_from_the_settings_they_are_built_for(tmp_path):
    """Before, resources and partitions resolved MLOPS_HOME and MLOPS_FIRST_LANDING_DATE from
    the environment at import; now the settings given when the definitions load decide."""
    from mlops_assets.definitions import build_definitions
    from mlops_assets.settings import Settings

    settings = Settings(home=tmp_path, first_landing_date="2024-06-01", landing_horizon_days=3)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    partitioned = [node for node in graph.asset_nodes if node.partitions_def]
    assert {node.key.path[0] for node in partitioned} >= {"raw"}
    for node in partitioned:
        assert node.partitions_def.get_first_partition_key() == "2024-06-01", node.key
    job = defs.resolve_job_def("daily_pipeline")
    assert job.partitions_def.get_first_partition_key() == "2024-06-01"
    assert defs.resources["warehouse"].path == str(settings.warehouse_path)
    assert defs.resources["landing"].first_day == "2024-06-01"
    assert defs.resources["landing"].horizon_days == 3
    assert defs.resources["dbt"].target_dir == str(settings.dbt_target_dir)


def test_every_declared_model_retrains_weekly_and_is_watched_for_freshness():
    from mlops_assets import catalogue
    from mlops_assets.automation import WEEKLY
    from mlops_assets.definitions import defs as load

    defs = load()
    graph = defs.resolve_asset_graph()
    weekly = defs.resolve_job_def("weekly_retraining")
    retrained = set(weekly.asset_layer.selected_asset_keys)
    for name, spec in catalogue.models().items():
        key = dg.AssetKey(["models", name])
        assert graph.get(key).freshness_policy == WEEKLY
        assert {key, dg.AssetKey(spec.scores.split("."))} <= retrained
