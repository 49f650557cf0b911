"""`mlops ui --secure`: nginx in front of the Dagster UI, proved with curl and Chromium on the
shared server of tests/ui/ (every other UI test goes through the same guard).

Dagster OSS runs a GraphQL mutation sent by GET, from any Host: a link or an ``<img src>`` on any
page the operator visits reaches it, and so does DNS rebinding. The guard refuses both, asks for
the generated password, and serves TLS with its own certificate (curl verifies it: ``--cacert``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, expect
from playwright.sync_api import Error as PlaywrightError

from mlops_assets.security.ui_guard import USER, UiGuardError, prepare
from tests.ui.conftest import ARTIFACTS, UiServer

# The UI tests share one worker under `make test` (tests/conftest.py): they all wait on Dagster.
pytestmark = pytest.mark.xdist_group("ui")

MUTATION = "mutation { setNuxSeen }"  # harmless: records that the "join the community" nag was seen


def test_without_credentials_everything_is_401(ui_server: UiServer) -> None:
    assert ui_server.curl("/", credentials=False)[0] == 401
    assert ui_server.post_json({"query": MUTATION}, "--user", f"{USER}:wrong")[0] == 401
    status, _ = ui_server.curl(
        "/graphql",
        "--header",
        "Content-Type: application/json",
        "--data",
        json.dumps({"query": MUTATION}),
        credentials=False,
    )
    assert status == 401


def test_a_foreign_host_is_refused_before_authentication(ui_server: UiServer) -> None:
    port = ui_server.port
    for host in (f"evil.example:{port}", "evil.example", f"localhost:{port + 1}", "127.0.0.1"):
        assert ui_server.curl("/server_info", "--header", f"Host: {host}")[0] == 421, host
        assert ui_server.curl("/", "--header", f"Host: {host}", credentials=False)[0] == 421
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert ui_server.curl("/server_info", "--header", f"Host: {host}")[0] == 200, host


def test_a_mutation_by_get_is_refused_in_every_spelling(ui_server: UiServer) -> None:
    # What the guard is for: Dagster itself runs it, from any Host.
    direct = requests.get(
        f"http://127.0.0.1:{ui_server.upstream}/graphql",
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
        assert ui_server.curl(path)[0] == 405, path


def test_a_post_without_a_json_body_or_from_another_origin_is_refused(
    ui_server: UiServer,
) -> None:
    # A cross-site <form> posts urlencoded or text/plain, which Dagster reads from the URL.
    in_url = "/graphql?query=mutation%20%7B%20setNuxSeen%20%7D"
    form = "Content-Type: application/x-www-form-urlencoded"
    assert ui_server.curl(in_url, "--request", "POST", "--header", form)[0] == 415
    text = "Content-Type: text/plain; note=application/json"
    body = json.dumps({"query": MUTATION})
    assert ui_server.curl("/graphql", "--header", text, "--data", body)[0] == 415
    origin = "Origin: https://evil.example"
    assert ui_server.post_json({"query": MUTATION}, "--header", origin)[0] == 403
    assert ui_server.curl("/graphql", "--request", "OPTIONS")[0] == 403


def test_a_post_mutation_with_credentials_reaches_dagster(ui_server: UiServer) -> None:
    status, body = ui_server.post_json({"query": MUTATION})
    assert (status, json.loads(body)) == (200, {"data": {"setNuxSeen": True}})
    own_origin = f"Origin: https://localhost:{ui_server.port}"
    status, body = ui_server.post_json({"query": MUTATION}, "--header", own_origin)
    assert (status, json.loads(body)) == (200, {"data": {"setNuxSeen": True}})


def test_the_secrets_are_private_and_the_password_is_not_printed(ui_server: UiServer) -> None:
    assert ui_server.guard.stat().st_mode & 0o777 == 0o700
    for name in ("password", "htpasswd", "key.pem"):
        assert (ui_server.guard / name).stat().st_mode & 0o777 == 0o600, name
    assert ui_server.password not in ui_server.log.read_text()
    assert len(ui_server.password) >= 32


def test_the_ui_loads_in_chromium_with_credentials(ui_server: UiServer, browser: Browser) -> None:
    refused = browser.new_context(ignore_https_errors=True)
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        refused.new_page().goto(ui_server.url)
    refused.close()
    context = ui_server.browser_context(browser, viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    # The UI's GraphQL websocket (subscriptions): what the server sends on it, once it is open.
    received: list[str] = []
    page.on(
        "websocket",
        lambda websocket: websocket.on("framereceived", lambda frame: received.append(str(frame))),
    )
    try:
        page.goto(f"{ui_server.url}/asset-groups", timeout=60_000)
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
    # Nothing the UI itself asked for was refused (the guard's rules cost it nothing): here,
    # nor in the other tests of tests/ui/, which went through the same guard before this one.
    browser_lines = [
        line
        for line in (ui_server.guard / "access.log").read_text().splitlines()
        if "HeadlessChrome" in line and " - mlops [" in line
    ]
    assert browser_lines
    # 499: nginx's note that the browser left before the answer (a test moving to another page
    # while the UI polled), not a refusal.
    refused_lines = [line for line in browser_lines if re.search(r'" (?!499 )[45]\d\d ', line)]
    assert not refused_lines, refused_lines


def test_an_mlops_home_nginx_cannot_quote_is_refused(tmp_path: Path) -> None:
    for name in ('a"b', "a$b", "a;b", "a{b", "a\nb"):
        with pytest.raises(UiGuardError, match="MLOPS_HOME"):
            prepare(tmp_path / name, 3000, 3001)
        assert not (tmp_path / name).exists()
