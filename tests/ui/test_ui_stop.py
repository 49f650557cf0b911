"""A stop signal to `mlops ui` ends it and every process it started, within 10 s: nginx, the
Dagster webserver, the daemon, the code servers and the runs; its ports are free after.

The shared server of tests/ui/ (`mlops ui --secure`, started as a background job of a script
starts it, SIGINT ignored: `dg dev` alone then ignored SIGTERM too), stopped with SIGTERM after
every other test has used it. Each stop signal, and a supervisor started with SIGINT ignored,
on stand-in process trees: tests/cli/test_supervise.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.ui.conftest import UiServer, assert_signal_stops_everything, record_timing


@pytest.mark.stops_ui_server
def test_sigterm_ends_the_ui_started_with_sigint_ignored_and_every_process_it_started(
    ui_server: UiServer,
):
    assert ui_server.process.poll() is None, f"`mlops ui` exited:\n{ui_server.diagnosis()}"
    ui_server.graphql("{ version }")  # serving
    nginx = int((ui_server.guard / "nginx.pid").read_text())
    started = time.monotonic()
    assert_signal_stops_everything(
        ui_server.process,
        signal.SIGTERM,
        ui_server.log,
        [ui_server.port, ui_server.upstream],
    )
    record_timing("ui_server_stop", time.monotonic() - started)
    with pytest.raises(ProcessLookupError):
        os.kill(nginx, 0)
