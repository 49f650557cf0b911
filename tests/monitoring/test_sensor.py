"""The retraining sensor fires once per drift episode, with a cooldown, and never twice for
the same report."""

import dagster as dg

from mlops_assets.monitoring.assets import (
    COOLDOWN_DAYS,
    DRIFT_KEY,
    RetrainCursor,
    episodes,
    retrain_on_drift,
)


def _observe(instance, day: str, dataset: bool, performance: bool = False) -> None:
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=DRIFT_KEY,
            partition=day,
            metadata={"dataset_drift": dataset, "performance_drift": performance},
        )
    )


def _tick(instance, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = retrain_on_drift(context)
    return [r.run_key for r in result.run_requests or []], result.cursor


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
