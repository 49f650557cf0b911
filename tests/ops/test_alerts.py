"""Alerts are logged and posted as JSON to the webhook of the ``alerts`` resource
(MLOPS_ALERT_WEBHOOK; a real HTTP server on 127.0.0.1); a failed run raises one with its error
and failed checks."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from mlops_assets.ops.alerting import AlertsResource, alert_on_run_failure
from mlops_assets.ops.alerts import alert
from mlops_assets.resources import default_resources
from mlops_assets.settings import get_settings


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append((self.headers["Content-Type"], json.loads(self.rfile.read(length))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_alert_is_logged_and_posted_as_json(webhook, caplog):
    url, received = webhook
    details = {"days": ["2025-03-17", "2025-03-18"]}
    payload = AlertsResource(webhook_url=url).send("drift", "drift on 2 of 3 days", details)
    assert received == [("application/json", payload)]
    assert payload["kind"] == "drift" and payload["details"]["days"][0] == "2025-03-17"
    assert "ALERT drift: drift on 2 of 3 days" in caplog.text


def test_an_unreachable_webhook_is_a_warning_not_a_failure(caplog):
    alert("drift", "still logged", webhook="http://127.0.0.1:9/nothing-listens-here")
    assert "ALERT drift: still logged" in caplog.text
    assert "alert not delivered" in caplog.text


def test_the_webhook_is_read_once_into_the_alerts_resource(monkeypatch, tmp_path):
    """Steps and sensors never read the environment: the settings resolve the webhook once."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK", "http://127.0.0.1:9/hook")
    assert default_resources(get_settings())["alerts"].webhook_url == "http://127.0.0.1:9/hook"
    monkeypatch.delenv("MLOPS_ALERT_WEBHOOK")
    assert default_resources(get_settings())["alerts"].webhook_url is None


def test_a_failed_run_posts_its_error_and_failed_checks(webhook):
    @dg.asset(check_specs=[dg.AssetCheckSpec("sane", asset="broken", blocking=True)])
    def broken():
        yield dg.Output(1)
        yield dg.AssetCheckResult(check_name="sane", passed=False)

    @dg.asset(deps=[broken])
    def downstream():  # never runs: the blocking check stops it
        return 1

    with dg.instance_for_test() as instance:
        result = dg.materialize([broken, downstream], instance=instance, raise_on_error=False)
        assert not result.success
        failure = next(
            e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE
        )
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=failure,
            resources={"alerts": AlertsResource(webhook_url=webhook[0])},
        ).for_run_failure()
        alert_on_run_failure(context)
    [(_, payload)] = webhook[1]
    assert payload["kind"] == "run_failed"
    assert payload["details"]["run_id"] == result.run_id
    assert payload["details"]["failed_checks"] == ["broken:sane (blocking)"]
    assert "broken" in payload["details"]["error"]


def test_an_alert_raised_in_a_step_is_logged_once_on_the_steps_log(caplog):
    """A step's alert goes to its Dagster log (the run's events and console), not a second
    time to ``mlops.alerts``: the terminal of `mlops run` showed it twice."""
    import logging

    on_step: list[str] = []

    class StepLog(logging.Logger):
        def warning(self, message, *args, **kwargs):
            on_step.append(message)

    alert("drift", "once", logger=StepLog("step"))
    assert on_step == ["ALERT drift: once"]
    assert "ALERT drift" not in caplog.text
