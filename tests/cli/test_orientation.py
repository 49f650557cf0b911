"""`mlops` alone and `mlops --version`: the home the commands would use, what it holds and what
to run next, read without creating or locking anything; a hostile home is described, escaped."""

from __future__ import annotations

import errno
import os
from importlib.metadata import version
from pathlib import Path

import pytest

from mlops_assets.cli import orientation
from tests.cli.conftest import invoke
from tests.cli.test_startup import DATA, loaded_by


@pytest.fixture(autouse=True)
def no_inherited_settings(monkeypatch):
    for variable in ("MLOPS_KEYRING", "MLOPS_LANDING_HORIZON_DAYS", "MLOPS_CHUNK_ROWS"):
        monkeypatch.delenv(variable, raising=False)


def orient(home: Path | str, monkeypatch) -> str:
    monkeypatch.setenv("MLOPS_HOME", str(home))
    result = invoke()
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output


def test_version_is_the_installed_package_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output == f"mlops {version('mlops-assets')}\n"


def test_a_home_not_created_yet_is_left_alone_and_generate_comes_next(tmp_path, monkeypatch):
    home = tmp_path / "fresh"
    output = orient(home, monkeypatch)
    assert f"home: {home}  (MLOPS_HOME)" in output
    assert "not created yet" in output
    assert "mlops generate" in output and "mlops ui" not in output
    assert not home.exists()


def test_the_default_home_is_dot_mlops_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = invoke()
    assert result.exit_code == 0
    assert f"home: {tmp_path.resolve() / '.mlops'}  (MLOPS_HOME unset" in result.output


def test_landing_files_without_a_warehouse_lead_to_mlops_run(tmp_path, monkeypatch):
    for source, days in (("applications", 3), ("customers", 2)):
        (tmp_path / "landing" / source).mkdir(parents=True)
        for day in range(days):
            (tmp_path / "landing" / source / f"2025-01-0{day + 1}.csv").write_text("a\n")
    output = orient(tmp_path, monkeypatch)
    assert "landing files: applications 3, customers 2" in output
    assert "warehouse: none yet" in output
    assert "mlops run" in output and "mlops generate" not in output


def test_a_home_with_a_warehouse_points_to_the_ui_without_touching_it(home, monkeypatch):
    model = home / "models" / "default_classifier" / "abc123"
    model.mkdir(parents=True)
    (home / "models" / "never_trained").mkdir()
    warehouse = home / "warehouse.duckdb"
    before = warehouse.stat()
    output = orient(home, monkeypatch)
    assert "warehouse: " in output and "none yet" not in output
    assert "registered models: 1" in output
    assert "mlops ui" in output and "mlops models list" in output
    after = warehouse.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert not Path(f"{warehouse}.wal").exists()


def test_control_characters_in_the_home_are_shown_escaped(tmp_path, monkeypatch):
    home = tmp_path / "evil\n\x1b[2Jhome\r\u202e[bold]"
    (home / "landing" / "feed\x1b]8;;x\x07").mkdir(parents=True)
    (home / "landing" / "feed\x1b]8;;x\x07" / "2025-01-01.csv").write_text("a\n")
    output = orient(home, monkeypatch)
    assert "evil\\n\\x1b[2Jhome\\r\\u202e[bold]" in output
    assert "feed" not in output  # not a feed: a run never reads it
    assert not {"\x1b", "\r", "\u202e", "\x07"} & set(output)
    assert "Traceback" not in output


def test_a_home_that_is_a_file_is_said_to_be_unusable(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a directory")
    output = orient(home, monkeypatch)
    assert "cannot be used: it is not a directory" in output
    assert "next:" not in output


def test_an_unreadable_home_is_said_to_be_unreadable(tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    (landing / "applications").mkdir(parents=True)
    landing.chmod(0)
    if os.geteuid() == 0:  # root reads it all the same: refuse as the kernel would refuse others
        scandir = os.scandir

        def refusing(path="."):
            if Path(path) == landing:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return scandir(path)

        monkeypatch.setattr(orientation.os, "scandir", refusing)
    try:
        output = orient(tmp_path, monkeypatch)
    finally:
        landing.chmod(0o755)
    assert "cannot be used: it cannot be read (Permission denied)" in output
    assert "Traceback" not in output


def test_a_refused_setting_is_described_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_LANDING_HORIZON_DAYS", "soon\x1b[31m")
    output = orient(tmp_path, monkeypatch)
    assert "cannot be used: MLOPS_LANDING_HORIZON_DAYS must be a whole number" in output
    assert "\x1b" not in output


def test_mlops_alone_loads_no_data_library(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    assert not set(DATA) & loaded_by()


def test_only_what_a_run_would_ingest_is_counted(tmp_path, monkeypatch):
    """A feed no run knows, a link to a feed's folder (refused by the run), a file not named
    for its day or a link to one: none of them is a landing file, and `mlops run` is not the
    next step for them. A landing folder with many entries is listed once, not walked."""
    landing = tmp_path / "landing"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "2025-01-01.csv").write_text("a\n")
    (landing / "loans").mkdir(parents=True)
    (landing / "loans" / "2025-01-01.csv").write_text("a\n")
    (landing / "customers").symlink_to(elsewhere)
    (landing / "applications").mkdir()
    (landing / "applications" / "notes.csv").write_text("a\n")
    (landing / "applications" / "2025-01-02.csv").symlink_to(elsewhere / "2025-01-01.csv")
    (landing / "outcomes").mkdir()
    (landing / "outcomes" / "2025-01-03.csv").write_text("a\n")
    for n in range(2000):
        (landing / f"unrelated-{n}").mkdir()
    scanned = []
    scandir = os.scandir

    def counting(path="."):
        scanned.append(str(path))
        return scandir(path)

    monkeypatch.setattr(orientation.os, "scandir", counting)
    output = orient(tmp_path, monkeypatch)
    assert "landing files: outcomes 1\n" in output
    assert len(scanned) < 10, scanned[:20]


def test_the_feeds_and_the_file_names_are_the_runs():
    from mlops_assets import catalogue
    from mlops_assets.ingestion.landing import FILE_NAME

    assert orientation.feeds() == sorted(catalogue.sources())
    assert orientation.FILE_NAME.pattern == FILE_NAME.pattern
    assert orientation.FILE_NAME.flags == FILE_NAME.flags
