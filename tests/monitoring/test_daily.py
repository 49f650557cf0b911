"""The monitoring tables: a re-run of a day replaces its rows; a day without applications is
recorded with empty scores, not an error."""

from datetime import date

import duckdb
import numpy as np
import pyarrow as pa

from mlops_assets.monitoring.daily import COLUMNS_TABLE, REPORTS_TABLE, DayDrift, store
from mlops_assets.monitoring.engine import DriftOptions, compare_columns, finish
from mlops_assets.monitoring.profile import profile_column


def _report(shift: float):
    rng = np.random.default_rng(0)
    ref = profile_column("income", "numerical", pa.array(rng.normal(0, 1, 2000)))
    cur = profile_column("income", "numerical", pa.array(rng.normal(shift, 1, 500)), exact=True)
    return finish([compare_columns(ref, cur, DriftOptions())], DriftOptions(), 2000, 500)


def test_store_replaces_a_days_rows_and_records_empty_days():
    con = duckdb.connect()
    day, quiet = date(2025, 3, 1), date(2025, 3, 2)
    store(con, [DayDrift(day, "v1", 500, _report(0.0)), DayDrift(quiet, "v1", 0, None)])
    store(con, [DayDrift(day, "v1", 500, _report(1.0))])  # the day again: replaced
    rows = con.execute(
        f"select day, rows, dataset_drift, n_columns from {REPORTS_TABLE} order by day"
    ).fetchall()
    assert rows == [(day, 500, True, 1), (quiet, 0, False, None)]
    columns = con.execute(f"select day, column_name, drifted from {COLUMNS_TABLE}").fetchall()
    assert columns == [(day, "income", True)]
