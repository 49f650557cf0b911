"""Named crash points, for the fault-injection tests (``tests/reliability/test_crash_safety.py``).

With ``MLOPS_CRASH_AT=<point>`` (or ``<point>#<n>``: the n-th time the point is reached) the
process kills itself with SIGKILL at that point: no ``finally``, no ``atexit``, no flush, as
under a power cut or the kernel's OOM killer. Child processes it started (dbt, Dask workers)
are left running, as they would be. Unset, which is always outside those tests, a point costs
one environment lookup.

The points sit where a crash is most likely to leave something half done: between a file's
staging and its transaction, inside the transaction, after the commit; while dbt runs and after
it; around the feature table's replacement, a model's registration and promotion, the scores'
replacement and the drift reports' storage. ``POINTS`` lists them all.
"""

from __future__ import annotations

import os
import signal
import threading

VARIABLE = "MLOPS_CRASH_AT"

POINTS = (
    "ingest.staged",  # a file parsed into temp tables, its transaction not begun
    "ingest.in_transaction",  # its rows replaced, ledger not yet written, not committed
    "ingest.committed",  # a file committed, the next not
    "dbt.running",  # the dbt build under way (its process keeps running, holding the lock)
    "dbt.finished",  # dbt exited, its events not yet reported to Dagster
    "features.staged",  # new features computed, the table not yet replaced
    "features.published",  # the feature table replaced, the step not finished
    "training.searched",  # the search done, nothing registered
    "training.registered",  # a model version written, the champion not yet decided
    "training.promoted",  # the champion moved, the step not finished
    "scoring.scored",  # scores computed, the table not yet replaced
    "scoring.written",  # the scores table replaced, the step not finished
    "drift.stored",  # the drift reports stored, the HTML reports not written
)

_reached: dict[str, int] = {}
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process here if ``MLOPS_CRASH_AT`` names this point (and this time)."""
    target = os.environ.get(VARIABLE)
    if not target:
        return
    point, _, nth = target.partition("#")
    if point != name:
        return
    with _lock:
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
