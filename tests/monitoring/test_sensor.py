"""Each model's retraining sensor fires once per drift episode of its own drift report, with a
cooldown, never twice for the same report, and retrains that model and its scores only."""

from pathlib import Path

import dagster as dg

from mlops_assets.monitoring.assets import (
    COOLDOWN_DAYS,
    RetrainCursor,
    build_monitor_defs,
    build_retrain_sensor,
    drift_key,
    episodes,
)
from mlops_assets.resources import default_resources
from mlops_assets.settings import Settings
from mlops_assets.training.spec import ModelSpec

COMMON = dict(table="features.things", id_column="thing_id", time_column="seen_at")
CLASSIFIER = ModelSpec(name="churn", task="classification", target="churned", **COMMON)
REGRESSOR = ModelSpec(
    name="spend", task="regression", target="amount", scores_table="scores.spend", **COMMON
)
SENSOR = build_retrain_sensor(CLASSIFIER)


def _observe(instance, day: str, dataset: bool, performance: bool = False, spec=CLASSIFIER):
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=drift_key(spec),
            partition=day,
            metadata={"dataset_drift": dataset, "performance_drift": performance},
        )
    )


def _tick(instance, cursor, sensor=SENSOR):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = sensor(context)
    return [r.run_key for r in result.run_requests or []], result.cursor


def test_each_model_is_monitored_by_its_own_report_and_sensor():
    """Drift of one model's inputs retrains that model and re-scores its table, not the other."""
    names = frozenset({"email"})
    classifier, regressor = (
        build_monitor_defs(CLASSIFIER, names),
        build_monitor_defs(REGRESSOR, names),
    )
    assert [a.key for a in classifier.assets] == [
        dg.AssetKey(["monitoring", "churn", "drift_report"])
    ]
    [report] = regressor.assets
    assert report.key == dg.AssetKey(["monitoring", "spend", "drift_report"])
    assert set(report.dependency_keys) == {
        dg.AssetKey(["features", "things"]),
        dg.AssetKey(["scores", "spend"]),
    }
    [check] = regressor.asset_checks
    assert [k.asset_key for k in check.check_keys] == [report.key]
    [sensor] = regressor.sensors
    assert sensor.name == "retrain_spend_on_drift"
    others = [["models", "churn"], ["models", "spend"], ["predictions", "churn"],
              ["scores", "spend"], ["features", "things"]]  # fmt: skip
    graph = dg.Definitions(
        assets=[*classifier.assets, *regressor.assets, *(dg.AssetSpec(k) for k in others)],
        resources=default_resources(Settings(home=Path("home"))),
    ).resolve_asset_graph()
    assert sensor.asset_selection.resolve(graph) == {
        dg.AssetKey(["models", "spend"]),
        dg.AssetKey(["scores", "spend"]),
    }
    with dg.instance_for_test() as instance:
        _observe(instance, "2025-01-01", True, spec=REGRESSOR)
        assert _tick(instance, None)[0] == []  # the classifier's sensor: nothing of its own
        assert _tick(instance, None, sensor)[0] == ["drift-2025-01-01"]


def test_one_retraining_per_episode_and_none_for_reports_already_read():
    with dg.instance_for_test() as instance:
        for day in range(1, 6):  # clean days
            _observe(instance, f"2025-01-0{day}", False)
        requests, cursor = _tick(instance, None)
        assert requests == []
        for day in range(6, 10):  # an episode of four drifted days
            _observe(instance, f"2025-01-0{day}", True)
        requests, cursor = _tick(instance, cursor)
        assert requests == ["drift-2025-01-06"]
        requests, cursor = _tick(instance, cursor)  # nothing new: nothing fires
        assert requests == []
        _observe(instance, "2025-01-10", True)  # the same episode goes on
        assert _tick(instance, cursor)[0] == []
        # The episode ends, and drift comes back within the cooldown: no retraining.
        _observe(instance, "2025-01-11", False)
        _observe(instance, "2025-01-12", False, performance=True)
        requests, cursor = _tick(instance, cursor)
        assert requests == []
        # A new episode after the cooldown retrains again (performance drift counts too).
        _observe(instance, "2025-01-20", False)
        _observe(instance, "2025-01-21", False, performance=True)
        requests, cursor = _tick(instance, cursor)
        assert requests == ["drift-2025-01-21"]


def test_episodes_rule():
    cursor = RetrainCursor(None)
    days = [("2025-02-01", True), ("2025-02-02", True), ("2025-02-03", False),
            ("2025-02-04", True), ("2025-02-20", False), ("2025-02-21", True)]  # fmt: skip
    assert episodes(days, cursor) == ["2025-02-01", "2025-02-21"]
    assert COOLDOWN_DAYS == 7
    assert RetrainCursor(cursor.dumps()).last_trigger == "2025-02-21"


def test_episodes_read_together_retrain_once():
    """A backfill of past days can reveal several episodes at once: one retraining, on today's
    data either way, keyed by the latest episode."""
    with dg.instance_for_test() as instance:
        for day, drifted in [("01", True), ("02", False), ("10", True), ("11", False)]:
            _observe(instance, f"2025-01-{day}", drifted)
        requests, _ = _tick(instance, None)
        assert requests == ["drift-2025-01-10"]
