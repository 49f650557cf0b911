"""The dbt project and the resource that runs its CLI (dagster-dbt's, told what it can know
without starting dbt)."""

from functools import cache
from importlib import metadata
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

from mlops_assets.settings import DBT_PROJECT_DIR
from mlops_assets.transform.parse import TARGET_PATH, VENV_DBT, dbt_executable


@cache
def dbt_project() -> DbtProject:
    """``dbt_project/``, its manifest where the early parse publishes it."""
    return DbtProject(
        project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target_path=TARGET_PATH
    )


class PlatformDbtCli(DbtCliResource):
    """dagster-dbt's resource, told the dbt version instead of asking `dbt --version` (a
    3-second dbt start) on every invocation: the dbt next to this Python is the installed
    dbt-core package. Any other dbt executable is still asked.

    It sets up no dbt adapter in this process (~2 s per invocation): dagster-dbt uses one only
    to fetch table metadata, which :mod:`mlops_assets.transform.table_metadata` reads from
    DuckDB directly.

    ``target_dir``: where builds write compiled SQL and run results (one directory under
    MLOPS_HOME, not one per run: writers run one at a time)."""

    target_dir: str

    def _initialize_dbt_core_adapter(self, args):
        return None

    @property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable) == VENV_DBT:
            return version.parse(metadata.version("dbt-core"))
        return super()._cli_version


def dbt_resource(target_dir: Path) -> PlatformDbtCli:
    return PlatformDbtCli(
        project_dir=dbt_project(), dbt_executable=dbt_executable(), target_dir=str(target_dir)
    )
