"""Feature values, and point-in-time correctness of the history features."""

import math

import duckdb
import pandas as pd
import pytest

from mlops_assets.features.engineering import feature_sql, stage_features
from mlops_assets.features.validation import apply_contract, publish
from tests.sample_data.marts import load_synthetic_mart, synthetic_mart


def features_of(mart: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    con.register("mart", mart)
    frame = con.execute(f"select * from ({feature_sql('mart')}) order by application_id").df()
    return frame.set_index("application_id")


def customer_history() -> pd.DataFrame:
    """One customer: two applications at the same instant, then two more; outcomes known on
    day 30 (a default) and day 60 (a repayment, the same day as the fourth application)."""
    mart = synthetic_mart(4, seed=1)
    day = pd.Timestamp("2025-01-01")
    mart["application_id"] = ["A1", "A2", "A3", "A4"]
    mart["customer_key"] = "c" * 64
    mart["applied_at"] = [day + pd.Timedelta(hours=10)] * 2 + [
        day + pd.Timedelta(days=40, hours=9),
        day + pd.Timedelta(days=60, hours=15),
    ]
    mart["is_labelled"] = [True, True, False, False]
    mart["defaulted"] = pd.array([True, False, None, None], dtype="boolean")
    mart["loss_amount"] = [100.0, 0.0, None, None]
    mart["outcome_observed_at"] = [day + pd.Timedelta(days=30), day + pd.Timedelta(days=60)] + [
        pd.NaT
    ] * 2
    mart["outcome_observed_at"] = mart["outcome_observed_at"].dt.date
    return mart


def test_history_counts_only_what_was_known_before_the_application():
    features = features_of(customer_history())
    # A simultaneous application is not "before".
    assert features["prior_applications"].to_dict() == {"A1": 0, "A2": 0, "A3": 2, "A4": 3}
    # A3 (day 40) knows A1 defaulted (day 30); A4 (day 60) does not yet know A2 was repaid:
    # that outcome is dated day 60, and a same-day outcome may come later in the day.
    assert features["prior_defaults"].to_dict() == {"A1": 0, "A2": 0, "A3": 1, "A4": 1}
    assert features["prior_repaid"].to_dict() == {"A1": 0, "A2": 0, "A3": 0, "A4": 0}
    assert math.isnan(features.loc["A1", "days_since_prior_application"])
    assert features.loc["A3", "days_since_prior_application"] == pytest.approx(40 - 1 / 24)


def test_ratios_logs_and_bands():
    mart = synthetic_mart(9, seed=2)
    mart["amount"] = 12_000.0
    mart["annual_income"] = 48_000.0
    mart["term_months"] = 36
    mart["employment_years"] = pd.array([0, 1, 2, 3, 5, 6, 9, 10, None], dtype="Int32")
    features = features_of(mart).sort_values("employment_years")
    row = features.iloc[0]
    assert row["loan_to_income"] == pytest.approx(0.25)
    assert row["instalment"] == pytest.approx(12_000 / 36)
    assert row["payment_to_income"] == pytest.approx((12_000 / 36) / (48_000 / 12))
    assert row["log_amount"] == pytest.approx(math.log1p(12_000))
    assert row["log_annual_income"] == pytest.approx(math.log1p(48_000))
    assert features["employment_band"].tolist() == [
        "<1", "1-2", "1-2", "3-5", "3-5", "6-9", "6-9", "10+", "unknown"
    ]  # fmt: skip


def test_zero_income_gives_a_missing_ratio_not_infinity():
    mart = synthetic_mart(3, seed=4)
    mart["annual_income"] = 0.0
    features = features_of(mart)
    assert features["loan_to_income"].isna().all()
    assert features["payment_to_income"].isna().all()


def test_future_rows_do_not_move_past_features():
    """Change everything that happens after a cut-off: later applications, later outcomes of
    earlier applications. Features of applications before the cut-off must not move."""
    con = duckdb.connect()
    load_synthetic_mart(con, 3_000, seed=5, days=120)
    cutoff = "timestamp '2025-03-01'"
    stage_features(con)
    before = con.execute(
        f"select * from _features where applied_at < {cutoff} order by applied_at, application_id"
    ).df()

    # Later applications of the same customers, with other values; later outcomes flipped.
    con.execute(
        f"""
        insert into marts.loan_applications
        select * replace (
            application_id || '-again' as application_id,
            applied_at + interval 60 day as applied_at,
            amount * 2 as amount,
            true as is_labelled,
            true as defaulted,
            amount as loss_amount,
            cast(applied_at + interval 61 day as date) as outcome_observed_at
        )
        from marts.loan_applications where applied_at < {cutoff}
        """
    )
    con.execute(
        f"""
        update marts.loan_applications
        set defaulted = not defaulted, loss_amount = case when defaulted then 0 else 1 end
        where is_labelled and outcome_observed_at >= cast({cutoff} as date)
        """
    )
    con.execute(
        f"delete from marts.loan_applications where applied_at >= {cutoff} and amount > 20000"
    )
    stage_features(con)
    after = con.execute(
        f"select * from _features where applied_at < {cutoff} order by applied_at, application_id"
    ).df()
    labels = ["is_labelled", "defaulted", "loss_amount", "outcome_observed_at"]
    pd.testing.assert_frame_equal(before.drop(columns=labels), after.drop(columns=labels))
    # The changes were real: later applications now see a history they did not have.
    changed = con.execute(
        f"select count(*) from _features where applied_at >= {cutoff} and prior_applications > 0"
    ).fetchall()[0][0]
    assert changed > 0


def test_duplicate_and_missing_ids_in_the_mart_are_neither_multiplied_nor_lost():
    con = duckdb.connect()
    load_synthetic_mart(con, 600, seed=3)
    con.execute(
        "insert into marts.loan_applications select * from marts.loan_applications "
        "where application_id = 'APP-000000010'"
    )
    con.execute(
        "insert into marts.loan_applications select * replace (null as application_id) "
        "from marts.loan_applications where application_id = 'APP-000000011'"
    )
    assert stage_features(con) == 602  # one feature row per mart row
    report = apply_contract(con)
    publish(con)
    assert report.failures_by_check["application_id:field_uniqueness"] == 2
    assert report.failures_by_check["application_id:not_nullable"] == 1
    counts = con.execute(
        "select (select count(*) from features.loan_features), "
        "(select count(*) from quarantine.loan_features)"
    ).fetchall()[0]
    assert counts == (599, 3)
