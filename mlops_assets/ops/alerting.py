"""Dagster wiring of alerts: failed runs (with the blocking checks that failed) and drift."""

import dagster as dg

from mlops_assets.ops.alerts import alert


class AlertsResource(dg.ConfigurableResource):
    """Where alerts go besides the log: ``webhook_url`` (``MLOPS_ALERT_WEBHOOK``), or nowhere."""

    webhook_url: str | None = None

    def send(self, kind: str, summary: str, details: dict | None = None, logger=None) -> dict:
        return alert(kind, summary, details, logger=logger, webhook=self.webhook_url)


def failed_checks(instance, run_id: str) -> list[str]:
    """``asset:check`` of every check that failed in the run, blocking ones marked."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    failed = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            key = evaluation.asset_check_key
            suffix = " (blocking)" if evaluation.blocking else ""
            failed.append(f"{key.asset_key.to_user_string()}:{key.name}{suffix}")
    return failed


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs every failed run, with its error and failed checks, and posts it to "
    "MLOPS_ALERT_WEBHOOK when set.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertsResource):
    run = context.dagster_run
    checks = failed_checks(context.instance, run.run_id)
    alerts.send(
        "run_failed",
        f"run {run.run_id} ({run.job_name}) failed: {context.failure_event.message}",
        {
            "run_id": run.run_id,
            "job": run.job_name,
            "error": context.failure_event.message,
            "failed_checks": checks,
            "tags": {k: v for k, v in run.tags.items() if k.startswith(("mlops/", "dagster/"))},
        },
        logger=context.log,
    )


alerting_sensors = [alert_on_run_failure]
