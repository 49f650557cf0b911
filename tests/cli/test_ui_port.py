"""`mlops ui` refuses a port it cannot serve on before it starts anything: out of range, or
taken by another server (which would otherwise answer in the UI's place while it loads); a
server that cannot start, or a stop signal before its own handling of one, ends it with a
message, never a traceback."""

from __future__ import annotations

import signal
import socket
import sys

import pytest

from mlops_assets.cli import supervise
from tests.cli.conftest import invoke

Supervisor = supervise.Supervisor  # the real one, before the fixture replaces it


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


@pytest.fixture(autouse=True)
def no_servers(ui_environment, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("servers started")

    monkeypatch.setattr(supervise, "Supervisor", refuse)


@pytest.mark.parametrize("port", ["0", "65536", "70000", "-1"])
def test_a_port_out_of_range_is_refused(port, tmp_path):
    result = invoke("ui", "--port", port)
    assert result.exit_code == 2, result.output
    assert f"--port {port}: a port is a number from 1 to 65535" in result.output
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_a_port_another_server_listens_on_is_refused(secure, tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = invoke("ui", "--port", str(port), *(["--secure"] if secure else []))
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is in use" in result.output
    assert not (tmp_path / "home").exists()


def test_a_signal_as_the_handlers_are_set_ends_it_quietly(monkeypatch, quick_start):
    """A stop signal may come before `mlops ui` is inside its own handling of it (as the
    handlers are set, or once a server exited): it ends with 0, never a traceback, and the
    handlers are put back."""
    before = {signum: signal.getsignal(signum) for signum in supervise.STOP_SIGNALS}

    def signalled() -> bool:
        raise supervise.Stop(signal.SIGTERM)

    monkeypatch.setattr(supervise, "Supervisor", Supervisor)
    monkeypatch.setattr(supervise, "become_subreaper", signalled)
    result = invoke("ui", "--port", free_port())
    assert result.exit_code == 0, result.output
    assert not isinstance(result.exception, supervise.Stop)
    assert {signum: signal.getsignal(signum) for signum in supervise.STOP_SIGNALS} == before


def test_a_server_that_cannot_start_is_said_not_raised(monkeypatch, quick_start):
    monkeypatch.setattr(supervise, "Supervisor", Supervisor)
    monkeypatch.setattr(sys, "executable", "/nonexistent/bin/python")
    result = invoke("ui", "--port", free_port())
    assert result.exit_code == 2, result.output
    assert "No such file or directory" in result.output
