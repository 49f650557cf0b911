"""`mlops ui` starts its servers with the start-up hook of mlops_assets/ui_site first on their
PYTHONPATH: the Dagster daemon they run looks at backfills every few seconds instead of every
30 s, the code server forks its runs from a process that imported Dagster and the libraries
once, and a `sitecustomize` the environment had still runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mlops_assets.cli import supervise
from mlops_assets.security.ui_guard import free_port
from mlops_assets.ui_site import SITE_DIR
from mlops_assets.ui_site.sitecustomize import BACKFILL_PASS_SECONDS
from tests.cli.conftest import invoke

PROBE = """
import json, sys
import dagster._daemon.controller as controller
print(json.dumps({
    "interval": controller.DEFAULT_DAEMON_INTERVAL_SECONDS,
    "theirs": getattr(sys.modules.get("their_hook"), "RAN", 0),
    "hooks": sum(type(f).__name__ == "ShorterBackfillPass" for f in sys.meta_path),
}))
"""


def probe(pythonpath: list[str]) -> dict:
    """The daemon's interval, and whether the environment's own hook ran, in a new process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def their_sitecustomize(tmp_path) -> str:
    """A directory holding a `sitecustomize` of the environment's own."""
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "sitecustomize.py").write_text(
        "import sys, types\n"
        "hook = sys.modules.setdefault('their_hook', types.SimpleNamespace(RAN=0))\n"
        "hook.RAN += 1\n"
    )
    return str(tmp_path / "theirs")


def test_the_hook_shortens_the_daemons_pass_and_runs_the_environments_own(their_sitecustomize):
    assert probe([their_sitecustomize]) == {"interval": 30, "theirs": 1, "hooks": 0}  # Dagster's
    assert probe([str(SITE_DIR), their_sitecustomize]) == {
        "interval": BACKFILL_PASS_SECONDS,
        "theirs": 1,
        "hooks": 1,
    }
    assert BACKFILL_PASS_SECONDS <= 5


# A code server's module as Dagster loads it under the hook, and a run started the way the code
# server starts its runs: the run's process finds what the forkserver imported already there.
RUN_PROBE = """
import json, sys
import dagster._grpc.server as server
patched = getattr(server.DagsterApiServer.__init__, "_mlops_runs_from_forkserver", False)
from mlops_assets.ui_site.sitecustomize import RUN_PRELOAD, run_context
runs = run_context()
check = "import sys; sys.exit(0 if {!r} <= set(sys.modules) else 3)".format(set(RUN_PRELOAD))
run = runs.Process(target=exec, args=(check,))
run.start()
run.join(120)
print(json.dumps({
    "patched": patched, "start": runs.get_start_method(), "preloaded": run.exitcode == 0,
}))
"""


def test_under_the_hook_a_code_server_forks_its_runs_from_a_server_that_imported_dagster():
    """The code server's runs start as forks of a process that imported Dagster, dagster-dbt,
    pandas and scikit-learn once, not as new interpreters importing them again; without the
    hook, Dagster's code server as it is."""
    env = {**os.environ, "PYTHONPATH": str(SITE_DIR)}
    done = subprocess.run(
        [sys.executable, "-c", RUN_PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"patched": True, "start": "forkserver", "preloaded": True}
    unpatched = subprocess.run(
        [sys.executable, "-c", "import dagster._grpc.server as s; "
         "print(getattr(s.DagsterApiServer.__init__, '_mlops_runs_from_forkserver', False))"],
        env={**os.environ, "PYTHONPATH": ""}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert unpatched.stdout.strip() == "False", unpatched.stderr[-3000:]


def test_the_hook_twice_on_the_path_runs_once_and_still_runs_the_environments_own(
    their_sitecustomize, tmp_path
):
    """A second copy of the hook (another checkout), and the same folder by another spelling
    (a symlink), on the path: one finder, and the environment's own hook once, never a loop."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(SITE_DIR / "sitecustomize.py", copy / "sitecustomize.py")
    link = tmp_path / "link"
    link.symlink_to(SITE_DIR, target_is_directory=True)
    for path in (
        [str(SITE_DIR), str(link), their_sitecustomize],
        [str(copy), str(SITE_DIR), str(link), their_sitecustomize],
    ):
        assert probe(path) == {"interval": BACKFILL_PASS_SECONDS, "theirs": 1, "hooks": 1}, path


def test_imported_by_its_package_name_the_hook_does_nothing():
    """What a test or a tool importing the module sees: no finder added to this process."""
    import importlib

    import mlops_assets.ui_site.sitecustomize as hook

    before = list(sys.meta_path)
    importlib.reload(hook)
    assert sys.meta_path == before


def test_mlops_ui_puts_the_hook_first_and_keeps_the_callers_path(
    ui_environment, quick_start, monkeypatch, tmp_path
):
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}/mine")
    started = {}

    class Servers:
        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

        def start(self, name, args):
            started[name] = os.environ["PYTHONPATH"]  # what the child inherits
            raise supervise.Stop(15)

    monkeypatch.setattr(supervise, "Supervisor", Servers)
    result = invoke("ui", "--port", str(free_port()))
    assert result.exit_code == 0, result.output
    assert started == {"dg dev": os.pathsep.join([str(SITE_DIR), f"{tmp_path}/mine"])}
