"""dbt models as Dagster assets: one lineage graph from landing files to marts.

The SQL lives in ``dbt_project/``. dbt sources map onto the Python raw assets (source ``raw``,
table ``applications`` -> ``raw/applications``), models get keys that mirror their schema and table
(``marts/loan_applications``), and dbt tests become asset checks, blocking for error severity.
"""

import os
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtCliRuntimeError,
    DagsterDbtTranslator,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from packaging import version

from mlops_assets.faults import crash_point
from mlops_assets.resources import WRITER_POOL, WarehouseResource
from mlops_assets.settings import DBT_PROJECT_DIR, get_settings
from mlops_assets.transform.parse import TARGET_PATH, VENV_DBT, dbt_executable
from mlops_assets.transform.table_metadata import attach_table_metadata
from mlops_assets.warehouse import is_lock_error

dbt_project = DbtProject(
    project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target_path=TARGET_PATH
)


class PlatformDbtCli(DbtCliResource):
    """dagster-dbt's resource, told the dbt version instead of asking `dbt --version` (a
    3-second dbt start) on every invocation: the dbt next to this Python is the installed
    dbt-core package. Any other dbt executable is still asked.

    It sets up no dbt adapter in this process (~2 s per invocation): dagster-dbt uses one only
    to fetch table metadata, which :mod:`mlops_assets.transform.table_metadata` reads from
    DuckDB directly."""

    def _initialize_dbt_core_adapter(self, args):
        return None

    @property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable) == VENV_DBT:
            return version.parse(metadata.version("dbt-core"))
        return super()._cli_version


def dbt_resource() -> DbtCliResource:
    return PlatformDbtCli(project_dir=dbt_project, dbt_executable=dbt_executable())


class LoanPlatformTranslator(DagsterDbtTranslator):
    """Asset keys mirror warehouse tables; all dbt models form the `transform` group."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "transform"

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        """Tag every column of the UI's column schema with its privacy classification, taken
        from the column's `meta.classification` in the model's yml."""
        spec = super().get_asset_spec(manifest, unique_id, project)
        schema = spec.metadata.get("dagster/column_schema")
        if schema is None:
            return spec
        schema = getattr(schema, "schema", schema)  # a TableSchemaMetadataValue or a TableSchema
        meta = {
            name: (column.get("meta") or {}).get("classification", "unclassified")
            for name, column in self.get_resource_props(manifest, unique_id)
            .get("columns", {})
            .items()
        }
        columns = [
            dg.TableColumn(
                name=c.name,
                type=c.type,
                description=c.description,
                constraints=c.constraints,
                tags={**c.tags, "classification": meta.get(c.name, "unclassified")},
            )
            for c in schema.columns
        ]
        return spec.replace_attributes(
            metadata={**spec.metadata, "dagster/column_schema": dg.TableSchema(columns=columns)}
        )


class DbtBuildConfig(dg.Config):
    fetch_table_metadata: bool = True
    """Attach row counts, column schemas and column lineage of the built tables and views."""


def _manifest_path() -> Path:
    if not dbt_project.manifest_path.exists():
        # Composition must not run dbt on import; say how to produce the manifest instead.
        raise FileNotFoundError(
            f"{dbt_project.manifest_path} is missing: run `mlops dbt-parse` (or `make ui`, "
            "`make demo`), which runs `dbt parse` to produce it"
        )
    return dbt_project.manifest_path


def _with_table_metadata(
    invocation: DbtCliInvocation, warehouse: WarehouseResource
) -> Iterator[Any]:
    """The build's events, once dbt has exited, with row counts, column schemas and lineage
    (:mod:`mlops_assets.transform.table_metadata`). A failed build's events still come out,
    then its error."""
    events: list[Any] = []
    failure = None
    try:
        for event in invocation.stream():
            events.append(event)
            crash_point("dbt.running")
    except DagsterDbtCliRuntimeError as error:
        failure = error
    crash_point("dbt.finished")
    if failure is not None and is_lock_error(failure):
        yield from events  # someone else holds the warehouse: nothing to read metadata from
    else:
        with warehouse.connect(read_only=True) as con:
            yield from attach_table_metadata(
                events,
                con,
                invocation.manifest,
                translator=invocation.dagster_dbt_translator,
                target_path=invocation.target_path,
                project=invocation.project,
            )
    if failure is not None:
        raise failure


def build_dbt_assets() -> dg.AssetsDefinition:
    # Under `dagster dev` only: re-parse so edits to the SQL show up on reload.
    dbt_project.prepare_if_dev()

    @dbt_assets(
        manifest=_manifest_path(),
        project=dbt_project,
        dagster_dbt_translator=LoanPlatformTranslator(),
        pool=WRITER_POOL,
        name="dbt_models",
    )
    def dbt_models(
        context: dg.AssetExecutionContext,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
        config: DbtBuildConfig,
    ) -> Iterator[Any]:
        # dbt resolves the warehouse from MLOPS_HOME; pass the absolute path of this process's.
        settings = get_settings()
        os.environ["MLOPS_HOME"] = str(settings.home)
        # A subset of the models (a backfill launches each model once its raw days are in) runs
        # only the tests whose every parent is in the subset: a relationships test between
        # stg_applications and stg_customers waits for a build of both, rather than erroring
        # on a view that does not exist yet. A full build still runs every test.
        os.environ.setdefault("DBT_INDIRECT_SELECTION", "cautious")
        # One target directory under MLOPS_HOME (writers run one at a time), not one per run.
        invocation = dbt.cli(["build"], context=context, target_path=settings.dbt_target_dir)
        try:
            if config.fetch_table_metadata:
                yield from _with_table_metadata(invocation, warehouse)
            else:
                yield from invocation.stream()
        except DagsterDbtCliRuntimeError as error:
            # dbt-duckdb waited for the lock already; a still busy lock is retried, nothing else.
            if is_lock_error(error):
                raise warehouse.retry_on_lock(error) from error
            raise

    return dbt_models
