"""Schedules and freshness: how the platform runs itself under the Dagster daemon.

* ``daily_pipeline`` (partitioned by landing day) ingests a day, rebuilds the dbt models and
  the features, re-scores, and reports that day's drift; its schedule runs it every morning for
  the previous day, and a backfill of any range of days works from the UI.
* ``weekly_retraining`` retrains every declared model (the champion/challenger gate decides)
  and re-scores, every Monday.
* Freshness policies: the marts and the features must be refreshed within 36 h (warn at 26 h),
  every model within 9 days (warn at 8): the UI shows what is late.

* Declarative automation (``AUTOMATION``): the dbt models and the features update after
  every ingestion; scores and drift update only when the data versions of the features or of
  the champion changed, so unchanged data never re-scores. ``automation_sensor`` evaluates
  the conditions (on by default).
* ``landing_file_sensor`` starts ``daily_pipeline`` for the day of every new or changed
  landing file, as soon as it lands (the schedule is the safety net).

Schedules and the landing sensor start stopped: turn them on in the UI (Automation) once
landing files arrive daily.
"""

import hashlib
import json
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from mlops_assets import catalogue
from mlops_assets.ingestion.landing import (
    landing_files,
    latest_landing_day,
    partition_key_of,
    sha256_or_none,
)
from mlops_assets.resources import LandingZone

DAILY = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=36), warn_window=timedelta(hours=26)
)
WEEKLY = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(days=9), warn_window=timedelta(days=8)
)
# By the schema of the asset's table (its key's first part): every mart, feature table, model.
FRESHNESS = {"marts": DAILY, "features": DAILY, "models": WEEKLY}


def on_upstream_change(*, data_versions: bool) -> dg.AutomationCondition:
    """Materialize when an upstream asset was updated by another run, and only then.

    With ``data_versions``, an update counts only if it changed the upstream's data version: the
    features and the models carry content versions, so re-building unchanged features or
    finding the training data unchanged re-scores nothing. Unlike ``eager()``, a missing
    upstream partition (a day without landing files) does not block the update, and a missing
    target is not materialized by itself: a first run is a person's (or a schedule's) decision.
    """
    updated = (
        dg.AutomationCondition.data_version_changed()
        if data_versions
        else dg.AutomationCondition.newly_updated()
    )
    label = "upstream data version changed" if data_versions else "upstream updated"
    trigger = (updated & ~dg.AutomationCondition.executed_with_root_target()).with_label(label)
    if not data_versions:
        # Downstream of an asset requested on this tick: the same run (dbt models in one build).
        trigger = trigger | dg.AutomationCondition.will_be_requested()
    return (
        dg.AutomationCondition.in_latest_time_window()
        & dg.AutomationCondition.any_deps_match(trigger).since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"on {label}")


# Models retrain on the weekly schedule and on drift, never because a day of data arrived.
AUTOMATION = {
    "transform": on_upstream_change(data_versions=False),  # dbt: after every ingestion
    "features": on_upstream_change(data_versions=False),
    "scoring": on_upstream_change(data_versions=True),
    "monitoring": on_upstream_change(data_versions=True),
}


def with_policies(spec: dg.AssetSpec) -> dg.AssetSpec:
    """``spec`` with the freshness policy of ``FRESHNESS`` (by key prefix) and the automation
    condition of ``AUTOMATION`` (by group) attached."""
    return spec.replace_attributes(
        freshness_policy=FRESHNESS.get(spec.key.path[0], spec.freshness_policy),
        automation_condition=AUTOMATION.get(spec.group_name, spec.automation_condition),
    )


daily_pipeline = dg.define_asset_job(
    "daily_pipeline",
    # Partitioned by landing day: the partitions of the assets it runs.
    selection=dg.AssetSelection.all().materializable() - dg.AssetSelection.groups("training"),
    description="One landing day: ingest, dbt, features, scores, drift report.",
)
weekly_retraining = dg.define_asset_job(
    "weekly_retraining",
    selection=dg.AssetSelection.groups("training", "scoring"),
    description="Retrain every model (gated champion/challenger) and re-score.",
)


@dg.schedule(
    name="daily_pipeline_schedule",
    job=daily_pipeline,
    cron_schedule="0 6 * * *",
    description="Every morning at 06:00: yesterday's landing day (complete by then), end to end.",
)
def daily_pipeline_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"daily-{day}", partition_key=day)


def changed_files(
    landing_dir: Path, feeds: Iterable[str], seen: dict[str, str], first: str, latest: date
) -> dict[str, list[str]]:
    """Landing day -> the files of ``feeds`` of that day that are new or changed since ``seen``
    (path -> sha256), which is updated. Only days from ``first`` to ``latest`` (the
    partitions): refused entries (not a landing day, a link, a FIFO…) are left to ingestion,
    which reports them, and never make the tick fail."""
    days: dict[str, list[str]] = {}
    for feed in feeds:
        for path in landing_files(landing_dir, feed, latest=latest):
            day = partition_key_of(path)
            name = path.relative_to(landing_dir).as_posix()
            digest = sha256_or_none(path)  # None: gone or replaced since the scan
            if digest and day >= first and seen.get(name) != digest:
                seen[name] = digest
                days.setdefault(day, []).append(name)
    return days


@dg.sensor(
    name="landing_file_sensor",
    job=daily_pipeline,
    minimum_interval_seconds=60,
    description="Starts `daily_pipeline` for the landing day of every new or changed landing "
    "file; the cursor holds each file's sha256, so a file never launches twice.",
)
def landing_file_sensor(context: dg.SensorEvaluationContext, landing: LandingZone):
    seen = json.loads(context.cursor) if context.cursor else {}
    days = changed_files(
        landing.directory,
        catalogue.sources(),
        seen,
        landing.first_day,
        latest_landing_day(landing.horizon_days),
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                # The content is in the key: the same files never run twice, a change does.
                run_key=f"landing-{day}-{_digest(sorted(seen[f] for f in files))}",
                partition_key=day,
                tags={"mlops/trigger": f"landing files: {', '.join(sorted(files))}"},
            )
            for day, files in sorted(days.items())
        ],
        cursor=json.dumps(seen, sort_keys=True),
    )


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:12]


# Evaluates the automation conditions; on by default: it only reacts to updates by other runs.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes assets whose automation condition is true (see AUTOMATION).",
)
sensors = [landing_file_sensor, automation_sensor]
schedules = [
    daily_pipeline_schedule,
    dg.ScheduleDefinition(
        name="weekly_retraining_schedule",
        job=weekly_retraining,
        cron_schedule="0 7 * * 1",
        description="Mondays at 07:00: retrain and re-score.",
    ),
]
jobs = [daily_pipeline, weekly_retraining]
