"""Imported once by the server process the code server of `mlops ui` forks its runs from
(see ``sitecustomize``): what every run imports before its first step, so that a run does not
import it again, and a fresh seed for numpy's global random state in each run forked from it
(numpy, unlike Python's ``random``, does not reseed after a fork: every run would otherwise
draw the same numbers from ``numpy.random``).

Besides the libraries, the platform's stage modules (``definitions.STAGE_MODULES``: importing
them reads no setting and no file) and Dask's ``distributed``: a run then only builds the
definitions. The stages are the code server's own, as it loaded them: a run executes what the UI
shows until the code location is reloaded (a new code server, a new forkserver), where a run
importing them itself would take whatever is on disk by then."""

import contextlib
import importlib
import os

LIBRARIES = (
    "dagster",
    "dagster_dbt",
    "duckdb",
    "pandas",
    "pandera.pandas",
    "sklearn.ensemble",
    "scipy.stats",
    "distributed",
)


try:
    from mlops_assets.definitions import STAGE_MODULES
except Exception:  # the run's to import, and to report
    STAGE_MODULES = ()

MODULES = (*LIBRARIES, *STAGE_MODULES)

for _name in MODULES:
    # One that cannot be imported here is the run's to import, and to report.
    with contextlib.suppress(Exception):
        importlib.import_module(_name)

with contextlib.suppress(ImportError):
    import numpy.random

    os.register_at_fork(after_in_child=numpy.random.seed)  # no argument: from the OS
