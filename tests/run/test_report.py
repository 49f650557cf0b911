"""The run summary reads the warehouse for every declared model, naming none itself."""

from datetime import date

import duckdb

from mlops_assets import catalogue
from mlops_assets.run.report import RunReport, read_warehouse


def test_drifted_days_are_listed_per_declared_model_within_the_runs_days():
    con = duckdb.connect()
    con.execute("create schema monitoring")
    con.execute("create table monitoring.drift_reports (model varchar, day date, drifted boolean)")
    first, second = list(catalogue.models())[:2]
    con.executemany(
        "insert into monitoring.drift_reports values (?, ?, ?)",
        [
            (first, date(2025, 1, 2), True),
            (first, date(2025, 1, 3), False),
            (first, date(2025, 1, 9), True),  # not a day of this run
            (second, date(2025, 1, 3), True),
            ("no_longer_declared", date(2025, 1, 2), True),
        ],
    )
    report = RunReport(run_id="r", success=True, seconds=1.0)
    read_warehouse(report, con, ["2025-01-01", "2025-01-02", "2025-01-03"])
    assert report.drifted_days == {first: ["2025-01-02"], second: ["2025-01-03"]}
    assert report.tables == {"monitoring.drift_reports": 5}
    assert report.as_dict()["drifted_days"] == report.drifted_days


def test_a_run_without_new_days_reports_no_drift():
    report = RunReport(run_id="r", success=True, seconds=1.0)
    read_warehouse(report, duckdb.connect(), [])
    assert report.drifted_days == {} and report.tables == {}
