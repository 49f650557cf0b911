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
    "hooks": sum(type(f).__name__ == "DagsterPatches" for f in sys.meta_path),
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


# A code server made as `dagster api grpc` makes it, under the hook, and two runs started the
# way it starts its runs (Dagster's StartRun: ``self._mp_ctx.Process``): each finds what the
# forkserver imported already there, and draws its own numbers from numpy's global state.
RUN_PROBE = """
import inspect, json, logging, sys, threading
import dagster._grpc.server as server
from dagster._core.utils import FuturesAwareThreadPoolExecutor
from mlops_assets.ui_site.run_preload import MODULES
code_server = server.DagsterApiServer(
    threading.Event(), logging.getLogger(), FuturesAwareThreadPoolExecutor(2),
    lazy_load_user_code=True,
)
runs = code_server._mp_ctx
uses_it = "self._mp_ctx.Process(" in inspect.getsource(server.DagsterApiServer.StartRun)
check = (
    "import sys, numpy; print(float(numpy.random.rand()), flush=True); "
    f"sys.exit(0 if {set(MODULES)!r} <= set(sys.modules) else 3)"
)
exits = []
for _ in range(2):
    run = runs.Process(target=exec, args=(check,))
    run.start()
    run.join(120)
    exits.append(run.exitcode)
print(json.dumps({"start": runs.get_start_method(), "uses_it": uses_it, "exits": exits}))
"""


def test_under_the_hook_a_code_server_forks_its_runs_from_a_server_that_imported_dagster():
    """The code server's runs start as forks of a process that imported Dagster, dagster-dbt,
    pandas and scikit-learn once, not as new interpreters importing them again, and each run
    gets its own seed of numpy's global random state; without the hook, Dagster's own."""

    def probe(pythonpath: str) -> tuple[dict, list[str]]:
        env = {**os.environ, "PYTHONPATH": pythonpath}
        done = subprocess.run(
            [sys.executable, "-c", RUN_PROBE], env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        *draws, result = done.stdout.strip().splitlines()
        return json.loads(result), draws

    hooked, draws = probe(str(SITE_DIR))
    assert hooked == {"start": "forkserver", "uses_it": True, "exits": [0, 0]}
    assert len(draws) == 2 and draws[0] != draws[1], draws
    plain, _ = probe("")
    assert plain["start"] == "spawn" and plain["exits"] == [3, 3]  # a new interpreter each


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
