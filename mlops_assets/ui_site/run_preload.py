"""Imported once by the server process the code server of `mlops ui` forks its runs from
(see ``sitecustomize``): what every run imports before its first step, so that a run does not
import it again, and a fresh seed for numpy's global random state in each run forked from it
(numpy, unlike Python's ``random``, does not reseed after a fork: every run would otherwise
draw the same numbers from ``numpy.random``)."""

import contextlib
import importlib
import os

MODULES = (
    "dagster",
    "dagster_dbt",
    "duckdb",
    "pandas",
    "pandera.pandas",
    "sklearn.ensemble",
    "scipy.stats",
)

for _name in MODULES:
    # One that cannot be imported here is the run's to import, and to report.
    with contextlib.suppress(Exception):
        importlib.import_module(_name)

with contextlib.suppress(ImportError):
    import numpy.random

    os.register_at_fork(after_in_child=numpy.random.seed)  # no argument: from the OS
