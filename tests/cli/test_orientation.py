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
    home = tmp_path / "evil\n\x1b[2Jhome\r\u202e"
    (home / "landing" / "feed\x1b]8;;x\x07").mkdir(parents=True)
    (home / "landing" / "feed\x1b]8;;x\x07" / "2025-01-01.csv").write_text("a\n")
    output = orient(home, monkeypatch)
    assert "evil\\n\\x1b[2Jhome\\r\\u202e" in output
    assert "feed\\x1b]8;;x\\x07 1" in output
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
