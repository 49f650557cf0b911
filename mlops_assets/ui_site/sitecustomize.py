"""Imported at start-up by every Python process of `mlops ui` (the directory of this file is
first on their PYTHONPATH): `dg dev`, the webserver, the daemon, the code servers and the runs.

Dagster's daemon looks at the backfills every 30 s, a constant it has no setting for
(dagster-io/dagster#11649): a backfill from the UI waits up to 30 s to start, and as long again
between its waves of runs (the raw tables, then what is built on them). Here it looks every
:data:`BACKFILL_PASS_SECONDS`: when Dagster imports ``dagster._daemon.controller``, its
``DEFAULT_DAEMON_INTERVAL_SECONDS`` is lowered to that. Nothing else is loaded early: a process
that never imports the daemon only carries the finder below, one string comparison per import.

A ``sitecustomize`` further along the path (a Debian Python ships one) still runs after this
one, as it would have without it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

BACKFILL_PASS_SECONDS = 5
_CONTROLLER = "dagster._daemon.controller"
_HERE = os.path.dirname(os.path.abspath(__file__))


class ShorterBackfillPass(importlib.abc.MetaPathFinder):
    """Finds nothing itself; lowers the daemon's interval in the module Dagster loads."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _CONTROLLER:
            return None
        sys.meta_path.remove(self)  # once: the controller is imported once per process
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
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
    """The ``sitecustomize`` this one hides on ``sys.path``, if there is one."""
    elsewhere = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", elsewhere)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if not any(isinstance(finder, ShorterBackfillPass) for finder in sys.meta_path):
    sys.meta_path.insert(0, ShorterBackfillPass())
_run_the_next_sitecustomize()
