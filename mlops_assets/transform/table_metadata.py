"""Row counts, column schemas and column-level lineage of the models a dbt build made, for the
Dagster UI: read from the warehouse in two queries once dbt has exited.

dagster-dbt can fetch the same through a dbt adapter set up in this process (~2 s), with two
queries per model and one per parent of each; with DuckDB it waits for dbt to exit anyway,
because dbt holds the file's write lock. Here the whole build costs one query for every
column of every model and parent and one for all row counts, and the lineage is dagster-dbt's
own (sqlglot over the compiled SQL).
"""

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import DagsterDbtTranslator, DbtProject
from dagster_dbt.core.dbt_cli_event import EventHistoryMetadata, _build_column_lineage_metadata

from mlops_assets.sql import qualified

TABLE_RESOURCE_TYPES = ("model", "seed", "snapshot")


def _relation(props: Mapping[str, Any]) -> tuple[str, str]:
    """(schema, table) of a dbt node or source in the warehouse."""
    if props["resource_type"] == "source":
        return props["schema"], props.get("identifier") or props["name"]
    return props["schema"], props.get("alias") or props["name"]


def _columns(
    con: duckdb.DuckDBPyConnection, relations: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, dict[str, str]]]:
    """Every column of ``relations`` with its type, in table order."""
    wanted = sorted(set(relations))
    if not wanted:
        return {}
    rows = con.execute(
        "select table_schema, table_name, column_name, data_type "
        "from information_schema.columns c "
        "join (select unnest(?) as s, unnest(?) as t) w on c.table_schema = w.s "
        "and c.table_name = w.t order by table_schema, table_name, ordinal_position",
        [[s for s, _ in wanted], [t for _, t in wanted]],
    ).fetchall()
    columns: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for schema, table, column, data_type in rows:
        columns.setdefault((schema, table), {})[column] = {"data_type": data_type}
    return columns


def _row_counts(
    con: duckdb.DuckDBPyConnection, relations: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    wanted = sorted(set(relations))
    if not wanted:
        return {}
    query = " union all ".join(
        f"select {int(i)} as i, count(*) as n from {qualified(s, t)}"
        for i, (s, t) in enumerate(wanted)
    )
    return {wanted[i]: n for i, n in con.execute(query).fetchall()}


def attach_table_metadata(
    events: Iterable[Any],
    con: duckdb.DuckDBPyConnection,
    manifest: Mapping[str, Any],
    *,
    translator: DagsterDbtTranslator,
    target_path: Path,
    project: DbtProject | None,
    lineage: bool = True,
) -> Iterator[Any]:
    """``events`` (dagster-dbt's, of a finished build) with ``dagster/row_count``,
    ``dagster/column_schema`` and (``lineage``) ``dagster/column_lineage`` added to the
    materializations of tables and views that exist in the warehouse."""
    events = list(events)
    props_of = {}
    for index, event in enumerate(events):
        if not isinstance(event, dg.Output | dg.AssetMaterialization):
            continue
        unique_id = event.metadata.get("unique_id")
        props = manifest["nodes"].get(getattr(unique_id, "value", unique_id))
        if props and props["resource_type"] in TABLE_RESOURCE_TYPES:
            props_of[index] = props
    built = {_relation(p) for p in props_of.values()}
    parents = {
        parent_id: parent
        for props in props_of.values()
        for parent_id in manifest["parent_map"].get(props["unique_id"], [])
        if (parent := manifest["nodes"].get(parent_id) or manifest["sources"].get(parent_id))
    }
    columns = _columns(con, built | {_relation(p) for p in parents.values()})
    counts = _row_counts(con, built & columns.keys())  # a model that failed has no table
    for index, event in enumerate(events):
        props = props_of.get(index)
        relation = _relation(props) if props else None
        if relation not in columns:
            yield event
            continue
        schema = dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=name,
                    type=column["data_type"],
                    description=(props.get("columns", {}).get(name) or {}).get("description"),
                )
                for name, column in columns[relation].items()
            ]
        )
        metadata = {
            "dagster/row_count": dg.MetadataValue.int(counts[relation]),
            "dagster/column_schema": dg.MetadataValue.table_schema(schema),
        }
        if lineage:
            history = EventHistoryMetadata(
                columns=columns[relation],
                parents={
                    parents[parent_id]["relation_name"]: columns.get(
                        _relation(parents[parent_id]), {}
                    )
                    for parent_id in manifest["parent_map"].get(props["unique_id"], [])
                    if parent_id in parents
                },
            )
            metadata.update(
                _build_column_lineage_metadata(
                    event_history_metadata=history,
                    dbt_resource_props=props,
                    manifest=manifest,
                    dagster_dbt_translator=translator,
                    target_path=target_path,
                    project=project,
                )
            )
        yield event.with_metadata({**event.metadata, **metadata})
