"""Pipeline health: what every run did, read from its Dagster event log, kept in the warehouse.

``monitoring.pipeline_runs`` has one row per run (status, duration, rows quarantined, checks);
``monitoring.pipeline_run_assets`` one row per asset the run materialized (its step's duration,
rows in and out, quarantine rate, checks). Both are written by ``record_run``, which `mlops run`
calls after its run and the ``record_pipeline_health`` sensor after runs the daemon launched; a
run recorded twice replaces its rows. The same summary is reported as a materialization of the
asset ``monitoring/pipeline_runs``, so the UI plots run time and quarantine rates over runs.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import dagster as dg
import duckdb
import pandas as pd

from mlops_assets.warehouse import replace_rows

RUNS_TABLE = "monitoring.pipeline_runs"
ASSETS_TABLE = "monitoring.pipeline_run_assets"
HEALTH_KEY = dg.AssetKey(["monitoring", "pipeline_runs"])
TABLE_COLUMNS = {
    RUNS_TABLE: "run_id varchar, job_name varchar, status varchar, trigger varchar, "
    "started_at timestamp with time zone, seconds double, assets_materialized integer, "
    "rows_quarantined bigint, checks_passed integer, checks_failed integer, "
    "failed_checks varchar, recorded_at timestamp with time zone",
    ASSETS_TABLE: "run_id varchar, asset varchar, partitions integer, step varchar, "
    "step_seconds double, rows_in bigint, rows_out bigint, rows_quarantined bigint, "
    "quarantine_rate double, checks_passed integer, checks_failed integer, "
    "failed_checks varchar",
}
_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
}
_STEP_ENDS = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)


def step_durations(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds from each step's (last) start to its end."""
    return _durations(instance.all_logs(run_id, of_type=_EVENTS))


def step_spans(entries: list) -> list[tuple[str, float, float]]:
    """(step, start, end) of every step of the event log ``entries`` that ended, from its
    latest start (a retried step has a span per attempt), in the order they ended."""
    starts: dict[str, float] = {}
    spans = []
    for entry in entries:
        kind = entry.dagster_event_type
        if kind == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif kind in _STEP_ENDS and entry.step_key in starts:
            spans.append((entry.step_key, starts[entry.step_key], entry.timestamp))
    return spans


def _durations(entries: list) -> dict[str, float]:
    return {step: end - start for step, start, end in step_spans(entries)}


def _number(metadata: dict, *names: str) -> int | None:
    for name in names:
        if name in metadata:
            return int(metadata[name].value)
    return None


def run_health(instance: dg.DagsterInstance, run_id: str) -> tuple[dict, pd.DataFrame]:
    """The run's row and its assets' rows, from the event log."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run {run_id} in this Dagster instance")
    entries = instance.all_logs(run_id, of_type=_EVENTS)  # read once
    durations = _durations(entries)
    assets: dict[str, dict] = {}
    checks: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    started = None
    for entry in entries:
        started = started or entry.timestamp
        event = entry.dagster_event
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            name = materialization.asset_key.to_user_string()
            if name in assets:  # one event per partition, with the same metadata
                assets[name]["partitions"] += 1
                continue
            metadata = materialization.metadata
            rows_in = _number(metadata, "rows_in")
            quarantined = _number(metadata, "rows_quarantined")
            assets[name] = {
                "asset": name,
                "partitions": 1,
                "step": entry.step_key,
                "step_seconds": durations.get(entry.step_key),
                "rows_in": rows_in,
                "rows_out": _number(metadata, "rows_out", "dagster/row_count"),
                "rows_quarantined": quarantined,
                "quarantine_rate": quarantined / rows_in
                if rows_in and quarantined is not None
                else None,
            }
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            key = evaluation.asset_check_key
            checks[key.asset_key.to_user_string()].append((key.name, evaluation.passed))
    for name, row in assets.items():
        results = checks.get(name, [])
        row["checks_passed"] = sum(passed for _, passed in results)
        row["checks_failed"] = sum(not passed for _, passed in results)
        row["failed_checks"] = ", ".join(c for c, passed in results if not passed) or None
    failed = [f"{asset}:{c}" for asset, results in checks.items() for c, ok in results if not ok]
    stats = instance.get_run_stats(run_id)
    begin = stats.start_time or started
    row = {
        "run_id": run_id,
        "job_name": run.job_name,
        "status": run.status.value,
        "trigger": run.tags.get("mlops/trigger")
        or run.tags.get("dagster/schedule_name")
        or run.tags.get("dagster/sensor_name")
        or "manual",
        "started_at": datetime.fromtimestamp(begin, UTC) if begin else None,
        "seconds": (stats.end_time - begin) if stats.end_time and begin else None,
        "assets_materialized": len(assets),
        "rows_quarantined": sum(a["rows_quarantined"] or 0 for a in assets.values()),
        "checks_passed": sum(ok for results in checks.values() for _, ok in results),
        "checks_failed": len(failed),
        "failed_checks": ", ".join(failed) or None,
        "recorded_at": datetime.now(UTC),
    }
    frame = pd.DataFrame(list(assets.values()), columns=_columns(ASSETS_TABLE)[1:])
    frame.insert(0, "run_id", run_id)
    return row, frame


def _columns(table: str) -> list[str]:
    return [part.strip().split()[0] for part in TABLE_COLUMNS[table].split(",")]


def record_run(
    instance: dg.DagsterInstance, run_id: str, con: duckdb.DuckDBPyConnection
) -> dg.AssetMaterialization:
    """Write the run's health into the monitoring tables (replacing a previous record of it, in
    one transaction); returns the materialization of ``monitoring/pipeline_runs`` to report."""
    row, assets = run_health(instance, run_id)
    runs = pd.DataFrame([row], columns=_columns(RUNS_TABLE))
    replace_rows(
        con,
        {
            RUNS_TABLE: (TABLE_COLUMNS[RUNS_TABLE], runs),
            ASSETS_TABLE: (TABLE_COLUMNS[ASSETS_TABLE], assets),
        },
        "run_id = ?",
        [run_id],
    )
    return dg.AssetMaterialization(asset_key=HEALTH_KEY, metadata=health_metadata(row, assets))


def health_metadata(row: dict, assets: pd.DataFrame) -> dict:
    """The run's numbers as metadata (plotted by the UI across runs) and a table of its assets."""
    from mlops_assets.markdown import md_table

    metadata = {
        "run_id": row["run_id"],
        "status": row["status"],
        "trigger": row["trigger"],
        "run_seconds": dg.MetadataValue.float(round(row["seconds"] or 0.0, 2)),
        "assets_materialized": row["assets_materialized"],
        "rows_quarantined": row["rows_quarantined"],
        "checks_failed": row["checks_failed"],
        "failed_checks": row["failed_checks"] or "none",
        "dagster/table_name": RUNS_TABLE,
    }
    for record in assets.to_dict("records"):
        if pd.notna(record["quarantine_rate"]):
            metadata[f"quarantine_rate/{record['asset']}"] = dg.MetadataValue.float(
                round(float(record["quarantine_rate"]), 6)
            )
    metadata["assets"] = dg.MetadataValue.md(
        md_table(
            ("asset", "seconds", "rows in", "rows out", "quarantined", "checks failed"),
            [
                (
                    r["asset"],
                    _fmt(r["step_seconds"], "{:.1f}"),
                    _fmt(r["rows_in"]),
                    _fmt(r["rows_out"]),
                    _fmt(r["rows_quarantined"]),
                    r["failed_checks"] or "none",
                )
                for r in assets.to_dict("records")
            ],
        )
    )
    return metadata


def _fmt(value, pattern: str = "{:,.0f}") -> str:
    return "-" if value is None or pd.isna(value) else pattern.format(value)
