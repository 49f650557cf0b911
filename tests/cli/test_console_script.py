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
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # put back after the test
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 2
    assert seen_run["ends_process"] is True
    assert registered == [gc.freeze]
    assert sys.unraisablehook.func is cli.quiet_teardown


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


def test_a_finalizer_that_fails_at_the_interpreters_teardown_prints_nothing(tmp_path):
    """After a run stopped by a full disk, Dask's objects were freed while the interpreter tore
    its modules down, and their finalizers printed tracebacks. The console script's hook drops
    what fails then, but not an I/O error; a finalizer failing earlier is still printed."""
    (tmp_path / "gone.py").write_text(
        "class Status:\n    closed = 'closed'\n\n"
        "class Cluster:\n    def __del__(self):\n        Status.closed  # None at teardown\n"
    )
    (tmp_path / "holder.py").write_text("held = []\n")  # torn down after gone: frees the object
    script = (
        "import sys, gc, atexit\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from mlops_assets.cli import quiet_teardown\n"
        "if sys.argv[1] == 'hooked':\n"
        "    sys.unraisablehook = quiet_teardown\n"
        "class Writer:\n"  # a write that fails at the last flush, as on a full disk
        "    def __del__(self):\n"
        "        raise OSError(28, 'No space left on device')\n"
        "atexit.register(gc.freeze)\n"
        "import holder, gone\n"
        "class Early:\n"
        "    def __del__(self):\n"
        "        raise ValueError('failed while running')\n"
        "Early()\n"
        "holder.held.append(gone.Cluster())\n"
        "holder.held.append(Writer())\n"
    )
    printed = {
        mode: subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120
        ).stderr
        for mode in ("plain", "hooked")
    }
    assert "'NoneType' object has no attribute 'closed'" in printed["plain"]  # the failure
    assert printed["hooked"].count("Exception ignored") == 2
    assert "failed while running" in printed["hooked"]
    assert "No space left on device" in printed["hooked"]  # an I/O error is always said
    assert "NoneType" not in printed["hooked"]
