"""`mlops --help` and a mistyped command answer at once: importing the CLI loads neither the
warehouse driver nor the catalogue, Dagster or the ML stack (each command imports its own)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("duckdb", "dagster", "sklearn", "pandas", "numpy", "mlops_assets.catalogue")


def test_importing_the_cli_loads_nothing_heavy():
    shown = subprocess.run(
        [sys.executable, "-c", "import sys, mlops_assets.cli; print(*sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not set(HEAVY) & set(shown.stdout.split())
