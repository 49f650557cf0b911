"""`mlops ui` refuses a port it cannot serve on before it starts anything: out of range, or
taken by another server (which would otherwise answer in the UI's place while it loads)."""

from __future__ import annotations

import socket

import pytest

from mlops_assets.cli import supervise
from tests.cli.conftest import invoke


@pytest.fixture(autouse=True)
def no_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))

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
