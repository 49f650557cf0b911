"""A shared Dagster instance: run, event-log and schedule storage on PostgreSQL when
MLOPS_DAGSTER_PG_URL is set, SQLite under $MLOPS_HOME/dagster otherwise.

The end-to-end test runs against a real PostgreSQL server: Debian's `postgresql` package (`make
test` installs it), started here as a throwaway cluster on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg2
import pytest
import yaml

from mlops_assets.instance_storage import SqliteEventLogStorage
from mlops_assets.run.instance import ensure_dagster_home
from mlops_assets.sample_data.generator import GeneratorConfig, generate
from mlops_assets.settings import DAGSTER_PG_URL_VARIABLE, get_settings
from tests.conftest import free_port, mlops_here

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)

BIN = Path(sys.executable).parent
PG_VERSIONS_DIR = Path("/usr/lib/postgresql")
SCHEDULE = "daily_pipeline_schedule"
# What earlier versions of mlops wrote: homes created then must follow the variable too.
_COMMON = """\
telemetry:
  enabled: false
concurrency:
  pools:
    # Every DuckDB writer runs in the pool `duckdb_writer`: one writer at a time.
    default_limit: 1
"""
EARLIER_GENERATED_YAMLS = (
    "# Written by mlops on first use; edit freely. Storage defaults to SQLite under this "
    "directory.\n" + _COMMON,
    f"""\
# Written by mlops. While this file is unchanged, mlops rewrites it to follow
# {DAGSTER_PG_URL_VARIABLE} (set: PostgreSQL storage, unset: SQLite here). Edit it and it is yours:
# mlops then leaves it alone, storage included.
# Storage: SQLite under this directory (runs, event logs, schedules).
"""
    + _COMMON,
)


def _dagster_yaml(home: Path, monkeypatch: pytest.MonkeyPatch, url: str | None) -> Path:
    """What `mlops run` / `mlops ui` leave in ``home`` with MLOPS_DAGSTER_PG_URL = ``url``."""
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # restored after the test
    if url:
        monkeypatch.setenv(DAGSTER_PG_URL_VARIABLE, url)
    else:
        monkeypatch.delenv(DAGSTER_PG_URL_VARIABLE, raising=False)
    dagster_home = ensure_dagster_home(get_settings())
    assert "DAGSTER_HOME" not in os.environ  # the instance is opened from its path
    return dagster_home / "dagster.yaml"


def _assert_platform_settings(config: dict) -> None:
    assert config["telemetry"] == {"enabled": False}
    assert config["concurrency"] == {"pools": {"default_limit": 1}}
    assert config["run_queue"] == {"dequeue_interval_seconds": 1}


def test_dagster_yaml_follows_the_variable_and_never_holds_the_url(tmp_path, monkeypatch):
    url = "postgresql://dagster:s3cret-pw@db.internal:5432/dagster"
    path = _dagster_yaml(tmp_path, monkeypatch, url)
    text = path.read_text()
    config = yaml.safe_load(text)
    assert config["storage"] == {
        "postgres": {"postgres_url": {"env": DAGSTER_PG_URL_VARIABLE}}
    }  # runs, event logs and schedules, all three
    assert "s3cret-pw" not in text and "db.internal" not in text
    _assert_platform_settings(config)

    path = _dagster_yaml(tmp_path, monkeypatch, None)  # unset later: back to SQLite
    config = yaml.safe_load(path.read_text())
    assert "storage" not in config
    _assert_platform_settings(config)
    with dg.DagsterInstance.from_config(str(path.parent)) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert isinstance(instance.event_log_storage, SqliteEventLogStorage)
        instance.report_runless_asset_event(dg.AssetMaterialization("somewhere"))
    assert (path.parent / "history" / "runs.db").exists()
    assert (path.parent / "history" / "runs" / "index.db").exists()  # Dagster's own layout

    path = _dagster_yaml(tmp_path, monkeypatch, url)  # and set again
    assert yaml.safe_load(path.read_text())["storage"]["postgres"]


def test_a_hand_edited_dagster_yaml_is_kept_and_an_earlier_generated_one_follows(
    tmp_path, monkeypatch
):
    url = "postgresql://dagster:pw@127.0.0.1/dagster"
    path = _dagster_yaml(tmp_path, monkeypatch, None)
    edited = path.read_text() + "run_retries:\n  enabled: true\n"
    path.write_text(edited)
    assert _dagster_yaml(tmp_path, monkeypatch, url).read_text() == edited
    assert _dagster_yaml(tmp_path, monkeypatch, None).read_text() == edited

    # What the version before wrote (for this home or another): all but the run queue.
    before_run_queue = [
        text[: text.index("run_queue:")]
        for text in (
            _dagster_yaml(tmp_path / "postgres", monkeypatch, url).read_text(),
            _dagster_yaml(tmp_path / "sqlite", monkeypatch, None).read_text(),
        )
    ]
    for earlier in (*EARLIER_GENERATED_YAMLS, *before_run_queue):
        path.write_text(earlier)  # a home from an earlier version of mlops
        config = yaml.safe_load(_dagster_yaml(tmp_path, monkeypatch, url).read_text())
        assert config["storage"]["postgres"]["postgres_url"] == {"env": DAGSTER_PG_URL_VARIABLE}
        _assert_platform_settings(config)
        assert [p.name for p in path.parent.iterdir()] == ["dagster.yaml"]  # no partial file


def test_a_moved_home_writes_its_event_logs_under_its_new_directory(tmp_path, monkeypatch):
    old = _dagster_yaml(tmp_path / "old home", monkeypatch, None)
    new = tmp_path / "new: home"
    shutil.copytree(old.parent.parent, new)  # the whole MLOPS_HOME, moved
    config = yaml.safe_load(_dagster_yaml(new, monkeypatch, None).read_text())
    assert config["event_log_storage"]["config"]["base_dir"] == str(
        new / "dagster" / "history" / "runs"
    )
    edited = _dagster_yaml(new, monkeypatch, None)
    edited.write_text(edited.read_text().replace("2x faster", "faster"))
    shutil.copytree(new, tmp_path / "third")  # an edited file stays as it is, path included
    assert _dagster_yaml(tmp_path / "third", monkeypatch, None).read_text() == edited.read_text()


# -- a real PostgreSQL server -------------------------------------------------------------------


def _postgres_bin() -> Path:
    """The newest installed server's bin directory (/usr/lib/postgresql/<version>/bin)."""
    found = [p.parent for p in PG_VERSIONS_DIR.glob("*/bin/pg_ctl")]
    if not found:
        pytest.fail(
            f"no PostgreSQL server under {PG_VERSIONS_DIR}/*/bin: `make postgresql` installs "
            "Debian's postgresql package (or: apt-get install postgresql)",
            pytrace=False,
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: under root, it runs as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no `postgres` user to start PostgreSQL as")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (password auth) with an empty database for
    Dagster; yields its URL and stops and removes the cluster afterwards."""
    bin_dir, user = _postgres_bin(), _server_user()
    # Not under pytest's tmp dir: its parents are private to the test user, the server's may not
    # be.
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    data, log, pwfile = root / "data", root / "server.log", root / "pwfile"
    password, port = secrets.token_hex(12), free_port()
    pwfile.write_text(password + "\n")
    if user:
        for path in (root, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)

    def server(*args: str) -> subprocess.CompletedProcess:
        as_user = ["runuser", "-u", user.pw_name, "--"] if user else []
        command = [*as_user, str(bin_dir / args[0]), *args[1:]]
        return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)

    try:
        initdb = server(
            "initdb", "-D", str(data), "-U", "mlops", "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        assert initdb.returncode == 0, initdb.stdout + initdb.stderr
        started = server(
            "pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
            "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off",
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr + log.read_text()
        admin = psycopg2.connect(
            host="127.0.0.1", port=port, user="mlops", password=password, dbname="postgres"
        )
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("create database dagster_shared")
        admin.close()
        yield f"postgresql://mlops:{password}@127.0.0.1:{port}/dagster_shared"
    finally:
        if (data / "postmaster.pid").exists():
            server("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _rows(url: str, sql: str, *params) -> list[tuple]:
    with psycopg2.connect(url) as con, con.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    con.close()
    return rows


def test_two_people_share_runs_events_and_schedules_in_postgres(
    postgres_url, tmp_path, monkeypatch
):
    """Alice runs the pipeline, Bob (another MLOPS_HOME) starts a schedule; each sees the
    other's work, all of it in PostgreSQL and none in SQLite under either home."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    password = urlsplit(postgres_url).password
    generate(GeneratorConfig(days=3, rows_per_day=20, seed=3), alice / "landing")
    monkeypatch.setenv(DAGSTER_PG_URL_VARIABLE, postgres_url)
    # Alice's run in this process (the CLI's command); Bob's schedule from Dagster's own CLI.
    run = mlops_here("run", "--json", "--no-table-metadata", home=alice, monkeypatch=monkeypatch)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    run_id = json.loads(run.stdout)["run_id"]

    bob_dagster = _dagster_yaml(bob, monkeypatch, postgres_url).parent
    env = {**os.environ, "MLOPS_HOME": str(bob), "DAGSTER_HOME": str(bob_dagster)}
    started = subprocess.run(
        [str(BIN / "dagster"), "schedule", "start", SCHEDULE, "-m", "mlops_assets.definitions"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert started.returncode == 0 and f"Started schedule {SCHEDULE}" in started.stdout, (
        started.stdout[-2000:],
        started.stderr[-2000:],
    )

    materialization = dg.DagsterEventType.ASSET_MATERIALIZATION
    with dg.DagsterInstance.from_config(str(bob_dagster)) as instance:  # Bob sees Alice's run
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        events = instance.all_logs(run_id, of_type=materialization)
        keys = {e.dagster_event.asset_key.to_user_string() for e in events}
        assert {"raw/applications", "marts/loan_applications", "features/loan_features"} <= keys
        marts = instance.get_latest_materialization_event(
            dg.AssetKey(["marts", "loan_applications"])
        )
        assert marts.run_id == run_id
        assert instance.get_materialized_partitions(dg.AssetKey(["raw", "applications"])) == {
            "2025-01-01", "2025-01-02", "2025-01-03"
        }  # fmt: skip
    with dg.DagsterInstance.from_config(str(alice / "dagster")) as instance:  # and Alice his
        states = [s for s in instance.all_instigator_state() if s.name == SCHEDULE]
        assert [s.status.value for s in states] == ["RUNNING"]

    # The rows are in PostgreSQL itself ...
    assert _rows(postgres_url, "select status from runs where run_id = %s", run_id) == [
        ("SUCCESS",)
    ]
    (stored,) = _rows(
        postgres_url,
        "select count(*) from event_logs where run_id = %s and dagster_event_type = %s",
        run_id,
        materialization.value,
    )
    assert stored == (len(events),) and len(events) >= 3
    assert _rows(postgres_url, "select instigator_type, status from instigators") == [
        ("SCHEDULE", "RUNNING")
    ]
    # ... not in SQLite under either home, and the password is nowhere on disk or in the output.
    for home in (alice, bob):
        dagster_home = home / "dagster"
        assert not list(dagster_home.rglob("*.db")), sorted(dagster_home.rglob("*"))
        assert not (dagster_home / "history").exists()
        assert not (dagster_home / "schedules").exists()
        leaks = [p for p in home.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
        assert leaks == []
    for output in (run.stdout, run.stderr, started.stdout, started.stderr):
        assert password not in output
