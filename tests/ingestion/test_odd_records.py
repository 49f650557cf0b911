"""The filter for records that are not one readable line each, on a feed without text."""

import duckdb

from mlops_assets.ingestion.sources import SourceSpec
from mlops_assets.ingestion.staging import _odd_records


def test_a_feed_of_typed_columns_only_has_no_odd_records_and_no_sql_error():
    spec = SourceSpec(
        name="readings",
        columns={"reading": "BIGINT", "taken_on": "DATE"},
        required_values=("reading",),
        description="numbers only",
    )
    con = duckdb.connect()
    con.execute(
        "create temp table _records as select * from (values (1, date '2025-01-01'), "
        "(null, date '2025-01-02')) t(reading, taken_on)"
    )
    odd = _odd_records(con, spec, ["reading", "taken_on"], {})
    assert [rowid for rowid, _, _ in odd] == [1]  # the empty required value, and nothing else
