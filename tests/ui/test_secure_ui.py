"""`mlops ui --secure`: nginx in front of the Dagster UI, proved with curl and Chromium.

Dagster OSS runs a GraphQL mutation sent by GET, from any Host: a link or an ``<img src>`` on any
page the operator visits reaches it, and so does DNS rebinding. The guard refuses both, asks for
the generated password, and serves TLS with its own certificate (curl verifies it: ``--cacert``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, expect
from playwright.sync_api import Error as PlaywrightError

from mlops_assets.security.ui_guard import USER, UiGuardError, prepare
from tests.conftest import BIN, free_port
from tests.ui.conftest import (
    ARTIFACTS,
    SERVER_START_TIMEOUT,
    _log_tail,
    _stop,
    assert_signal_stops_everything,
    start_ui,
)

# The UI tests share one worker under `make test` (tests/conftest.py): they all wait on Dagster.
pytestmark = pytest.mark.xdist_group("ui")

MUTATION = "mutation { setNuxSeen }"  # harmless: records that the "join the community" nag was seen
WORKSPACE_LOADED = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"


@dataclasses.dataclass(frozen=True)
class SecureUi:
    process: subprocess.Popen
    port: int
    upstream: int  # the Dagster webserver behind nginx
    guard: Path  # $MLOPS_HOME/ui-guard
    password: str
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def curl(self, path: str, *args: str, credentials: bool = True) -> tuple[int, str]:
        """curl (verifying the guard's certificate) -> (HTTP status, body)."""
        auth = ["--user", f"{USER}:{self.password}"] if credentials else []
        result = subprocess.run(
            [
                *("curl", "--silent", "--show-error", "--max-time", "30", "--write-out"),
                *("\n%{http_code}", "--cacert", str(self.guard / "cert.pem")),
                *auth,
                *args,
                f"{self.url}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        body, _, status = result.stdout.rpartition("\n")
        return int(status), body

    def post_json(self, body: dict, *args: str) -> tuple[int, str]:
        return self.curl(
            "/graphql",
            "--header",
            "Content-Type: application/json",
            "--data",
            json.dumps(body),
            *args,
        )


def _wait_until_loaded(ui: SecureUi) -> None:
    """Until the code location is loaded, asked through the guard."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        assert ui.process.poll() is None, (
            f"`mlops ui --secure` exited with {ui.process.returncode}:\n{_log_tail(ui.log)}"
        )
        with contextlib.suppress(subprocess.CalledProcessError):
            status, body = ui.post_json({"query": WORKSPACE_LOADED})
            if status == 200:
                entries = json.loads(body)["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                    return
        assert time.monotonic() < deadline, (
            f"not up after {SERVER_START_TIMEOUT} s:\n{_log_tail(ui.log)}"
        )
        time.sleep(1)


def _guard_started(log: Path, process: subprocess.Popen) -> int:
    """The upstream port from `mlops ui --secure`'s first line, once its password exists."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not (found := re.search(r"nginx in front of 127\.0\.0\.1:(\d+)", log.read_text())):
        assert process.poll() is None, f"`mlops ui --secure` exited:\n{_log_tail(log)}"
        assert time.monotonic() < deadline, (
            f"no guard after {SERVER_START_TIMEOUT} s:\n{_log_tail(log)}"
        )
        time.sleep(0.5)
    return int(found.group(1))


@pytest.fixture(scope="module")
def secure_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureUi]:
    """`mlops ui --secure` on an empty home (the UI needs no data to serve)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    home = tmp_path_factory.mktemp("secure_ui_home")
    port = free_port()
    env = {
        **os.environ,
        "MLOPS_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for inherited in ("DAGSTER_HOME", "MLOPS_KEYRING", "DASK_SCHEDULER_ADDRESS"):
        env.pop(inherited, None)
    log = ARTIFACTS / "secure-ui.log"
    process = start_ui(["--secure", "--port", str(port)], env, log)
    try:
        upstream = _guard_started(log, process)
        guard = home / "ui-guard"
        password = (guard / "password").read_text().strip()
        ui = SecureUi(process, port, upstream, guard, password, log)
        _wait_until_loaded(ui)
        yield ui
    finally:
        # The module's last test stops it; this only cleans up after a failure.
        _stop(process)


def test_without_credentials_everything_is_401(secure_ui: SecureUi) -> None:
    assert secure_ui.curl("/", credentials=False)[0] == 401
    assert secure_ui.post_json({"query": MUTATION}, "--user", f"{USER}:wrong")[0] == 401
    status, _ = secure_ui.curl(
        "/graphql",
        "--header",
        "Content-Type: application/json",
        "--data",
        json.dumps({"query": MUTATION}),
        credentials=False,
    )
    assert status == 401


def test_a_foreign_host_is_refused_before_authentication(secure_ui: SecureUi) -> None:
    port = secure_ui.port
    for host in (f"evil.example:{port}", "evil.example", f"localhost:{port + 1}", "127.0.0.1"):
        assert secure_ui.curl("/server_info", "--header", f"Host: {host}")[0] == 421, host
        assert secure_ui.curl("/", "--header", f"Host: {host}", credentials=False)[0] == 421
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert secure_ui.curl("/server_info", "--header", f"Host: {host}")[0] == 200, host


def test_a_mutation_by_get_is_refused_in_every_spelling(secure_ui: SecureUi) -> None:
    # What the guard is for: Dagster itself runs it, from any Host.
    direct = requests.get(
        f"http://127.0.0.1:{secure_ui.upstream}/graphql",
        params={"query": MUTATION},
        headers={"Host": "evil.example"},
        timeout=30,
    )
    assert direct.json() == {"data": {"setNuxSeen": True}}
    for path in (
        "/graphql?query=mutation%20%7B%20setNuxSeen%20%7D",
        "/graphql?query=MUTATION%20%7B%20setNuxSeen%20%7D",
        "/graphql?query=%6D%75tation%20%7B%20setNuxSeen%20%7D",
        "/%67raphql?query=mutation%20%7B%20setNuxSeen%20%7D",
        "//graphql/?query=mutation%20%7B%20setNuxSeen%20%7D",
        "/graphql?operationName=x&query=mutation%20x%20%7B%20setNuxSeen%20%7D",
    ):
        assert secure_ui.curl(path)[0] == 405, path


def test_a_post_without_a_json_body_or_from_another_origin_is_refused(
    secure_ui: SecureUi,
) -> None:
    # A cross-site <form> posts urlencoded or text/plain, which Dagster reads from the URL.
    in_url = "/graphql?query=mutation%20%7B%20setNuxSeen%20%7D"
    form = "Content-Type: application/x-www-form-urlencoded"
    assert secure_ui.curl(in_url, "--request", "POST", "--header", form)[0] == 415
    text = "Content-Type: text/plain; note=application/json"
    body = json.dumps({"query": MUTATION})
    assert secure_ui.curl("/graphql", "--header", text, "--data", body)[0] == 415
    origin = "Origin: https://evil.example"
    assert secure_ui.post_json({"query": MUTATION}, "--header", origin)[0] == 403
    assert secure_ui.curl("/graphql", "--request", "OPTIONS")[0] == 403


def test_a_post_mutation_with_credentials_reaches_dagster(secure_ui: SecureUi) -> None:
    status, body = secure_ui.post_json({"query": MUTATION})
    assert (status, json.loads(body)) == (200, {"data": {"setNuxSeen": True}})
    own_origin = f"Origin: https://localhost:{secure_ui.port}"
    status, body = secure_ui.post_json({"query": MUTATION}, "--header", own_origin)
    assert (status, json.loads(body)) == (200, {"data": {"setNuxSeen": True}})


def test_the_secrets_are_private_and_the_password_is_not_printed(secure_ui: SecureUi) -> None:
    assert secure_ui.guard.stat().st_mode & 0o777 == 0o700
    for name in ("password", "htpasswd", "key.pem"):
        assert (secure_ui.guard / name).stat().st_mode & 0o777 == 0o600, name
    assert secure_ui.password not in secure_ui.log.read_text()
    assert len(secure_ui.password) >= 32


def test_the_ui_loads_in_chromium_with_credentials(secure_ui: SecureUi, browser: Browser) -> None:
    refused = browser.new_context(ignore_https_errors=True)
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        refused.new_page().goto(secure_ui.url)
    refused.close()
    context = browser.new_context(
        http_credentials={"username": USER, "password": secure_ui.password},
        ignore_https_errors=True,
        viewport={"width": 1600, "height": 1000},
    )
    page = context.new_page()
    # The UI's GraphQL websocket (subscriptions): what the server sends on it, once it is open.
    received: list[str] = []
    page.on(
        "websocket",
        lambda websocket: websocket.on("framereceived", lambda frame: received.append(str(frame))),
    )
    try:
        page.goto(f"{secure_ui.url}/asset-groups", timeout=60_000)
        materialize_all = page.get_by_role("button", name=re.compile(r"Materialize all \(\d+\)"))
        expect(materialize_all).to_be_visible(timeout=60_000)
        expect(page.get_by_text("monitoring", exact=True).first).to_be_visible()
        page.screenshot(path=ARTIFACTS / "secure-ui.png")
        # Dagster acknowledges the UI's connection_init: the Upgrade handshake passed the guard.
        deadline = time.monotonic() + 30
        while not any("connection_ack" in frame for frame in received):
            assert time.monotonic() < deadline, f"no websocket connection_ack: {received}"
            page.wait_for_timeout(500)
    finally:
        context.close()
    # Nothing the UI itself asked for was refused (the guard's rules cost it nothing).
    browser_lines = [
        line
        for line in (secure_ui.guard / "access.log").read_text().splitlines()
        if "HeadlessChrome" in line and " - mlops [" in line
    ]
    assert browser_lines
    refused_lines = [line for line in browser_lines if re.search(r'" [45]\d\d ', line)]
    assert not refused_lines, refused_lines


def test_an_mlops_home_nginx_cannot_quote_is_refused(tmp_path: Path) -> None:
    for name in ('a"b', "a$b", "a;b", "a{b", "a\nb"):
        with pytest.raises(UiGuardError, match="MLOPS_HOME"):
            prepare(tmp_path / name, 3000, 3001)
        assert not (tmp_path / name).exists()


def test_sigint_stops_nginx_dagster_and_every_process_started(secure_ui: SecureUi) -> None:
    """Last in the module: it stops the fixture's server. Ctrl-C (SIGINT) to `mlops ui --secure`
    alone: nginx, the webserver, the daemon and the code servers are gone within 10 s, and
    both ports are free."""
    nginx = int((secure_ui.guard / "nginx.pid").read_text())
    assert_signal_stops_everything(
        secure_ui.process,
        signal.SIGINT,
        secure_ui.log,
        [secure_ui.port, secure_ui.upstream],
        secure=True,
    )
    with pytest.raises(ProcessLookupError):
        os.kill(nginx, 0)
