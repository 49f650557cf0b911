"""Imported at start-up by every Python process of `mlops ui` (the directory of this file is
first on their PYTHONPATH): `dg dev`, the webserver, the daemon, the code servers and the runs.

Dagster's daemon looks at the backfills every 30 s, a constant it has no setting for
(dagster-io/dagster#11649): a backfill from the UI waits up to 30 s to start, and as long again
between its waves of runs (the raw tables, then what is built on them). Here it looks every
:data:`BACKFILL_PASS_SECONDS`: when Dagster imports ``dagster._daemon.controller``, its
``DEFAULT_DAEMON_INTERVAL_SECONDS`` is lowered to that. Nothing is imported early: a process
that never imports the daemon only carries the finder below, one string comparison per import.

A ``sitecustomize`` further along the path (a Debian Python ships one) still runs after this
one, as it would have without it. Imported under another name (a test reading the constant),
the module does nothing.
"""

from __future__ import annotations

import os
import sys

BACKFILL_PASS_SECONDS = 5
_CONTROLLER = "dagster._daemon.controller"
_INSTALLED = "_mlops_ui_backfill_pass"  # set on sys once a copy of this hook has run


class ShorterBackfillPass:
    """A meta path finder that finds nothing itself: it asks the finders after it for
    Dagster's daemon controller, and lowers the daemon's interval in the module they load."""

    def __init__(self) -> None:
        self.done = False

    def find_spec(self, fullname, path, target=None):
        if self.done or fullname != _CONTROLLER:
            return None
        self.done = True  # once: the controller is imported once per process
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

        def exec_module(module) -> None:
            run_module(module)
            current = getattr(module, "DEFAULT_DAEMON_INTERVAL_SECONDS", None)
            if isinstance(current, int | float):  # a Dagster without it is left as it is
                module.DEFAULT_DAEMON_INTERVAL_SECONDS = min(current, BACKFILL_PASS_SECONDS)

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
        sys.meta_path.insert(0, ShorterBackfillPass())
    _run_the_next_sitecustomize()
