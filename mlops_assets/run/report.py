"""The summary of a run of `mlops run`: steps, checks, time per stage, rows per table, and the
days each declared model's monitor found drifted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from mlops_assets import catalogue

REPORTED_SCHEMAS = (
    "raw",
    "staging",
    "intermediate",
    "marts",
    "features",
    "predictions",
    "monitoring",
    "quarantine",
)
# Groups whose assets may rightly not materialize in a successful run (no labels, no champion).
WAITING_GROUPS = ("training", "scoring", "monitoring")


@dataclass
class CheckOutcome:
    asset: str
    name: str
    passed: bool
    blocking: bool
    detail: str = ""  # what the check's metadata says went wrong


@dataclass
class RunReport:
    run_id: str
    success: bool
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failed_steps: list[str] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    log_path: Path | None = None
    ingested_days: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    refused_files: list[str] = field(default_factory=list)  # "path: reason", shown as text
    drifted_days: dict[str, list[str]] = field(default_factory=dict)  # model -> run's days

    @property
    def failed_blocking_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.blocking and not c.passed]

    @property
    def ok(self) -> bool:
        return self.success and not self.failed_steps and not self.failed_blocking_checks

    @property
    def quarantined(self) -> dict[str, int]:
        return {k: v for k, v in self.tables.items() if k.startswith("quarantine.")}

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()},
            "failed_steps": self.failed_steps,
            "checks": {
                "passed": sum(c.passed for c in self.checks),
                "failed": [f"{c.asset}:{c.name}" for c in self.checks if not c.passed],
                "failed_blocking": [f"{c.asset}:{c.name}" for c in self.failed_blocking_checks],
                "details": {f"{c.asset}:{c.name}": c.detail for c in self.checks if not c.passed},
            },
            "ingested_days": self.ingested_days,
            "drifted_days": self.drifted_days,
            "notices": self.notices,
            "refused_files": self.refused_files,
            "tables": self.tables,
            "log": str(self.log_path) if self.log_path else None,
        }


def read_events(report: RunReport, result, graph, instance, selected_keys: set) -> None:
    """Fill ``report`` from the run's result and event log: failed steps with their root cause,
    check outcomes, seconds per stage (asset group), and what did not materialize."""
    from mlops_assets.ops.health import step_durations

    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    for node in graph.asset_nodes:
        skipped = (
            node.is_materializable and node.key not in materialized and node.key in selected_keys
        )
        if result.success and skipped and node.group_name in WAITING_GROUPS:
            report.notices.append(
                f"{node.key.to_user_string()} not materialized: too few labelled rows yet, "
                "or no champion to score with or monitor (the run log says which)"
            )
    group_of_op = {
        node.assets_def.node_def.name: node.group_name
        for node in graph.asset_nodes
        if node.is_materializable
    }
    for step, seconds in step_durations(instance, report.run_id).items():
        group = group_of_op.get(step, "checks")  # ops that are not assets: asset checks
        report.stage_seconds[group] = report.stage_seconds.get(group, 0.0) + seconds
    report.failed_steps = [
        f"{event.step_key}: {root_cause(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure and event.step_key and event.step_failure_data.error
    ]
    blocking = {key: graph.get_check_spec(key).blocking for key in graph.asset_check_keys}
    for evaluation in result.get_asset_check_evaluations():
        key = evaluation.asset_check_key
        report.checks.append(
            CheckOutcome(
                asset=key.asset_key.to_user_string(),
                name=key.name,
                passed=evaluation.passed,
                blocking=blocking.get(key, False),
                detail=describe(evaluation.metadata) if not evaluation.passed else "",
            )
        )


def read_warehouse(report: RunReport, con, days: list[str]) -> None:
    """Rows per table of the reported schemas, and per declared model the ``days`` its daily
    report found drifted."""
    from mlops_assets.monitoring.daily import drifted_days
    from mlops_assets.warehouse import table_row_counts

    report.tables = table_row_counts(con, REPORTED_SCHEMAS)
    if not days:
        return
    drifted = drifted_days(con, date.fromisoformat(days[0]), date.fromisoformat(days[-1]))
    report.drifted_days = {
        name: [str(day) for day in drifted[name]] for name in catalogue.models() if name in drifted
    }


def root_cause(error) -> str:
    """The innermost error's message: Dagster wraps what the asset raised in its own error."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def describe(metadata: dict) -> str:
    """What a failed check's metadata says: failing rows of a dbt test, or the markdown our own
    checks write (the failed files, the unbalanced ledger rows)."""
    import dagster as dg

    from mlops_assets.markdown import md_plain

    if "dagster_dbt/failed_row_count" in metadata:
        rows = metadata["dagster_dbt/failed_row_count"].value
        return f"{rows} failing row(s); the test's SQL is under $MLOPS_HOME/dbt/target/compiled/"
    texts = [
        md_plain(value.value) if isinstance(value, dg.MarkdownMetadataValue) else value.value
        for value in metadata.values()
        if isinstance(value, dg.MarkdownMetadataValue | dg.TextMetadataValue)
        and value.value not in ("", "none")
    ]
    return "\n".join(texts)
