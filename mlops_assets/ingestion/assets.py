"""Dagster wiring for ingestion: per landing feed (:func:`build_source_defs`), its landing
folder, its raw asset partitioned by landing day with the ledger's checks, and the identifier
check of its raw table and quarantine."""

import warnings

import dagster as dg

from mlops_assets.ingestion.landing import latest_landing_day, record_refused, scan_landing
from mlops_assets.ingestion.ledger import unbalanced_ledger_rows
from mlops_assets.ingestion.loader import ingest_source
from mlops_assets.ingestion.sources import (
    LINEAGE_COLUMNS,
    LINEAGE_DESCRIPTIONS,
    SourceSpec,
)
from mlops_assets.markdown import flow_metadata, md_list
from mlops_assets.partitions import LANDING_DAYS
from mlops_assets.resources import (
    WRITER_POOL,
    KeyringResource,
    LandingZone,
    WarehouseResource,
)
from mlops_assets.security.checks import build_identifier_checks
from mlops_assets.sql import qualified
from mlops_assets.text import printable


class IngestionConfig(dg.Config):
    force_reload: bool = False
    """Reload files even when their content is unchanged (their rows are replaced, not added)."""


def _column_schema(spec: SourceSpec) -> dg.TableSchema:
    columns = [
        dg.TableColumn(name, dtype.lower(), tags={"classification": spec.classify(name)})
        for name, dtype in spec.raw_columns.items()
    ]
    columns += [
        dg.TableColumn(
            name,
            dtype.lower(),
            description=LINEAGE_DESCRIPTIONS[name],
            tags={"classification": "none"},
        )
        for name, dtype in LINEAGE_COLUMNS.items()
    ]
    return dg.TableSchema(columns=columns)


def landing_spec(spec: SourceSpec) -> dg.AssetSpec:
    """The landing folder of a source: files arrive here from outside the platform."""
    return dg.AssetSpec(
        key=["landing", spec.name],
        group_name="ingestion",
        description=f"Daily CSV files <landing>/{spec.name}/<YYYY-MM-DD>.csv, written by the "
        "source system (or `mlops generate`). Not materialized by the platform.",
        kinds={"csv"},
    )


def build_raw_asset(spec: SourceSpec, identifier_names: frozenset[str]) -> dg.AssetsDefinition:
    """The raw table of ``spec``, loaded from its landing files, with the checks
    ``files_ingested`` and ``ledger_balanced``. ``identifier_names``: of every feed."""
    key = dg.AssetKey(["raw", spec.name])

    @dg.asset(
        key=key,
        deps=[landing_spec(spec).key],
        group_name="ingestion",
        description=f"{spec.description} Loaded exactly once per file content from "
        f"landing/{spec.name}/; unreadable lines go to quarantine.{spec.name}.",
        partitions_def=LANDING_DAYS,  # the configured range: resources.bind
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WRITER_POOL,
        kinds={"duckdb", "csv"},
        metadata={"dagster/column_schema": _column_schema(spec), "dagster/table_name": spec.table},
        check_specs=[
            dg.AssetCheckSpec(
                "files_ingested",
                asset=key,
                blocking=True,
                description="Every landing file in the run was readable (none failed as a whole).",
            ),
            dg.AssetCheckSpec(
                "ledger_balanced",
                asset=key,
                blocking=True,
                description="For every ingested file: rows loaded + rows quarantined = data lines, "
                "and the raw and quarantine tables hold exactly those rows.",
            ),
        ],
    )
    def raw_source(
        context: dg.AssetExecutionContext,
        config: IngestionConfig,
        warehouse: WarehouseResource,
        landing: LandingZone,
        keyring: KeyringResource,
    ) -> dg.MaterializeResult:
        # The run's days: one (schedule, landing sensor, a day from the UI) or a range.
        partitioned = context.has_partition_key or context.has_partition_key_range
        keys = context.partition_keys if partitioned else None
        secrets = keyring.load()
        latest = latest_landing_day(landing.horizon_days)
        refused = scan_landing(landing.directory, spec.name, latest).refused
        with warehouse.connect() as con:
            record_refused(con, spec.name, refused)  # also when the load fails
            # The step owns this connection: confined to the source's landing folder for good.
            result = ingest_source(
                con,
                landing.directory,
                spec,
                identifier_names,
                keys,
                force=config.force_reload,
                keyring=secrets,
                confined=True,
            )
            unbalanced = unbalanced_ledger_rows(con, spec)
            table_rows = con.execute(
                f"select count(*) from {qualified('raw', spec.name)}"
            ).fetchone()[0]
            quarantined_total = con.execute(
                f"select count(*) from {qualified('quarantine', spec.name)}"
            ).fetchone()[0]
        for entry in refused:
            context.log.warning(f"refused, not ingested: {printable(entry.text)}")
        for failed in result.failed:
            context.log.error(printable(failed.error))
        extra = sorted({c for f in result.files for c in f.extra_columns})
        if extra:
            context.log.warning(f"{spec.name}: unexpected columns kept in _extra_columns: {extra}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": table_rows,
                "files_loaded": result.count("loaded"),
                "files_replaced": result.count("replaced"),
                "files_unchanged": result.count("unchanged"),
                "files_failed": result.count("failed"),
                "files_refused": len(refused),
                "refused_files": dg.MetadataValue.md(md_list([r.text for r in refused])),
                "rows_loaded": result.total("rows_loaded"),
                **flow_metadata(
                    result.total("rows_loaded") + result.total("rows_quarantined"),
                    result.total("rows_loaded"),
                ),
                "quarantined_total": quarantined_total,
                "extra_columns": printable(", ".join(extra)) or "none",
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="files_ingested",
                    passed=not result.failed,
                    metadata={
                        "failed_files": dg.MetadataValue.md(
                            md_list([f.error for f in result.failed])
                        ),
                        "files_failed": len(result.failed),
                    },
                ),
                dg.AssetCheckResult(
                    check_name="ledger_balanced",
                    passed=not unbalanced,
                    metadata={
                        "unbalanced_files": dg.MetadataValue.md(
                            md_list(
                                [
                                    f"{path}: {lines} lines, {loaded} loaded + {quarantined} "
                                    f"quarantined (raw holds {in_raw}, quarantine {in_q})"
                                    for path, lines, loaded, quarantined, in_raw, in_q in unbalanced
                                ]
                            )
                        )
                    },
                ),
            ],
        )

    return raw_source


def _raw_asset(spec: SourceSpec, identifier_names: frozenset[str]) -> dg.AssetsDefinition:
    with warnings.catch_warnings():
        # Single-run backfills are what make one `mlops run` load every landing day at once.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return build_raw_asset(spec, identifier_names)


def build_source_defs(spec: SourceSpec, identifier_names: frozenset[str]) -> dg.Definitions:
    """A landing feed's definitions: its landing folder, its raw asset (with the checks
    ``files_ingested`` and ``ledger_balanced``) and ``no_direct_identifiers`` on its raw table
    and quarantine. ``identifier_names``: of every feed
    (:func:`~mlops_assets.ingestion.sources.identifier_names`)."""
    raw = _raw_asset(spec, identifier_names)
    return dg.Definitions(
        assets=[landing_spec(spec), raw],
        asset_checks=[build_identifier_checks([raw.key], identifier_names)],
    )
