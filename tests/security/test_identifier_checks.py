"""`no_direct_identifiers` scans each raw table's quarantine with it: reasons and lines."""

from __future__ import annotations

import dagster as dg
import duckdb

from mlops_assets import catalogue
from mlops_assets.ingestion.sources import identifier_names
from mlops_assets.resources import WarehouseResource
from mlops_assets.security.checks import build_identifier_checks

RAW = [dg.AssetKey(["raw", "customers"]), dg.AssetKey(["raw", "outcomes"])]


def test_identifiers_in_a_quarantine_fail_the_raw_tables_check(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema raw")
        con.execute("create schema quarantine")
        for name in ("customers", "outcomes"):
            con.execute(f"create table raw.{name} (customer_key varchar)")
            con.execute(
                f"create table quarantine.{name} (source_file varchar, line_number bigint, "
                "reason varchar, raw_line varchar)"
            )
        con.execute(
            "insert into quarantine.customers values "
            "('customers/2025-01-01.csv', 2, 'dependents: \"123-45-6789\" is not a valid integer', "
            "null)"
        )
        con.execute(
            "insert into quarantine.outcomes values "
            "('outcomes/2025-01-01.csv', 2, 'bad date', 'APP-1,bob@example.com,x')"
        )

    @dg.multi_asset(specs=[dg.AssetSpec(key) for key in RAW])
    def raw_tables():
        yield from (dg.MaterializeResult(asset_key=key) for key in RAW)

    result = dg.materialize(
        [raw_tables, build_identifier_checks(RAW, identifier_names(catalogue.sources().values()))],
        resources={"warehouse": WarehouseResource(path=str(warehouse))},
        raise_on_error=False,
    )
    evaluations = {e.asset_key.path[1]: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["customers"].passed and not evaluations["outcomes"].passed
    findings = {k: e.metadata["findings"].value for k, e in evaluations.items()}
    assert "quarantine.customers.reason: national_id (1 rows)" in findings["customers"]
    assert "quarantine.outcomes.raw_line: email (1 rows)" in findings["outcomes"]
    assert "123-45" not in findings["customers"] and "bob@" not in findings["outcomes"]


def test_the_checks_op_is_named_the_same_whatever_order_its_keys_come_in():
    """A launched run's worker process rebuilds the definitions: with the op named after the
    keys in set order (dbt models come as a set), it did not find its own step."""
    keys = [dg.AssetKey(["staging", name]) for name in ("stg_b", "stg_a", "stg_c")]
    names = frozenset({"email"})
    forward = build_identifier_checks(keys, names)
    backward = build_identifier_checks(list(reversed(keys)), names)
    assert (
        forward.node_def.name
        == backward.node_def.name
        == ("no_direct_identifiers__staging_stg_a__and_2_more")
    )
    [single] = [build_identifier_checks(keys[:1], names).node_def.name]
    assert single == "no_direct_identifiers__staging_stg_b"


def test_a_column_is_counted_per_pattern_only_once_something_matched():
    """The scan's first pass with the patterns combined finds every column the per-pattern
    counts find, and the counts are those of each pattern alone."""
    import re

    from mlops_assets.security.scan import IDENTIFIER_PATTERNS, find_identifiers

    values = [
        "bob@example.com",
        "call +44 203 555 0101",
        "ssn 123-45-6789",
        "1123-45-67890",  # digits either side: no national id
        "a@b",  # no dot after the at: no email
        "plain",
        None,
    ]
    con = duckdb.connect()
    con.execute("create schema s")
    con.execute("create table s.t (clean varchar, mixed varchar, n bigint)")
    con.executemany("insert into s.t values (?, ?, ?)", [["plain", v, 1] for v in values] * 3)
    findings = {(f.column, f.kind): f.rows for f in find_identifiers(con, "s", "t", frozenset())}
    expected = {
        ("mixed", kind): 3 * sum(bool(v and re.search(p, v)) for v in values)
        for kind, p in IDENTIFIER_PATTERNS.items()
    }
    assert findings == expected == {("mixed", "email"): 3, ("mixed", "phone"): 3,
                                    ("mixed", "national_id"): 3}  # fmt: skip
