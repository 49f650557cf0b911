"""Dagster wiring: every table downstream of the vault is checked for direct identifiers."""

from collections.abc import Iterable, Iterator, Mapping, Sequence

import dagster as dg

from mlops_assets.ingestion.sources import SOURCE_SPECS
from mlops_assets.resources import WarehouseResource
from mlops_assets.security.scan import IDENTIFIER_PATTERNS, find_identifiers

CHECK_NAME = "no_direct_identifiers"


def _quarantine_of(key: dg.AssetKey) -> list[str]:
    """The quarantine table the loader writes beside a raw table."""
    if len(key.path) == 2 and key.path[0] == "raw" and key.path[1] in SOURCE_SPECS:
        return [f"quarantine.{key.path[1]}"]
    return []


def build_identifier_checks(
    keys: Iterable[dg.AssetKey],
    also_scan: Mapping[dg.AssetKey, Sequence[str]] | None = None,
    tables_of: Mapping[dg.AssetKey, Sequence[str]] | None = None,
) -> dg.AssetChecksDefinition:
    """One blocking check per warehouse table asset (key = [schema, table]). ``also_scan``
    adds tables an asset writes beside its own (``schema.table``), e.g. its quarantine;
    ``tables_of`` names the tables of an asset whose key is not a table. A raw table's
    quarantine (``quarantine.<source>``: reasons and, for feeds without personal data, the
    lines as read) is always scanned with it."""
    keys = list(keys)
    tables_of = dict(tables_of or {})
    also_scan = {
        key: [
            *tables_of.get(key, [".".join(key.path)]),
            *_quarantine_of(key),
            *(also_scan or {}).get(key, ()),
        ]
        for key in keys
    }
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=key,
            blocking=True,
            description="No identifier column (name, email, phone, national id, address, date "
            "of birth, city, customer id) and no identifier-shaped value "
            f"({', '.join(IDENTIFIER_PATTERNS)})"
            + " in "
            + ", ".join(also_scan[key])
            + ": they belong in the vault.",
        )
        for key in keys
    ]

    @dg.multi_asset_check(specs=specs, can_subset=True, name="no_direct_identifiers")
    def no_direct_identifiers(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        with warehouse.connect(read_only=True) as con:
            for check_key in context.selected_asset_check_keys:
                findings = [
                    finding
                    for name in also_scan[check_key.asset_key]
                    for finding in find_identifiers(con, *name.split("."))
                ]
                yield dg.AssetCheckResult(
                    asset_key=check_key.asset_key,
                    check_name=CHECK_NAME,
                    passed=not findings,
                    metadata={
                        "findings": dg.MetadataValue.md(
                            "\n".join(f"- {f}" for f in findings) or "none"
                        )
                    },
                )

    return no_direct_identifiers
