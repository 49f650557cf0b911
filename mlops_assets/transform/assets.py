"""dbt models as Dagster assets: one lineage graph from landing files to marts.

The SQL lives in ``dbt_project/``. A dbt source table in schema ``raw`` is the raw asset of the
feed it is loaded from (``raw/<table>``, whatever the dbt source is called), models get keys that
mirror their schema and table (``marts/loan_applications``), and dbt tests become asset checks,
blocking for error severity.
"""

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtCliRuntimeError,
    DagsterDbtTranslator,
    DbtCliInvocation,
    DbtProject,
    dbt_assets,
)

from mlops_assets.faults import crash_point
from mlops_assets.resources import WRITER_POOL, WarehouseResource
from mlops_assets.transform.parse import build_vars
from mlops_assets.transform.resource import PlatformDbtCli, dbt_project
from mlops_assets.transform.table_metadata import attach_table_metadata
from mlops_assets.warehouse import is_lock_error


class PlatformTranslator(DagsterDbtTranslator):
    """Asset keys mirror warehouse tables, ``[schema, table]``: a source table in schema
    ``raw`` is then the raw asset of its feed, whatever the dbt source is named. All dbt models
    form the `transform` group."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            table = dbt_resource_props.get("identifier") or dbt_resource_props["name"]
            return dg.AssetKey([dbt_resource_props["schema"], table])
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
    manifest = dbt_project().manifest_path
    if not manifest.exists():
        # Composition must not run dbt on import; say how to produce the manifest instead.
        raise FileNotFoundError(
            f"{manifest} is missing: run `mlops dbt-parse` (or `make ui`, "
            "`make demo`), which runs `dbt parse` to produce it"
        )
    return manifest


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
    project = dbt_project()

    @dbt_assets(
        manifest=_manifest_path(),
        project=project,
        dagster_dbt_translator=PlatformTranslator(),
        pool=WRITER_POOL,
        name="dbt_models",
    )
    def dbt_models(
        context: dg.AssetExecutionContext,
        dbt: PlatformDbtCli,
        warehouse: WarehouseResource,
        config: DbtBuildConfig,
    ) -> Iterator[Any]:
        # dbt builds the warehouse file of the warehouse resource, within its memory limit
        # (profiles.yml reads the vars).
        # A subset of the models (a backfill launches each model once its raw days are in) runs
        # only the tests whose every parent is in the subset: `indirect_selection: cautious`
        # in dbt_project.yml.
        args = ["build", "--vars", build_vars(warehouse.path, warehouse.memory_limit)]
        invocation = dbt.cli(args, context=context, target_path=Path(dbt.target_dir))
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
