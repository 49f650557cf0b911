"""A stop signal to `mlops ui` ends it and every process it started, within 10 s: the Dagster
webserver, the daemon, the code servers and, with --secure, nginx; their ports are free after.

Two live servers on an empty home (the UI needs no data to serve): plain `mlops ui` started
with SIGINT ignored, as a background job of a script starts it (`dg dev` alone then ignored
SIGTERM too), stopped with SIGTERM; `mlops ui --secure` stopped with SIGINT (Ctrl-C)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import psutil
import pytest
import requests

from tests.conftest import BIN, free_port
from tests.ui.conftest import ARTIFACTS, SERVER_START_TIMEOUT, _log_tail, start_ui

pytestmark = pytest.mark.xdist_group("ui")

STOP_WITHIN = 10.0  # seconds


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(processes: list[psutil.Process]) -> list[str]:
    shown = []
    for process in processes:
        try:
            shown.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            shown.append(f"{process.pid} (gone)")
    return shown


def wait_until_serving(process: subprocess.Popen, log, secure: bool, port: int) -> list[int]:
    """Until the Dagster webserver answers (its code server and daemon start before it);
    the ports to be freed (with --secure: nginx's and the webserver's)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    ports = [port]
    while True:
        assert process.poll() is None, f"`mlops ui` exited:\n{_log_tail(log)}"
        assert time.monotonic() < deadline, f"not serving after {SERVER_START_TIMEOUT} s"
        if secure and len(ports) == 1:
            found = re.search(r"nginx in front of 127\.0\.0\.1:(\d+)", log.read_text())
            if found:
                ports.append(int(found.group(1)))
        if len(ports) == 1 + secure:
            try:
                requests.get(f"http://127.0.0.1:{ports[-1]}/server_info", timeout=5)
                return ports
            except requests.RequestException:
                pass
        time.sleep(1)


@pytest.mark.parametrize(
    ("secure", "signum"),
    [(False, signal.SIGTERM), (True, signal.SIGINT)],
    ids=["plain-SIGTERM-started-with-SIGINT-ignored", "secure-SIGINT"],
)
def test_a_stop_signal_ends_the_ui_and_every_process_it_started(tmp_path, secure, signum):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "MLOPS_HOME": str(tmp_path / "home"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for inherited in ("DAGSTER_HOME", "MLOPS_KEYRING", "DASK_SCHEDULER_ADDRESS"):
        env.pop(inherited, None)

    def ignore_sigint() -> None:  # as `mlops ui &` in a non-interactive shell
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    log = ARTIFACTS / f"ui-stop-{'secure' if secure else 'plain'}.log"
    process = start_ui(
        ["--port", str(port), *(["--secure"] if secure else [])],
        env,
        log,
        preexec_fn=None if secure else ignore_sigint,
    )
    tree: list[psutil.Process] = []
    try:
        ports = wait_until_serving(process, log, secure, port)
        tree = psutil.Process(process.pid).children(recursive=True)
        commands = " | ".join(describe(tree))
        for server in ("dagster_webserver", "dagster._daemon", "code-server", "api grpc"):
            assert server in commands, f"no {server} among {commands}"
        assert ("nginx" in commands) == secure

        sent = time.monotonic()
        process.send_signal(signum)  # to `mlops ui` alone, as a service manager or kill does
        assert process.wait(timeout=STOP_WITHIN) == 0, _log_tail(log)
        while (left := [p for p in tree if alive(p)]) and time.monotonic() < sent + STOP_WITHIN:
            time.sleep(0.2)
        assert not left, f"still running {STOP_WITHIN} s after the signal: {describe(left)}"
        for freed in ports:
            with (
                pytest.raises(ConnectionRefusedError),
                socket.create_connection(("127.0.0.1", freed), timeout=5),
            ):
                pass
        assert f"{signal.Signals(signum).name} received" in log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for member in tree:
            if alive(member):
                member.kill()
