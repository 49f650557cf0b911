"""`dbt parse`, started before anything heavy is imported: it runs in its own process while
`mlops run` imports Dagster, dbt's adapter and the rest (this module imports neither)."""

import re
import subprocess
import sys
from pathlib import Path

from mlops_assets.settings import DBT_PROJECT_DIR

# Where Dagster loads the dbt assets from (DbtProject's default target path).
MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # dbt colours some lines even when not on a terminal


VENV_DBT = Path(sys.executable).parent / "dbt"  # the dbt-core installed with this Python


def dbt_executable() -> str:
    """The dbt installed next to this Python (the project's venv), else whatever is on PATH."""
    return str(VENV_DBT) if VENV_DBT.exists() else "dbt"


class DbtParseError(RuntimeError):
    """`dbt parse` failed: the project's SQL or YAML has an error (dbt's message included)."""


class DbtParse:
    """`dbt parse` running in its own process, so that the manifest matches the SQL on disk
    (`dagster dev` does this itself). Plain dbt, not DbtCliResource.cli: that would first set
    up a dbt adapter in this process (~3 s), which a parse does not need."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [
                dbt_executable(),
                "parse",
                "--quiet",
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(MANIFEST.parent),
            ],
            cwd=DBT_PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait(self) -> Path:
        output, _ = self._process.communicate()
        if self._process.returncode != 0:
            message = ANSI_CODES.sub("", output).strip()[-2000:]
            raise DbtParseError(f"dbt parse failed (exit {self._process.returncode}): {message}")
        return MANIFEST


def prepare_dbt_manifest() -> Path:
    """Run `dbt parse` and wait for it: the manifest Dagster loads the dbt assets from."""
    return DbtParse().wait()
