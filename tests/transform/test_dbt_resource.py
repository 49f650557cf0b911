"""The platform's dbt resource knows the version of the dbt it runs without starting it, and
the parse started before Dagster is imported writes where Dagster reads."""

import json
import os
import sys
from importlib import metadata
from pathlib import Path

import dagster_dbt.core.resource as dbt_core_resource
import pytest

from mlops_assets.transform.parse import MANIFEST
from mlops_assets.transform.resource import PlatformDbtCli, dbt_project, dbt_resource

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)


def test_the_venvs_dbt_version_is_the_installed_package_without_running_dbt(monkeypatch, tmp_path):
    def no_dbt(*args, **kwargs):
        raise AssertionError(f"dbt was started: {args}")

    monkeypatch.setattr(dbt_core_resource, "check_output", no_dbt)
    resource = dbt_resource(tmp_path)
    assert str(resource._cli_version) == metadata.version("dbt-core")


def test_another_dbt_executable_is_still_asked(monkeypatch, tmp_path):
    other = tmp_path / "dbt"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    asked = []

    def fake_dbt(args, **kwargs):
        asked.append(args)
        return b"Core:\n  - installed: 1.10.3\n"

    monkeypatch.setattr(dbt_core_resource, "check_output", fake_dbt)
    resource = PlatformDbtCli(
        project_dir=dbt_project(), dbt_executable=str(other), target_dir=str(tmp_path)
    )
    assert str(resource._cli_version) == "1.10.3"
    assert asked == [[str(other), "--version"]]


def test_the_early_parse_writes_the_manifest_dagster_loads():
    assert dbt_project().manifest_path == MANIFEST


def test_a_project_that_does_not_parse_fails_with_dbts_message(monkeypatch, tmp_path):
    from mlops_assets.transform import parse

    (tmp_path / "dbt_project.yml").write_text("name: 'broken'\nversion: '1.0'\nprofile: [\n")
    monkeypatch.setattr(parse, "DBT_PROJECT_DIR", tmp_path)
    monkeypatch.setattr(parse, "MANIFEST", tmp_path / "target" / "manifest.json")
    with pytest.raises(parse.DbtParseError, match=r"dbt parse failed \(exit \d\)") as failed:
        parse.DbtParse(os.environ).wait()
    assert "Syntax error near line 4" in str(failed.value)
    assert "\x1b" not in str(failed.value)  # no terminal colour codes in the message
    assert list((tmp_path / "target").glob(".parse-*")) == []


# A dbt that writes its manifest the way dbt does (in place), slowly: half, a pause, the rest.
SLOW_DBT = """#!{python}
import json, pathlib, sys, time
target = pathlib.Path(sys.argv[sys.argv.index("--target-path") + 1])
text = json.dumps({{"nodes": {{"model.x": {{}}}}, "padding": "x" * 100000}})
with (target / "manifest.json").open("w") as handle:
    handle.write(text[: len(text) // 2]); handle.flush(); time.sleep(1.5)
    handle.write(text[len(text) // 2 :])
(target / "partial_parse.msgpack").write_bytes(b"state")
"""


def test_parses_publish_the_manifest_whole_while_it_is_read(monkeypatch, tmp_path):
    """Two parses at once (a code location and `mlops run`, or two runs) and a reader: the
    reader never sees half a manifest, and no private parse directory is left behind."""
    import json
    import sys
    import threading

    from mlops_assets.transform import parse

    slow = tmp_path / "dbt"
    slow.write_text(SLOW_DBT.format(python=sys.executable))
    slow.chmod(0o755)
    manifest = tmp_path / "target" / "dagster" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"nodes": {"model.old": {}}}))
    monkeypatch.setattr(parse, "dbt_executable", lambda: str(slow))
    monkeypatch.setattr(parse, "MANIFEST", manifest)
    reads, errors, stop = [], [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                reads.append(list(json.loads(manifest.read_bytes())["nodes"]))
            except (OSError, ValueError) as error:  # a missing or half-written manifest
                errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        parses = [parse.DbtParse(os.environ) for _ in range(2)]
        assert all(p.wait() == manifest for p in parses)
    finally:
        stop.set()
        reader.join()
    # The reader may not have been scheduled between the last publish and the stop: the
    # manifest the parses left is read once more.
    reads.append(list(json.loads(manifest.read_bytes())["nodes"]))
    assert errors == [] and len(reads) > 10
    assert reads[0] == ["model.old"] and reads[-1] == ["model.x"]
    assert list(manifest.parent.glob(".parse-*")) == []
    assert (manifest.parent / "partial_parse.msgpack").read_bytes() == b"state"


def test_a_parse_for_another_home_reuses_the_partial_parse_state(tmp_path):
    """dbt parses every file again when the profile it renders changes; the platform's parse
    renders the same profile whatever MLOPS_HOME, MLOPS_DUCKDB_MEMORY_LIMIT or
    MLOPS_DBT_CONNECT_ATTEMPTS say, so a second home's parse only reads changed files."""
    import subprocess

    from mlops_assets.transform.parse import DBT_PROJECT_DIR, dbt_executable, parse_environment

    def parse(home: str, memory: str) -> str:
        environ = {
            **os.environ,
            "MLOPS_HOME": home,
            "MLOPS_DUCKDB_MEMORY_LIMIT": memory,
            "MLOPS_DBT_CONNECT_ATTEMPTS": "2",
        }
        done = subprocess.run(
            [dbt_executable(), "parse", "--profiles-dir", ".", "--target-path", str(tmp_path)],
            cwd=DBT_PROJECT_DIR,
            env=parse_environment(environ),
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    parse(str(tmp_path / "one"), "1GB")
    again = parse(str(tmp_path / "two"), "3GB")
    assert "Unable to do partial parsing" not in again, again
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()


def test_the_run_parse_leaves_the_state_its_build_starts_from(tmp_path, monkeypatch):
    """`mlops run` parses for its build (the build's vars, the whole environment) and leaves
    that state in the build's target directory: the build's dbt reads only changed files, even
    when another home's parse published its own state since. From the plain parse's state,
    the same build parses everything again."""
    import shutil
    import subprocess

    from mlops_assets.transform import parse
    from mlops_assets.transform.parse import DBT_PROJECT_DIR, build_vars

    environ = {**os.environ, "MLOPS_HOME": str(tmp_path / "home")}
    for_build = build_vars(str(tmp_path / "home" / "warehouse.duckdb"), "1GB")

    def build_parse(target: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [
                parse.dbt_executable(), "parse", "--profiles-dir", ".",
                "--target-path", str(target), "--vars", for_build,
            ],
            cwd=DBT_PROJECT_DIR, env=environ, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    monkeypatch.setattr(parse, "MANIFEST", tmp_path / "published" / "manifest.json")
    build_target = tmp_path / "home" / "dbt" / "target"
    # Both parses run at once; each publishes when it is waited for, the build's first.
    for_the_build = parse.DbtParse(environ, for_build=(for_build, build_target))
    another_home = parse.DbtParse(environ)
    for_the_build.wait()
    # Another home's parse publishes its state after this one's: the build keeps its own.
    another_home.wait()
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(tmp_path / "published" / "partial_parse.msgpack", plain)
    build, control = build_parse(build_target), build_parse(plain)
    # The control: the build started from the plain parse's state parses everything again.
    # dbt says so before it parses, so it is stopped there.
    said = []
    for line in control.stdout:
        said.append(line)
        if "Unable to do partial parsing" in line:
            control.kill()
            break
    control.communicate()
    assert "Unable to do partial parsing" in "".join(said), "".join(said)
    output, _ = build.communicate()
    assert build.returncode == 0, output
    assert "Unable to do partial parsing" not in output, output
    # The next run in this home starts no parse: the state the build left (the build rewrote
    # it) is still the one dbt reads only changed files from.
    assert parse.build_state_is_current(environ, (for_build, build_target))
    output, _ = build_parse(build_target).communicate()
    assert "Unable to do partial parsing" not in output, output
    assert not (tmp_path / "home" / "warehouse.duckdb").exists()  # a parse opens no warehouse


# A dbt that parses in no time: a manifest naming the models on disk, and a count of its starts.
FAST_DBT = """#!{python}
import json, pathlib, sys
target = pathlib.Path(sys.argv[sys.argv.index("--target-path") + 1])
project = pathlib.Path(sys.argv[sys.argv.index("--project-dir") + 1])
models = sorted(p.stem for p in (project / "models").glob("*.sql"))
(target / "manifest.json").write_text(json.dumps({{"nodes": models}}))
(target / "partial_parse.msgpack").write_text(json.dumps(sys.argv[1:]))
with open(project.parent / "starts", "a") as starts:
    starts.write("parse\\n")
"""


@pytest.fixture
def fast_project(monkeypatch, tmp_path):
    """A dbt project in ``tmp_path/project`` parsed by FAST_DBT (its starts counted in
    ``tmp_path/starts``)."""
    from mlops_assets.transform import parse

    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: 'p'\n")
    (project / "models" / "one.sql").write_text("select 1\n")
    fast = tmp_path / "dbt"
    fast.write_text(FAST_DBT.format(python=sys.executable))
    fast.chmod(0o755)
    monkeypatch.setattr(parse, "dbt_executable", lambda: str(fast))
    monkeypatch.setattr(parse, "DBT_PROJECT_DIR", project)
    monkeypatch.setattr(parse, "MANIFEST", project / "target" / "dagster" / "manifest.json")
    return project


def _starts(project: Path) -> int:
    starts = project.parent / "starts"
    return len(starts.read_text().splitlines()) if starts.exists() else 0


def test_a_manifest_parsed_from_the_files_as_they_are_is_not_parsed_again(fast_project):
    from mlops_assets.transform import parse

    assert not parse.manifest_is_current()  # never parsed
    parse.prepare_dbt_manifest(os.environ, if_changed=True)
    parse.prepare_dbt_manifest(os.environ, if_changed=True)
    assert _starts(fast_project) == 1 and parse.manifest_is_current()
    # dbt's own output, logs and hidden files are not inputs of a parse.
    for name in ("target/run/x.sql", "logs/dbt.log", ".user.yml"):
        (fast_project / name).parent.mkdir(parents=True, exist_ok=True)
        (fast_project / name).write_text("x")
    assert parse.manifest_is_current()
    parse.prepare_dbt_manifest(os.environ)  # asked for without the condition: always parsed
    assert _starts(fast_project) == 2


@pytest.mark.parametrize(
    "change",
    ["edit a model", "add a model", "remove a model", "rename a model", "edit the project file"],
)
def test_a_changed_project_is_parsed_again(fast_project, change):
    from mlops_assets.transform import parse

    parse.prepare_dbt_manifest(os.environ, if_changed=True)
    model = fast_project / "models" / "one.sql"
    if change == "edit a model":
        model.write_text("select 2\n")  # same size, same second: the content tells
    elif change == "add a model":
        (fast_project / "models" / "two.sql").write_text("select 2\n")
    elif change == "remove a model":
        model.unlink()
    elif change == "rename a model":
        model.rename(model.with_name("uno.sql"))
    else:
        (fast_project / "dbt_project.yml").write_text("name: 'q'\n")
    assert not parse.manifest_is_current()
    parse.prepare_dbt_manifest(os.environ, if_changed=True)
    assert _starts(fast_project) == 2 and parse.manifest_is_current()
    names = {p.stem for p in (fast_project / "models").glob("*.sql")}
    assert set(json.loads(parse.MANIFEST.read_text())["nodes"]) == names


def test_a_record_vouches_only_for_the_manifest_its_parse_published(fast_project):
    """Two parses publishing one after the other: the first's record, landing after the
    second's manifest, names the first's manifest file, so it vouches for nothing; a manifest
    written by anyone else (dbt run by hand into the target) is not current either."""
    from mlops_assets.transform import parse

    parse.prepare_dbt_manifest(os.environ)
    record = parse.MANIFEST.parent / parse.INPUTS_RECORD
    first = record.read_text()
    parse.prepare_dbt_manifest(os.environ)
    assert parse.manifest_is_current()
    record.write_text(first)  # the first parse's record, late
    assert not parse.manifest_is_current()
    parse.prepare_dbt_manifest(os.environ)
    parse.MANIFEST.write_text(json.dumps({"nodes": ["other"]}))  # in place, by someone else
    assert not parse.manifest_is_current()
    record.write_text("{not json")
    assert not parse.manifest_is_current()


def test_odd_entries_of_the_project_are_hashed_without_reading_them(fast_project):
    """A FIFO (reading it would block), a dangling link and a file named in no encoding count
    by name; a folder called logs or target below the top level is an input like any other."""
    from mlops_assets.transform import parse

    before = parse.project_digest()
    os.mkfifo(fast_project / "models" / "pipe.sql")
    with_fifo = parse.project_digest()
    (fast_project / "models" / "gone.sql").symlink_to(fast_project / "nowhere.sql")
    with_link = parse.project_digest()
    (fast_project / os.fsdecode(b"models/caf\xe9.sql")).write_text("select 3\n")
    with_odd_name = parse.project_digest()
    (fast_project / "models" / "logs").mkdir()
    (fast_project / "models" / "logs" / "x.sql").write_text("select 4\n")
    with_nested_logs = parse.project_digest()
    digests = [before, with_fifo, with_link, with_odd_name, with_nested_logs]
    assert len(set(digests)) == len(digests)


def test_a_parse_that_could_not_read_the_project_publishes_no_record(fast_project, monkeypatch):
    from mlops_assets.transform import parse

    parse.prepare_dbt_manifest(os.environ)
    assert parse.manifest_is_current()

    def unreadable() -> str:
        raise PermissionError("a file of the project cannot be read")

    readable = parse.project_digest
    monkeypatch.setattr(parse, "project_digest", unreadable)
    parse.prepare_dbt_manifest(os.environ)  # dbt parses it (or says it cannot)
    monkeypatch.setattr(parse, "project_digest", readable)
    assert _starts(fast_project) == 2
    assert parse.MANIFEST.exists() and not parse.manifest_is_current()


BUILD_VARS = '{"warehouse_path": "/h/warehouse.duckdb", "memory_limit": "1GB"}'


@pytest.mark.parametrize(
    "change",
    [
        "edit a model",
        "other vars",
        "another profile variable",
        "a dbt variable",
        "no state",
        "the state rewritten by another build",
        "a manifest published by hand",
    ],
)
def test_a_run_starts_no_parse_only_while_its_build_state_fits(fast_project, tmp_path, change):
    """After a parse for a build, the next run in the same home needs no parse: until a file
    of the project, the build's vars, a variable the profile renders or one of dbt's own
    changes, or the state file or the published manifest is not the parse's any more (dbt
    rewrites its state only when it parsed again: the build of another environment)."""
    from mlops_assets.transform import parse

    secret = "s3cr3t-token-value"
    environ = {
        "PATH": os.environ["PATH"],
        "MLOPS_DBT_CONNECT_ATTEMPTS": "6",
        "DBT_ENV_SECRET_TOKEN": secret,
    }
    target = tmp_path / "home" / "dbt" / "target"
    for_build = (BUILD_VARS, target)
    assert not parse.build_state_is_current(environ, for_build)  # never parsed
    parse.DbtParse(environ, for_build).wait()
    assert json.loads((target / "partial_parse.msgpack").read_text())[-2:] == ["--vars", BUILD_VARS]
    assert parse.build_state_is_current(environ, for_build)
    # Only the state and its record are left there, and the record holds no variable's value.
    assert sorted(p.name for p in target.iterdir()) == [
        parse.BUILD_STATE_RECORD, "partial_parse.msgpack"
    ]  # fmt: skip
    assert secret not in (target / parse.BUILD_STATE_RECORD).read_text()
    # Variables neither the profile nor dbt reads change nothing.
    assert parse.build_state_is_current({**environ, "LANG": "C", "HOME": "/x"}, for_build)
    if change == "edit a model":
        (fast_project / "models" / "one.sql").write_text("select 2\n")
    elif change == "other vars":
        for_build = (BUILD_VARS.replace("1GB", "2GB"), target)
    elif change == "another profile variable":
        environ["MLOPS_DBT_CONNECT_ATTEMPTS"] = "1"
    elif change == "a dbt variable":
        environ["DBT_PARTIAL_PARSE"] = "false"
    elif change == "no state":
        (target / "partial_parse.msgpack").unlink()
    elif change == "the state rewritten by another build":
        state = target / "partial_parse.msgpack"
        state.write_text(state.read_text().replace("1GB", "9GB"))  # its size the same
    else:
        parse.MANIFEST.write_text(json.dumps({"nodes": ["other"]}))
    assert not parse.build_state_is_current(environ, for_build)
    parse.DbtParse(environ, for_build).wait()  # what the run does then
    assert parse.build_state_is_current(environ, for_build)
    assert _starts(fast_project) == 2


@pytest.mark.parametrize(
    "record",
    ["{not json", "[]", "null", "[" * 100_000, "a FIFO", "a folder", "a link elsewhere", "none"],
)
def test_a_hostile_build_state_record_means_a_parse_and_hangs_nothing(
    fast_project, tmp_path, record
):
    """The record beside the build's state is in the home, which anyone with access to it may
    write: whatever it holds, the run parses as it would without it (a FIFO put there does
    not block it), and that parse replaces it."""
    from mlops_assets.transform import parse

    environ = {"PATH": os.environ["PATH"]}
    target = tmp_path / "home" / "dbt" / "target"
    parse.DbtParse(environ, (BUILD_VARS, target)).wait()
    path = target / parse.BUILD_STATE_RECORD
    genuine = path.read_text()
    path.unlink()
    if record == "a FIFO":
        os.mkfifo(path)
    elif record == "a folder":
        path.mkdir()
    elif record == "a link elsewhere":
        (tmp_path / "elsewhere.json").write_text(genuine)
        path.symlink_to(tmp_path / "elsewhere.json")
    elif record != "none":
        path.write_text(record)
    current = parse.build_state_is_current(environ, (BUILD_VARS, target))
    # A link to a genuine record is as good as the record: what it says is checked, not where.
    assert current is (record == "a link elsewhere")
    parse.DbtParse(environ, (BUILD_VARS, target)).wait()  # the run's parse
    # A folder stays (the state goes without a record); anything else is replaced.
    assert parse.build_state_is_current(environ, (BUILD_VARS, target)) is (record != "a folder")


def test_a_parse_that_could_not_read_the_project_vouches_for_no_build_state(
    fast_project, tmp_path, monkeypatch
):
    from mlops_assets.transform import parse

    target = tmp_path / "target"
    parse.DbtParse(os.environ, (BUILD_VARS, target)).wait()
    assert parse.build_state_is_current(os.environ, (BUILD_VARS, target))

    def unreadable() -> str:
        raise PermissionError("a file of the project cannot be read")

    readable = parse.project_digest
    monkeypatch.setattr(parse, "project_digest", unreadable)
    parse.DbtParse(os.environ, (BUILD_VARS, target)).wait()
    assert not (target / parse.BUILD_STATE_RECORD).exists()
    monkeypatch.setattr(parse, "project_digest", readable)
    assert not parse.build_state_is_current(os.environ, (BUILD_VARS, target))
