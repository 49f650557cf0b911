"""A stop signal to `mlops ui` ends it and every process it started, within 10 s: the Dagster
webserver, the daemon, the code servers and the runs; its port is free after.

The shared server of tests/ui/ (started as a background job of a script starts it, SIGINT
ignored: `dg dev` alone then ignored SIGTERM too), stopped with SIGTERM after every other test
has used it. `mlops ui --secure` (nginx too) stopped with SIGINT (Ctrl-C): the last test of
tests/ui/test_secure_ui.py."""

from __future__ import annotations

import signal
import time
from urllib.parse import urlsplit

import pytest

from tests.ui.conftest import UiServer, assert_signal_stops_everything, record_timing


@pytest.mark.stops_ui_server
def test_sigterm_ends_the_ui_started_with_sigint_ignored_and_every_process_it_started(
    ui_server: UiServer,
):
    assert ui_server.process.poll() is None, f"`mlops ui` exited:\n{ui_server.diagnosis()}"
    ui_server.graphql("{ version }")  # serving
    port = urlsplit(ui_server.url).port
    started = time.monotonic()
    assert_signal_stops_everything(
        ui_server.process, signal.SIGTERM, ui_server.log, [port], secure=False
    )
    record_timing("ui_server_stop", time.monotonic() - started)
