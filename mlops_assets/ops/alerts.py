"""Alerts: always logged, and posted as JSON to a webhook when one is set
(``MLOPS_ALERT_WEBHOOK``, which steps and sensors get as the ``alerts`` resource,
:class:`~mlops_assets.ops.alerting.AlertsResource`).

    {"kind": "drift" | "run_failed", "summary": "...", "at": "2026-...Z", "details": {...}}

Posting never fails the caller: an unreachable webhook is logged as a warning (the alert itself
is in the log either way). Alerts carry no personal data: days, asset keys, scores, run ids.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime

log = logging.getLogger("mlops.alerts")
TIMEOUT_SECONDS = 5


def alert(
    kind: str, summary: str, details: dict | None = None, logger=None, webhook: str | None = None
) -> dict:
    """Log the alert once, on ``logger`` (a Dagster context's: the run's event log and its
    console) or else on ``mlops.alerts``, and post it to ``webhook``."""
    payload = {
        "kind": kind,
        "summary": summary,
        "at": datetime.now(UTC).isoformat(),
        "details": details or {},
    }
    (logger or log).warning(f"ALERT {kind}: {summary}")
    if webhook:
        _post(webhook, payload, logger or log)
    return payload


def _post(url: str, payload: dict, logger) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, default=str).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        logger.warning(f"alert not delivered to the webhook ({url}): {error}")
