"""The `mlops` console script ends its process with the command: only there does a run freeze
the garbage collector's view of what it set up, and does the exit skip the collector's passes.
A caller that goes on after the command (typer's CliRunner, as the tests use it) gets neither.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from types import SimpleNamespace

import pytest

import mlops_assets.cli as cli
import mlops_assets.run
from mlops_assets.cli import common
from tests.cli.conftest import invoke


@pytest.fixture
def seen_run(monkeypatch) -> dict:
    """``run_pipeline`` replaced: the keyword arguments it was called with, then a refusal."""
    seen: dict = {}

    def refused(*args, **kwargs):
        seen.update(kwargs)
        raise mlops_assets.run.RunSetupError("stopped by the test")

    monkeypatch.setattr(mlops_assets.run, "run_pipeline", refused)
    return seen


def test_a_run_called_in_process_does_not_freeze_its_callers_objects(home, seen_run):
    assert not common.ends_with_command
    result = invoke("run")
    assert result.exit_code == 2, result.output
    assert seen_run["ends_process"] is False


def test_the_console_script_runs_the_command_as_the_process_end(home, seen_run, monkeypatch):
    registered = []
    monkeypatch.setattr(cli, "atexit", SimpleNamespace(register=registered.append))
    monkeypatch.setattr(common, "ends_with_command", False)
    monkeypatch.setattr(sys, "argv", ["mlops", "run"])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 2
    assert seen_run["ends_process"] is True
    assert registered == [gc.freeze]


def test_the_console_script_exits_with_the_commands_code_and_output(tmp_path):
    """What the exit handler does not lose: the exit code and the last lines printed."""
    script = [
        sys.executable,
        "-c",
        "import sys; sys.argv = ['mlops', *sys.argv[1:]]; "
        "from mlops_assets.cli import main; main()",
    ]
    empty = tmp_path / "home"
    result = subprocess.run(
        [*script, "run"],
        env={"MLOPS_HOME": str(empty), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "no landing files" in result.stderr
    version = subprocess.run([*script, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("mlops ")
