"""Dagster wiring: every table downstream of the vault is checked for direct identifiers."""

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

import dagster as dg

from mlops_assets.resources import WarehouseResource
from mlops_assets.security.scan import IDENTIFIER_PATTERNS, find_identifiers

CHECK_NAME = "no_direct_identifiers"


def _quarantine_of(key: dg.AssetKey) -> list[str]:
    """The quarantine table the loader writes beside a raw table (a table that does not exist
    is scanned as empty)."""
    if len(key.path) == 2 and key.path[0] == "raw":
        return [f"quarantine.{key.path[1]}"]
    return []


def _op_name(keys: Sequence[dg.AssetKey]) -> str:
    """A name for the check's op, unique per set of keys (several sets, per feed and per model,
    sit in one code location, and an asset has one such check) and the same whatever order the
    keys come in: a run's worker process rebuilds the definitions and must find the same op."""
    first, *others = sorted("_".join(key.path) for key in keys)
    more = f"__and_{len(others)}_more" if others else ""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{CHECK_NAME}__{first}{more}")


def build_identifier_checks(
    keys: Iterable[dg.AssetKey],
    identifier_names: frozenset[str],
    also_scan: Mapping[dg.AssetKey, Sequence[str]] | None = None,
    tables_of: Mapping[dg.AssetKey, Sequence[str]] | None = None,
) -> dg.AssetChecksDefinition:
    """One blocking check per warehouse table asset (key = [schema, table]): no column named
    like one of ``identifier_names`` (``ingestion.sources.identifier_names`` of every feed) and
    no identifier-shaped value. ``also_scan`` adds tables an asset writes beside its own
    (``schema.table``), e.g. its quarantine; ``tables_of`` names the tables of an asset whose
    key is not a table. A raw table's quarantine (``quarantine.<source>``: reasons and the
    lines, encrypted) is always scanned with it."""
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
            description="No identifier column (named like a vaulted or pseudonymised column of "
            "any feed) and no identifier-shaped value "
            f"({', '.join(IDENTIFIER_PATTERNS)})"
            + " in "
            + ", ".join(also_scan[key])
            + ": they belong in the vault.",
        )
        for key in keys
    ]

    @dg.multi_asset_check(specs=specs, can_subset=True, name=_op_name(keys))
    def no_direct_identifiers(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        with warehouse.connect(read_only=True) as con:
            for check_key in context.selected_asset_check_keys:
                findings = [
                    finding
                    for name in also_scan[check_key.asset_key]
                    for finding in find_identifiers(con, *name.split("."), identifier_names)
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
