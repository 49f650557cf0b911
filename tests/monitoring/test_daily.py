"""The monitoring tables: a re-run of a day replaces its rows; a day without applications is
recorded with empty scores, not an error."""

from datetime import date

import duckdb
import numpy as np
import pyarrow as pa

from mlops_assets.monitoring.daily import COLUMNS_TABLE, REPORTS_TABLE, DayDrift, store
from mlops_assets.drift.engine import DriftOptions, compare_columns, finish
from mlops_assets.drift.profile import profile_column


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
    fine = _performance(pd.DataFrame({"day": days, "y": y, "score": good}), day, card, config)
    assert fine["labelled"] == 3000 and abs(fine["roc_auc"] - 0.8) < 0.05
    assert not fine["drifted"]
    noise = rng.uniform(0, 1, 3000)  # the model lost its signal: AUC about 0.5
    worse = _performance(pd.DataFrame({"day": days, "y": y, "score": noise}), day, card, config)
    assert worse["drifted"] and worse["drop"] > 0.2
    few = _performance(pd.DataFrame({"day": days[:150], "y": y[:150], "score": noise[:150]}),
                       day, card, config)  # fmt: skip
    assert "roc_auc" not in few and not few.get("drifted")


def test_a_small_day_whose_sparse_column_has_no_value_gets_its_report():
    """The shape that stopped the seed-3 home's drift report for good (see
    test_multivariate.py for that day itself): 53 applications and a numeric column without a
    value, here on both sides (days since a prior application, in a home whose training period
    had no returning customer). Every column is compared and the domain classifier, which
    raised "window shape cannot be larger than input array shape", gives its verdict."""
    from types import SimpleNamespace

    import pandas as pd

    from mlops_assets.monitoring.daily import MonitorConfig, day_report
    from mlops_assets.drift.profile import profile_frame
    from mlops_assets.monitoring.reference import SCORE

    rng = np.random.default_rng(7)
    spec = SimpleNamespace(numeric=["amount", "days_since_prior"], categorical=["purpose"])
    spec.columns = [*spec.numeric, *spec.categorical]

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
    rows, report = day_report(applications(53, 0.0), reference, sample, spec, MonitorConfig())
    assert rows == 53
    assert {c.column for c in report.columns} == {*kinds, SCORE}
    empty = next(c for c in report.columns if c.column == "days_since_prior")
    assert empty.note == "no values in the reference data"
    assert report.multivariate["rows_per_side"] == 53
