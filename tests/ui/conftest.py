"""A live `mlops ui --secure` (nginx in front of dagster-webserver and its daemon) and Debian's
Chromium, for the UI tests: every page, click and GraphQL query of them goes through the guard,
with its password, over TLS (curl and requests verify its certificate).

The server gets a home of its own with freshly generated landing files (UI_DATA: the fewest
landing days and rows for which "Materialize all" still trains both models) dated so that the
last landing day is today (UTC), and MLOPS_FIRST_LANDING_DATE set to the first: the daily
partitions of the raw tables are then exactly the landing days, so "All" in the UI's launch
dialog means every landing file.

Screenshots, the server's log and the timings go to test-artifacts/ui/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from mlops_assets.sample_data.generator import GeneratorConfig, generate
from mlops_assets.security.ui_guard import USER
from tests.conftest import BIN, free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"

# Debian's chromium package (installed by `make test` / .ci/run), never a Playwright download.
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium phones home, and a closed network refuses it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The landing data of the shared server: few landing days (each a partition of every daily
# asset), yet every asset is materialized, both models included. Outcomes arrive 28-84 days
# after an application, so only the first days' applications are labelled: 36 days of 250
# applications give 174 outcomes, enough for the loss regressor, which learns from the
# labelled defaults alone. No drift shift, and none found in these days' reports: a drifted
# day would start a retraining run (the retrain sensor) that the test would wait for.
UI_DATA = GeneratorConfig(days=36, rows_per_day=250, seed=7)

# Seconds. Generous for a loaded 2-core machine, where starting `mlops ui` has taken 260 s and
# a run's subprocess several minutes to load the definitions: a wait that runs out says what
# was stuck (the runs in progress and the tail of the server's log).
SERVER_START_TIMEOUT = 600  # dbt parse, keyring, code location load
RUN_TIMEOUT = 900  # one run, from its launch (queued, then its subprocess starting) to its end
STOP_WITHIN = 10.0  # `mlops ui` and everything it started are gone this long after a signal
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
# Backfill statuses that are still moving; anything else is final.
ACTIVE_BACKFILL_STATUSES = {"REQUESTED", "CANCELING", "FAILING"}

ACTIVE_RUNS = """
{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    ... on Runs { results { runId status jobName tags { key value } } } } }
"""

expect.set_options(timeout=30_000)

RUN_EVENTS = """
query RunEvents($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      eventConnection(afterCursor: null) {
        events {
          __typename
          ... on MessageEvent { message level stepKey }
          ... on ExecutionStepFailureEvent { error { message causes { message } } }
          ... on RunFailureEvent { error { message causes { message } } }
        }
      }
    }
  }
}
"""

BACKFILL = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      error { message }
      runs(limit: 100) { runId status }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized
            numPartitionsFailed
          }
          ... on UnpartitionedAssetStatus { assetKey { path } inProgress materialized failed }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


def record_timing(name: str, seconds: float) -> None:
    """Append a measured duration to test-artifacts/ui/timings.json."""
    path = ARTIFACTS / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[name] = round(seconds, 1)
    path.write_text(json.dumps(timings, indent=2) + "\n")


@dataclasses.dataclass(frozen=True)
class UiServer:
    port: int  # nginx's
    upstream: int  # the Dagster webserver's, behind nginx
    guard: Path  # $MLOPS_HOME/ui-guard: password, certificate, nginx's logs
    password: str = dataclasses.field(repr=False)
    home: Path
    landing_days: list[str]
    log: Path
    process: subprocess.Popen = dataclasses.field(compare=False, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def certificate(self) -> str:
        return str(self.guard / "cert.pem")

    def request(self, method: str, path: str, **options) -> requests.Response:
        """``method`` ``path`` through the guard, with the password, the certificate
        verified."""
        options.setdefault("timeout", 60)
        return requests.request(
            method, f"{self.url}{path}", auth=(USER, self.password), verify=self.certificate,
            **options,
        )  # fmt: skip

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """POST to the webserver's /graphql, through the guard; the ``data`` of an answer
        without errors."""
        response = self.request(
            "POST", "/graphql", json={"query": query, "variables": variables or {}}
        )
        body = response.json()
        assert response.ok and not body.get("errors"), (response.status_code, body)
        return body["data"]

    def curl(self, path: str, *args: str, credentials: bool = True) -> tuple[int, str]:
        """curl (verifying the guard's certificate) -> (HTTP status, body)."""
        auth = ["--user", f"{USER}:{self.password}"] if credentials else []
        result = subprocess.run(
            [
                *("curl", "--silent", "--show-error", "--max-time", "30", "--write-out"),
                *("\n%{http_code}", "--cacert", self.certificate),
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

    def browser_context(self, browser: Browser, **options) -> BrowserContext:
        """A browser context that gives the guard its password (and accepts its self-signed
        certificate)."""
        return browser.new_context(
            http_credentials={"username": USER, "password": self.password},
            ignore_https_errors=True,
            **options,
        )

    def run_status(self, run_id: str) -> str:
        data = self.graphql(
            "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]
        assert data["__typename"] == "Run", data
        return data["status"]

    def active_runs(self) -> list[dict]:
        """The runs queued or in progress."""
        return self.graphql(ACTIVE_RUNS)["runsOrError"]["results"]

    def diagnosis(self) -> str:
        """What the instance is busy with: each run queued or in progress (status, job, what
        launched it), and the tail of the server's log (the daemon's and the runs' lines)."""
        try:
            runs = [
                f"  {run['runId'][:8]} {run['status']} {run['jobName']} "
                + " ".join(
                    f"{tag['key']}={tag['value']}"
                    for tag in run["tags"]
                    if tag["key"] in {"dagster/backfill", "dagster/sensor_name", "mlops/trigger"}
                )
                for run in self.active_runs()
            ]
        except Exception as error:  # the server itself may be what is stuck
            runs = [f"  (could not list them: {error!r})"]
        return (
            "runs queued or in progress:\n"
            + ("\n".join(runs) or "  none")
            + f"\n--- tail of {self.log}:\n{_log_tail(self.log)}"
        )

    def wait_for_run(self, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
        """Poll the run until it is over; its final status."""
        deadline = time.monotonic() + timeout
        while (status := self.run_status(run_id)) not in TERMINAL_RUN_STATUSES:
            assert time.monotonic() < deadline, (
                f"run {run_id} still {status} after {timeout} s\n{self.diagnosis()}"
            )
            time.sleep(2)
        return status

    def wait_until_idle(self, timeout: float = RUN_TIMEOUT) -> None:
        """Until no run is queued or in progress (a sensor's, say)."""
        deadline = time.monotonic() + timeout
        while self.active_runs():
            assert time.monotonic() < deadline, (
                f"runs still going after {timeout} s\n{self.diagnosis()}"
            )
            time.sleep(2)

    def run_errors(self, run_id: str) -> str:
        """The failure and error messages of a run, to explain a failed assertion."""
        run = self.graphql(RUN_EVENTS, {"runId": run_id})["runOrError"]
        lines = [f"run {run_id}: {run.get('status')}"]
        for event in run.get("eventConnection", {}).get("events", []):
            error = event.get("error") or {}
            causes = [cause["message"] for cause in error.get("causes", [])]
            if error or event.get("level") == "ERROR":
                messages = [event.get("message"), error.get("message"), *causes]
                lines.append(f"[{event.get('stepKey')}] " + " / ".join(m for m in messages if m))
        return "\n".join(lines)

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> dict:
        """Poll the backfill (the daemon runs it) until it is over: its status is final, or
        every run it launched so far succeeded and, together, they materialized every asset
        partition it targets (the daemon would say so only on its next pass). Returns the
        backfill as last read."""
        deadline = time.monotonic() + timeout
        while True:
            backfill = self.graphql(BACKFILL, {"backfillId": backfill_id})
            backfill = backfill["partitionBackfillOrError"]
            assert backfill["__typename"] == "PartitionBackfill", backfill
            if backfill["status"] not in ACTIVE_BACKFILL_STATUSES or self._materialized(backfill):
                return backfill
            runs = {run["runId"][:8]: run["status"] for run in backfill["runs"]}
            assert time.monotonic() < deadline, (
                f"backfill {backfill_id} still {backfill['status']} after {timeout} s: {runs}\n"
                f"{json.dumps(backfill['assetBackfillData'])}\n{self.diagnosis()}"
            )
            time.sleep(2)

    def _materialized(self, backfill: dict) -> bool:
        """Whether the backfill's runs all succeeded and materialized all it targets."""
        runs = {run["runId"] for run in backfill["runs"]}
        statuses = backfill["assetBackfillData"]["assetBackfillStatuses"]
        if not runs or not statuses or any(run["status"] != "SUCCESS" for run in backfill["runs"]):
            return False
        nodes = self.graphql(
            """query($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) {
                assetKey { path } assetMaterializations(limit: 200) { runId partition } } }""",
            {"keys": [{"path": status["assetKey"]["path"]} for status in statuses]},
        )["assetNodes"]
        partitions = {
            "/".join(node["assetKey"]["path"]): {
                event["partition"]
                for event in node["assetMaterializations"]
                if event["runId"] in runs
            }
            for node in nodes
        }
        return all(
            len(partitions.get("/".join(status["assetKey"]["path"]), ()))
            >= status.get("numPartitionsTargeted", 1)
            for status in statuses
        )

    def backfill_failures(self, backfill: dict) -> str:
        failed = [run["runId"] for run in backfill["runs"] if run["status"] != "SUCCESS"]
        return "\n\n".join(
            [f"backfill {backfill['id']}: {backfill['status']} {backfill['error']}"]
            + [json.dumps(backfill["assetBackfillData"]["assetBackfillStatuses"])]
            + [self.run_errors(run_id) for run_id in failed]
        )


def backfill_targets(backfill: dict) -> list[str]:
    """The asset keys (``a/b``) a backfill targets."""
    statuses = backfill["assetBackfillData"]["assetBackfillStatuses"]
    return ["/".join(status["assetKey"]["path"]) for status in statuses]


def backfill_succeeded(backfill: dict) -> bool:
    """Every run of the backfill succeeded and no targeted asset failed: stricter than
    Dagster's COMPLETED_SUCCESS, which a backfill also gets when a run failed after
    materializing its assets (a dbt test that errors, say)."""
    statuses = backfill["assetBackfillData"]["assetBackfillStatuses"]
    return (
        backfill["status"] in ACTIVE_BACKFILL_STATUSES | {"COMPLETED_SUCCESS"}
        and bool(backfill["runs"])
        and all(run["status"] == "SUCCESS" for run in backfill["runs"])
        and not any(s.get("numPartitionsFailed") or s.get("failed") for s in statuses)
    )


def _log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _wait_until_loaded(server: UiServer, process: subprocess.Popen, timeout: float) -> None:
    """Until the webserver answers and the code location is loaded (or failed to load)."""
    deadline = time.monotonic() + timeout
    query = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    while True:
        assert process.poll() is None, (
            f"`mlops ui` exited with {process.returncode}:\n{_log_tail(server.log)}"
        )
        # nginx answers 502 until the webserver behind it listens.
        with contextlib.suppress(requests.ConnectionError, requests.Timeout, requests.HTTPError):
            server.request("GET", "/server_info", timeout=5).raise_for_status()
            entries = server.graphql(query)["workspaceOrError"]["locationEntries"]
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                errors = [
                    entry["locationOrLoadError"]
                    for entry in entries
                    if entry["locationOrLoadError"]["__typename"] == "PythonError"
                ]
                assert not errors, f"code location failed to load: {errors}"
                return
        assert time.monotonic() < deadline, (
            f"the UI was not up after {timeout} s:\n{_log_tail(server.log)}"
        )
        time.sleep(1)


def start_ui(args: list[str], env: dict[str, str], log: Path, preexec_fn=None) -> subprocess.Popen:
    """`mlops ui ARGS` from the repository, its output to ``log``, in a process group of its
    own (so a test's signal reaches it alone, and teardown the whole group)."""
    with log.open("w") as output:
        return subprocess.Popen(
            [str(BIN / "mlops"), "ui", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )


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


def assert_signal_stops_everything(
    process: subprocess.Popen, signum: int, log: Path, ports: list[int]
) -> None:
    """Send ``signum`` to `mlops ui --secure` alone (as a service manager or kill does): it
    exits with 0 within STOP_WITHIN seconds, and so does every process it started (nginx, the
    Dagster webserver, the daemon, the code servers, any run); ``ports`` are free."""
    tree = psutil.Process(process.pid).children(recursive=True)
    commands = " | ".join(describe(tree))
    for server in ("nginx", "dagster_webserver", "dagster._daemon", "code-server", "api grpc"):
        assert server in commands, f"no {server} among {commands}"
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        assert process.wait(timeout=STOP_WITHIN) == 0, _log_tail(log)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`mlops ui` still running {STOP_WITHIN} s after the signal:\n{_log_tail(log)}")
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


def ignore_sigint() -> None:
    """As `mlops ui &` in a non-interactive shell starts it (`dg dev` alone then ignored
    SIGTERM too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(process: subprocess.Popen) -> None:
    """Stop `mlops ui`: on SIGTERM it stops everything it started (webserver, daemon, code
    servers, runs; tests/ui/test_ui_stop.py proves it) and exits; its process group is
    killed if it has not within 30 s."""
    group = process.pid
    with contextlib.suppress(ProcessLookupError):  # stopped already (tests/ui/test_ui_stop.py)
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(group, 0)  # anyone left in the group?
        except ProcessLookupError:
            break
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait(timeout=30)


# Materialize all first, on a fresh instance: a run of the raw tables before it (the GraphQL
# test's) makes the automation sensor queue dbt, features, scoring and drift runs, which the
# backfill's first run then waits behind on the one-slot pool `duckdb_writer` (minutes each on
# a loaded machine).
SHARED_SERVER_ORDER = ("test_ui_materialize_all.py", "test_graphql_api.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stops_ui_server: stops the shared `mlops ui` (run after every other test)"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Among the tests of tests/ui/, in their places: those that need no server first, then
    those of the shared server in SHARED_SERVER_ORDER (the others after them), the one that
    stops it last. The same order on
    every xdist worker, and `--dist loadgroup` keeps a group's tests in this order on one
    worker."""
    here = Path(__file__).parent

    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("stops_ui_server"):
            return (2, 0)
        if "ui_server" not in getattr(item, "fixturenames", ()):
            return (0, 0)
        module = Path(item.path).name
        order = SHARED_SERVER_ORDER
        return (1, order.index(module) if module in order else len(order))

    places = [i for i, item in enumerate(items) if here in Path(item.path).parents]
    ordered = sorted((items[i] for i in places), key=rank)
    for place, item in zip(places, ordered, strict=True):
        items[place] = item


def _guard_started(log: Path, process: subprocess.Popen) -> int:
    """The upstream port from `mlops ui --secure`'s line saying nginx listens (its password
    and certificate exist by then)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not (found := re.search(r"nginx in front of 127\.0\.0\.1:(\d+)", log.read_text())):
        assert process.poll() is None, f"`mlops ui --secure` exited:\n{_log_tail(log)}"
        assert time.monotonic() < deadline, (
            f"no guard after {SERVER_START_TIMEOUT} s:\n{_log_tail(log)}"
        )
        time.sleep(0.5)
    return int(found.group(1))


@pytest.fixture(scope="package")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """`mlops ui --secure --port N` against a fresh home with UI_DATA's landing days ending
    today, as `make ui` runs it with the guard, in the background of a script (SIGINT
    ignored); stopped (with nginx, its daemon, code server and runs) after tests/ui/, by
    tests/ui/test_ui_stop.py."""
    started = time.monotonic()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timings.json").unlink(missing_ok=True)
    home = tmp_path_factory.mktemp("ui_home")
    today = datetime.now(UTC).date()
    config = dataclasses.replace(UI_DATA, start_date=today - timedelta(days=UI_DATA.days - 1))
    days = [(config.start_date + timedelta(days=d)).isoformat() for d in range(config.days)]
    port = free_port()
    env = {
        **os.environ,
        "MLOPS_HOME": str(home),
        "MLOPS_FIRST_LANDING_DATE": days[0],
        # As `make ui`: the venv's bin on PATH, where dagster-dbt looks for `dbt`.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for inherited in ("DAGSTER_HOME", "MLOPS_KEYRING", "DASK_SCHEDULER_ADDRESS"):
        env.pop(inherited, None)
    log = ARTIFACTS / "dagster-ui.log"
    process = start_ui(["--secure", "--port", str(port)], env, log, preexec_fn=ignore_sigint)
    try:
        # The landing files, while the server loads its definitions (nothing reads them before
        # a run: the partitions come from MLOPS_FIRST_LANDING_DATE).
        generate(config, home / "landing")
        upstream = _guard_started(log, process)
        guard = home / "ui-guard"
        password = (guard / "password").read_text().strip()
        server = UiServer(port, upstream, guard, password, home, days, log, process)
        _wait_until_loaded(server, process, SERVER_START_TIMEOUT)
        # What the "Skip" of Dagster's "Join the Dagster community" dialog records: otherwise
        # that dialog pops up over the first page, a second after it loads, mid-click.
        assert server.graphql("mutation { setNuxSeen }")["setNuxSeen"] is not None
        record_timing("ui_server_start", time.monotonic() - started)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, ui_server: UiServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser page that knows the server's password; its last state is saved as
    <test>-last.png."""
    context = ui_server.browser_context(browser, viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.set_default_navigation_timeout(60_000)
    # Should "Join the Dagster community" show all the same (ui_server marks it seen), skip it.
    community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    page.add_locator_handler(
        community, lambda dialog: dialog.get_by_role("button", name="Skip").click()
    )
    yield page
    with contextlib.suppress(Exception):
        page.screenshot(path=ARTIFACTS / f"{request.node.name}-last.png")
    context.close()
