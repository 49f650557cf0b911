"""Dagster wiring: every table downstream of the vault is checked for direct identifiers."""

from collections.abc import Iterable, Iterator, Mapping, Sequence

import dagster as dg

from mlops_assets.resources import WarehouseResource
from mlops_assets.security.scan import IDENTIFIER_PATTERNS, find_identifiers

CHECK_NAME = "no_direct_identifiers"


def build_identifier_checks(
    keys: Iterable[dg.AssetKey], also_scan: Mapping[dg.AssetKey, Sequence[str]] | None = None
) -> dg.AssetChecksDefinition:
    """One blocking check per warehouse table asset (key = [schema, table]). ``also_scan``
    adds tables an asset writes beside its own (``schema.table``), e.g. its quarantine."""
    also_scan = dict(also_scan or {})
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=key,
            blocking=True,
            description="No identifier column (name, email, phone, national id, address, date "
            "of birth, city, customer id) and no identifier-shaped value "
            f"({', '.join(IDENTIFIER_PATTERNS)}) in this table"
            + "".join(f" or in {table}" for table in also_scan.get(key, ()))
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
                tables = [
                    ".".join(check_key.asset_key.path),
                    *also_scan.get(check_key.asset_key, ()),
                ]
                findings = [
                    finding
                    for name in tables
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
