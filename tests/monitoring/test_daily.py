"""The monitoring tables: a re-run of a model's day replaces its rows (and no other model's); a
day without rows is recorded with empty scores, not an error. Live performance: ROC-AUC of a
classifier, RMSE of a regressor, against the holdout's."""

from datetime import date

import duckdb
import numpy as np
import pyarrow as pa

from mlops_assets.drift.engine import DriftOptions, compare_columns, finish
from mlops_assets.drift.profile import profile_column
from mlops_assets.monitoring.daily import (
    COLUMNS_TABLE,
    REPORTS_TABLE,
    DayDrift,
    drifted_days,
    store,
)


def _report(shift: float):
    rng = np.random.default_rng(0)
    ref = profile_column("income", "numerical", pa.array(rng.normal(0, 1, 2000)))
    cur = profile_column("income", "numerical", pa.array(rng.normal(shift, 1, 500)), exact=True)
    return finish([compare_columns(ref, cur, DriftOptions())], DriftOptions(), 2000, 500)


def test_store_replaces_a_days_rows_and_records_empty_days():
    con = duckdb.connect()
    day, quiet = date(2025, 3, 1), date(2025, 3, 2)
    store(con, "m", [DayDrift(day, "v1", 500, _report(0.0)), DayDrift(quiet, "v1", 0, None)])
    store(con, "m", [DayDrift(day, "v1", 500, _report(1.0))])  # the day again: replaced
    rows = con.execute(
        f"select model, day, rows, dataset_drift, n_columns from {REPORTS_TABLE} order by day"
    ).fetchall()
    assert rows == [("m", day, 500, True, 1), ("m", quiet, 0, False, None)]
    columns = con.execute(f"select day, column_name, drifted from {COLUMNS_TABLE}").fetchall()
    assert columns == [(day, "income", True)]


def test_two_models_reports_coexist_and_a_rerun_replaces_only_its_own():
    con = duckdb.connect()
    day = date(2025, 3, 1)
    store(con, "first", [DayDrift(day, "a1", 500, _report(0.0))])
    store(con, "second", [DayDrift(day, "b1", 400, _report(1.0))])
    store(con, "first", [DayDrift(day, "a2", 500, _report(0.0))])  # first's day again
    rows = con.execute(
        f"select model, model_version, rows, drifted from {REPORTS_TABLE} order by model"
    ).fetchall()
    assert rows == [("first", "a2", 500, False), ("second", "b1", 400, True)]
    columns = con.execute(
        f"select model, model_version, drifted from {COLUMNS_TABLE} order by model"
    ).fetchall()
    assert columns == [("first", "a2", False), ("second", "b1", True)]
    assert drifted_days(con, day, day) == {"second": [day]}


def test_tables_from_before_per_model_reports_are_rebuilt():
    """A warehouse monitored before reports had a ``model`` column: its tables are dropped and
    rebuilt (derived data), instead of failing the insert or leaving rows of no model."""
    con = duckdb.connect()
    con.execute("create schema monitoring")
    con.execute(
        f"create table {REPORTS_TABLE} (day date, model_version varchar, live_roc_auc double)"
    )
    con.execute(f"insert into {REPORTS_TABLE} values ('2025-02-01', 'old', 0.7)")
    con.execute(f"create table {COLUMNS_TABLE} (day date, model_version varchar)")
    day = date(2025, 3, 1)
    assert store(con, "m", [DayDrift(day, "v1", 500, _report(0.0))])
    assert con.execute(f"select model, day from {REPORTS_TABLE}").fetchall() == [("m", day)]
    assert con.execute(f"select count(*) from {COLUMNS_TABLE} where model = 'm'").fetchone() == (1,)
    assert not store(con, "m", [DayDrift(day, "v1", 500, _report(0.0))])


def test_performance_drift_once_enough_labels_arrive():
    """The champion's live ROC-AUC over the trailing window against its holdout AUC: judged
    only from `min_labelled` labels, drift when it drops by more than the tolerance."""
    import pandas as pd

    from mlops_assets.monitoring.daily import MonitorConfig, _performance

    rng = np.random.default_rng(3)
    days = pd.to_datetime("2025-03-01") + pd.to_timedelta(rng.integers(0, 30, 3000), "D")
    y = rng.integers(0, 2, 3000)
    good = np.clip(y * 0.3 + rng.uniform(0, 0.7, 3000), 0, 1)  # AUC about 0.8
    card = {"metrics": {"roc_auc": 0.8}}
    config = MonitorConfig()
    day = date(2025, 3, 30)

    def performance(frame):
        return _performance(frame, day, card, config, "roc_auc")

    fine = performance(pd.DataFrame({"day": days, "y": y, "score": good}))
    assert fine["labelled"] == 3000 and abs(fine["live"] - 0.8) < 0.05
    assert not fine["drifted"]
    noise = rng.uniform(0, 1, 3000)  # the model lost its signal: AUC about 0.5
    worse = performance(pd.DataFrame({"day": days, "y": y, "score": noise}))
    assert worse["drifted"] and worse["change"] < -0.2
    few = performance(pd.DataFrame({"day": days[:150], "y": y[:150], "score": noise[:150]}))
    assert "live" not in few and not few.get("drifted")


def test_regressor_performance_drift_is_an_rmse_rise_over_the_holdouts():
    import pandas as pd

    from mlops_assets.monitoring.daily import MonitorConfig, _performance

    rng = np.random.default_rng(4)
    days = pd.to_datetime("2025-03-01") + pd.to_timedelta(rng.integers(0, 30, 1000), "D")
    y = rng.gamma(2.0, 1000.0, 1000)
    card = {"metrics": {"rmse": 100.0}}
    config = MonitorConfig(rmse_tolerance=0.2)
    day = date(2025, 3, 30)

    def performance(error_scale: float) -> dict:
        score = y + rng.normal(0, error_scale, len(y))
        return _performance(pd.DataFrame({"day": days, "y": y, "score": score}), day, card,
                            config, "rmse")  # fmt: skip

    fine = performance(105.0)  # about the holdout's error
    assert fine["metric"] == "rmse" and abs(fine["live"] - 105) < 10 and not fine["drifted"]
    worse = performance(150.0)  # half again the holdout's error
    assert worse["drifted"] and worse["change"] > 30


def test_a_small_day_whose_sparse_column_has_no_value_gets_its_report():
    """The shape that stopped the seed-3 home's drift report for good (see
    test_multivariate.py for that day itself): 53 applications and a numeric column without a
    value, here on both sides (days since a prior application, in a home whose training period
    had no returning customer). Every column is compared and the domain classifier, which
    raised "window shape cannot be larger than input array shape", gives its verdict."""
    import pandas as pd

    from mlops_assets.drift.profile import profile_frame
    from mlops_assets.monitoring.daily import MonitorConfig, day_report
    from mlops_assets.monitoring.reference import SCORE

    rng = np.random.default_rng(7)

    def applications(rows: int, prior_share: float) -> pd.DataFrame:
        prior = rng.exponential(4, rows)
        prior[rng.random(rows) >= prior_share] = np.nan
        return pd.DataFrame(
            {
                "amount": rng.lognormal(9, 0.5, rows),
                "days_since_prior": prior,
                "purpose": pd.Series(rng.choice(["car", "home"], rows), dtype="string"),
                SCORE: rng.uniform(0, 1, rows),
            }
        )

    sample = applications(1_600, 0.0)
    kinds = {"amount": "numerical", "days_since_prior": "numerical", "purpose": "categorical"}
    reference = profile_frame(sample, {**kinds, SCORE: "numerical"})
    rows, report = day_report(applications(53, 0.0), reference, sample, MonitorConfig())
    assert rows == 53
    assert {c.column for c in report.columns} == {*kinds, SCORE}
    empty = next(c for c in report.columns if c.column == "days_since_prior")
    assert empty.note == "no values on either side" and not empty.drifted
    assert report.multivariate["rows_per_side"] == 53
