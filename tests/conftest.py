"""Shared fixtures: small generated landing data and one real `mlops run` per session (the
reference home), which the tests read or copy."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest
from filelock import FileLock

from mlops_assets.run.instance import ensure_dagster_home
from mlops_assets.sample_data.generator import GeneratorConfig, generate
from mlops_assets.security.keyring import Keyring
from mlops_assets.security.ui_guard import free_port
from mlops_assets.settings import Settings

BIN = Path(sys.executable).parent

# The suite never touches a developer's shared services (a shared Dagster instance, a Dask
# cluster): tests that need one start their own and pass it explicitly.
for _variable in ("MLOPS_DAGSTER_PG_URL", "DASK_SCHEDULER_ADDRESS"):
    os.environ.pop(_variable, None)

# 40 days so that outcomes (4-12 weeks after the application) exist for the first days;
# drift from day 30 so both regimes are present.
SMALL = GeneratorConfig(days=40, rows_per_day=150, seed=7, drift_from_day=30)


def mlops(
    *args: str, home: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the `mlops` console script as a user would, against ``home`` (``env``: more
    variables)."""
    env = {**os.environ, "MLOPS_HOME": str(home), **(env or {})}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [str(BIN / "mlops"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def mlops_here(
    *args: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> subprocess.CompletedProcess:
    """`mlops *args` against ``home`` in this process (typer's CliRunner): its exit code and
    what it printed on stdout and on stderr, as :func:`mlops` gives them, without a process
    start and its imports. An exception escaping the command (what a user would see as a
    traceback) fails the test."""
    from typer.testing import CliRunner

    from mlops_assets.cli import app

    monkeypatch.setenv("MLOPS_HOME", str(home))
    for variable in ("MLOPS_KEYRING", "DAGSTER_HOME"):
        monkeypatch.delenv(variable, raising=False)
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"mlops {' '.join(args)} raised") from result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the groups off the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers (`--dist loadgroup`): tests sharing a
    fixture stay on one worker: the live UI server (built once), the pipeline-run home (a
    copy of the reference home that its tests read and write in turn), and a module's tests
    that use one of its module-scoped fixtures (a trained model, a generated landing), which
    each worker running one of them would otherwise build again."""
    for item in items:
        group = _xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    if config.getvalue("dist") == "loadgroup":  # a plain run keeps each module together
        costly_first(items)


def costly_first(items: list[pytest.Item]) -> None:
    """Put the groups holding a `costly` test first, the rest after, each in collection order:
    the workers take groups in this order (`--no-loadscope-reorder`), so the longest work
    starts first, the short tests fill in at the end, and the two workers finish together."""
    costly = {_group_of(item) for item in items if item.get_closest_marker("costly")}
    items.sort(key=lambda item: _group_of(item) not in costly)  # a stable sort


def _group_of(item: pytest.Item) -> str:
    """The xdist group of ``item``, or its own id when it has none (a group of one)."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return item.nodeid
    return str(marker.kwargs.get("name", marker.args[0] if marker.args else "default"))


def _xdist_group(item: pytest.Item) -> str | None:
    """The worker group of ``item`` (None: any worker, or the group its module gives it)."""
    for fixture, group in (("ui_server", "ui"), ("pipeline_run", "pipeline_run")):
        if fixture in item.fixturenames:
            return group
    definitions = getattr(item, "_fixtureinfo", None)
    if item.get_closest_marker("xdist_group") or definitions is None:
        return None
    in_effect = (definitions.name2fixturedefs.get(name) for name in item.fixturenames)
    if any(defs and defs[-1].scope == "module" for defs in in_effect):  # not the overridden
        return f"module:{item.nodeid.split('::')[0]}"
    return None


UNGROUPED = pytest.StashKey[set]()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker with `--dist loadgroup`, xdist has suffixed a grouped test's id with
    its group by now. Without the suffix the groups are silently ignored (pytest-xdist#1386)
    and every worker builds the shared fixtures: those tests fail, saying so."""
    config = session.config
    if hasattr(config, "workerinput") and config.getvalue("loadgroup"):
        config.stash[UNGROUPED] = {
            item.nodeid
            for item in session.items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
        }


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.nodeid in item.config.stash.get(UNGROUPED, set()):
        pytest.fail(
            "pytest-xdist ignored this test's xdist_group: check the pytest and pytest-xdist "
            "versions pinned in pyproject.toml (pytest-xdist#1386)",
            pytrace=False,
        )


@pytest.fixture
def keyring(tmp_path) -> Keyring:
    """A fresh keyring (0600 file) for tests that pseudonymise or encrypt."""
    return Keyring.create(tmp_path / "keys" / "keyring.json")


@dataclass(frozen=True)
class DaskCluster:
    address: str  # the scheduler, tcp://127.0.0.1:<port>
    workers: frozenset[str]  # the workers' addresses


@pytest.fixture(autouse=True, scope="module")
def _no_idle_dask_workers() -> Iterator[None]:
    """After each module, the LocalClusters its in-process runs started are closed: idle, their
    workers would take CPU from every later test (~2 CPU-seconds a minute each cluster)."""
    yield
    resources = sys.modules.get("mlops_assets.resources")
    if resources is not None:
        resources.close_local_clusters()


@contextlib.contextmanager
def dask_cluster() -> Iterator[DaskCluster]:
    """A real Dask cluster on 127.0.0.1, as an operator starts one: `dask scheduler` and two
    `dask worker` processes (one thread each), stopped on leaving (idle, it would take CPU
    from every later test)."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    worker = [BIN / "dask", "worker", address, "--nthreads", "1", *common]
    processes = [
        subprocess.Popen(
            [BIN / "dask", "scheduler", "--port", port, *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    processes += [
        subprocess.Popen(
            [*worker, "--name", f"worker-{n}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for n in (1, 2)
    ]
    try:
        deadline = time.monotonic() + 60
        while True:  # the scheduler takes a moment to listen
            try:
                client = Client(address, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with client:
            client.wait_for_workers(2, timeout=60)
            workers = frozenset(client.scheduler_info(n_workers=-1)["workers"])
        yield DaskCluster(address, workers)
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):  # a worker may already be gone
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)


# The e2e run's parallel work goes to `dask_cluster`, in chunks small enough that validation
# and scoring fan out too: the deployment shape of docs "Scaling out", on one machine.
CLUSTER_CHUNK_ROWS = 1_000


# Landing entries `mlops run` must refuse by name, and survive (docs "Trust boundary"): names
# that are not a landing day, a day past the horizon, a link, a FIFO, a folder.
ODD_LANDING_ENTRIES = (
    "outcomes/2025-01-05.csv\n",
    "outcomes/2025-02-30.csv",
    "outcomes/\u0662\u0660\u0662\u0665-\u0660\u0661-\u0660\u0665.csv",
    "outcomes/2099-01-01.csv",
    "outcomes/2025-03-01.csv",  # a symbolic link
    "outcomes/2025-03-02.csv",  # a FIFO
    "outcomes/x.csv",  # a folder
)


def add_odd_landing_entries(landing: Path) -> None:
    """The entries of ODD_LANDING_ENTRIES, beside the generated files (copies of a real one)."""
    real = min((landing / "outcomes").iterdir())
    for name in ODD_LANDING_ENTRIES[:4]:
        (landing / name).write_bytes(real.read_bytes())
    (landing / ODD_LANDING_ENTRIES[4]).symlink_to(real)
    os.mkfifo(landing / ODD_LANDING_ENTRIES[5])
    (landing / ODD_LANDING_ENTRIES[6]).mkdir()


# The reference home: landing files of the SMALL shape with ODD_LANDING_ENTRIES beside them (and
# three more days generated and held back, for the tests whose run must do real work), and one
# completed `mlops run --json` over them, its parallel work on a Dask cluster started as an
# operator starts one (DASK_SCHEDULER_ADDRESS), in chunks of CLUSTER_CHUNK_ROWS. Built once per
# session, whichever worker asks first; tests work on copies.
LATER_DAYS = tuple(
    (SMALL.start_date + timedelta(days=SMALL.days + n)).isoformat() for n in range(3)
)
REFERENCE = replace(SMALL, days=SMALL.days + len(LATER_DAYS))
# A customer line the reference run quarantines (its number of dependents is not a number),
# appended to this landing file: its personal data is stored encrypted.
QUARANTINED_CUSTOMER_FILE = "customers/2025-01-01.csv"
QUARANTINED_CUSTOMER_LINE = (
    "CUS-0999999,Grace Hopper,grace@example.com,+1-555-000-1111,111-22-3333,1906-12-09,"
    "1 Navy Way,Arlington,east,doctorate,single,many,2025-01-01 07:00:00"
)


def _copy_entry(source: str, destination: str) -> None:
    """shutil.copy2, and a FIFO made again (copying one would read it: a FIFO with no writer
    blocks, so shutil refuses)."""
    if stat.S_ISFIFO(os.lstat(source).st_mode):
        os.mkfifo(destination)
    else:
        shutil.copy2(source, destination)


@dataclass(frozen=True)
class ReferenceHome:
    home: Path  # after one `mlops run` over the landing files but LATER_DAYS; never written
    later: Path  # the landing files of LATER_DAYS, as landing/ lays them out
    summary: dict  # that run's `--json` summary
    quarantined_line: int  # QUARANTINED_CUSTOMER_LINE's line number in its file (header: 1)
    workers: frozenset[str]  # the addresses of the Dask workers that run used

    def copy(self, destination: Path, *, later_days: bool = False) -> Path:
        """A copy of the home at ``destination`` (its keyring, so the same pseudonyms; its odd
        landing entries as they are), with the landing files of LATER_DAYS added when
        ``later_days``. Its dagster.yaml follows the copy, as the first `mlops` command in it
        would make it (the reference home was built elsewhere and moved)."""
        shutil.copytree(self.home, destination, symlinks=True, copy_function=_copy_entry)
        ensure_dagster_home(Settings(home=destination))
        if later_days:
            shutil.copytree(self.later, destination / "landing", dirs_exist_ok=True)
        return destination


def built_once(request: pytest.FixtureRequest, name: str, build) -> Path:
    """The directory ``name``, made by ``build(directory)`` once per session: under
    pytest-xdist the first worker builds it in the session's shared temporary directory while
    holding a file lock, the others wait for it and reuse it (a failed build is reported to
    every test that needs it, not retried)."""
    factory = request.getfixturevalue("tmp_path_factory")
    shared = hasattr(request.config, "workerinput")  # the workers' temp dirs share a parent
    root = factory.getbasetemp().parent if shared else factory.getbasetemp()
    directory, failed = root / name, root / f"{name}.failed"
    with FileLock(str(root / f"{name}.lock")):
        if failed.exists():
            pytest.fail(failed.read_text(), pytrace=False)
        if not directory.exists():
            partial = root / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            try:
                build(partial)
            except BaseException as error:
                failed.write_text(f"building {name} failed: {error!r}"[:20_000])
                raise
            partial.rename(directory)
    return directory


def run_here(home: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    """`mlops run --json *args` against ``home`` in this process (:func:`mlops_here`, with the
    variables ``env`` set meanwhile): its summary. A run that fails fails the caller."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for variable, value in (env or {}).items():
            monkeypatch.setenv(variable, value)
        result = mlops_here("run", "--json", *args, home=home, monkeypatch=monkeypatch)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return json.loads(result.stdout)


def _build_reference(directory: Path) -> None:
    generate(REFERENCE, directory / "generated")
    for file in sorted((directory / "generated").glob("*/*.csv")):
        later = file.stem in LATER_DAYS
        target = directory / ("later" if later else "home/landing") / file.parent.name / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        file.rename(target)
    shutil.rmtree(directory / "generated")
    customers = directory / "home" / "landing" / QUARANTINED_CUSTOMER_FILE
    lines = customers.read_text().splitlines()
    customers.write_text("\n".join([*lines, QUARANTINED_CUSTOMER_LINE]) + "\n")
    (directory / "quarantined_line").write_text(str(len(lines) + 1))
    add_odd_landing_entries(directory / "home" / "landing")
    with dask_cluster() as cluster:
        summary = run_here(
            directory / "home",
            env={
                "DASK_SCHEDULER_ADDRESS": cluster.address,
                "MLOPS_CHUNK_ROWS": str(CLUSTER_CHUNK_ROWS),
            },
        )
    (directory / "summary.json").write_text(json.dumps(summary))
    (directory / "workers.json").write_text(json.dumps(sorted(cluster.workers)))


@pytest.fixture(scope="session")
def reference_home(request: pytest.FixtureRequest) -> ReferenceHome:
    """The session's reference home (see REFERENCE), for tests to copy."""
    directory = built_once(request, "reference_home", _build_reference)
    summary = json.loads((directory / "summary.json").read_text())
    line = int((directory / "quarantined_line").read_text())
    workers = frozenset(json.loads((directory / "workers.json").read_text()))
    return ReferenceHome(directory / "home", directory / "later", summary, line, workers)


@dataclass(frozen=True)
class PipelineRun:
    home: Path
    summary: dict
    workers: frozenset[str]  # the Dask workers its parallel work ran on

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"


@pytest.fixture(scope="session")
def pipeline_run(
    tmp_path_factory: pytest.TempPathFactory, reference_home: ReferenceHome
) -> PipelineRun:
    """A copy of the reference home, for the tests that read the run or write after it
    (reveal and forget a customer, run dbt from its CLI, run again): they share it, on one
    worker (xdist group ``pipeline_run``)."""
    home = reference_home.copy(tmp_path_factory.mktemp("pipeline_run") / "home")
    return PipelineRun(home, reference_home.summary, reference_home.workers)


@pytest.fixture(scope="session")
def reference_after_later_days(request: pytest.FixtureRequest, reference_home) -> Path:
    """A home where the reference home's copy ran undisturbed over LATER_DAYS too: what a run
    that was killed, faulted or raced over those days must end as. Never written."""

    def build(directory: Path) -> None:
        run_here(reference_home.copy(directory / "home", later_days=True))

    return built_once(request, "reference_after_later_days", build) / "home"
