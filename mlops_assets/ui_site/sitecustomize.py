"""Imported at start-up by every Python process of `mlops ui` (the directory of this file is
first on their PYTHONPATH): `dg dev`, the webserver, the daemon, the code servers and the runs.
It changes two things of Dagster's, in the modules as Dagster loads them:

* Dagster's daemon looks at the backfills every 30 s, a constant it has no setting for
  (dagster-io/dagster#11649): a backfill from the UI waits up to 30 s to start, and as long
  again between its waves of runs (the raw tables, then what is built on them). Here it looks
  every :data:`BACKFILL_PASS_SECONDS`: ``DEFAULT_DAEMON_INTERVAL_SECONDS`` of
  ``dagster._daemon.controller`` is lowered to that.
* A code server starts each run it launches (from the UI, a schedule, a sensor, a backfill) as a
  new Python process ("spawn"), which imports Dagster, dagster-dbt, pandas, scikit-learn and the
  rest again before the run's first event: about 5 CPU-seconds a run. Here its runs are forked
  from a server process ("forkserver", started by the code server's first run) that imported
  them once (:mod:`mlops_assets.ui_site.run_preload`, which also gives each run its own seed of
  numpy's global random state). A run shares no thread or connection of the code server's, and
  imports only what was not imported there (the platform, Dask) before it loads the definitions
  as it would have. Its environment is the code server's at its first run. The forkserver holds
  about 320 MB while the code server lives; a run whose forkserver was killed (by the kernel's
  out-of-memory killer, say) is reported as failed by the code server although it goes on.

Nothing is imported early: a process that imports neither module only carries the finder
below, one string comparison per import.

A ``sitecustomize`` further along the path (a Debian Python ships one) still runs after this
one, as it would have without it. Imported under another name (a test reading the constant),
the module does nothing.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

BACKFILL_PASS_SECONDS = 5
RUN_PRELOAD = "mlops_assets.ui_site.run_preload"  # what the forkserver imports
_INSTALLED = "_mlops_ui_backfill_pass"  # set on sys once a copy of this hook has run
_PATCHED = "_mlops_runs_from_forkserver"  # set on the code server's __init__ once wrapped


def _shorter_backfill_pass(module) -> None:
    current = getattr(module, "DEFAULT_DAEMON_INTERVAL_SECONDS", None)
    if isinstance(current, int | float):  # a Dagster without it is left as it is
        module.DEFAULT_DAEMON_INTERVAL_SECONDS = min(current, BACKFILL_PASS_SECONDS)


def run_context():
    """The multiprocessing context a code server starts its runs in: "forkserver", whose
    server imports :data:`RUN_PRELOAD` when the first run starts (that run waits for those
    imports, as it would have made them itself; a code server that launches no run, such as
    one `dagster schedule start` asks, never starts it). None where there is no forkserver
    (the code server's own context is kept)."""
    import multiprocessing

    try:
        context = multiprocessing.get_context("forkserver")
    except ValueError:  # a platform without fork
        return None
    context.set_forkserver_preload([RUN_PRELOAD])
    return context


def _runs_from_a_forkserver(module) -> None:
    server = getattr(module, "DagsterApiServer", None)
    init = getattr(server, "__init__", None)
    if init is None or getattr(init, _PATCHED, False):
        return

    @functools.wraps(init)
    def __init__(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        # Where Dagster keeps the context its runs start in; a Dagster without it: as it is.
        if getattr(self, "_mp_ctx", None) is not None:
            self._mp_ctx = run_context() or self._mp_ctx

    setattr(__init__, _PATCHED, True)
    server.__init__ = __init__


PATCHES: dict[str, Callable] = {
    "dagster._daemon.controller": _shorter_backfill_pass,
    "dagster._grpc.server": _runs_from_a_forkserver,
}


class DagsterPatches:
    """A meta path finder that finds nothing itself: it asks the finders after it for the
    modules of :data:`PATCHES`, and changes each module they load as its patch says."""

    def __init__(self) -> None:
        self.done: set[str] = set()

    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHES or fullname in self.done:
            return None
        self.done.add(fullname)  # once: a module is imported once per process
        spec = None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module
        patch = PATCHES[fullname]

        def exec_module(module) -> None:
            run_module(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _run_the_next_sitecustomize() -> None:
    """The ``sitecustomize`` this one hides: the first one on ``sys.path`` after the entry this
    file was found in (another copy of this hook there runs the one after it in turn)."""
    import importlib.machinery
    import importlib.util

    here = os.path.realpath(os.path.dirname(__file__))
    entries = [os.path.realpath(entry or os.curdir) for entry in sys.path]
    if here not in entries:
        return
    start = entries.index(here) + 1
    # not this folder again, by another spelling (a symlink): its file is this one
    after = [sys.path[i] for i in range(start, len(entries)) if entries[i] != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", after)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    if not getattr(sys, _INSTALLED, False):
        setattr(sys, _INSTALLED, True)
        sys.meta_path.insert(0, DagsterPatches())
    _run_the_next_sitecustomize()
