"""The monitor works from a ModelSpec: any table, id and time column, a classifier or a
regressor (whose labelled rows are restricted by ``where``), and every model's reports sit in
the same tables."""

import contextlib
from datetime import date, timedelta
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pytest

from mlops_assets.monitoring.daily import (
    REPORTS_TABLE,
    MonitorConfig,
    drifted_days,
    monitor_days,
    store,
)
from mlops_assets.monitoring.reference import reference_attachments
from mlops_assets.parallel import Placement
from mlops_assets.training.dataset import FeatureSpec
from mlops_assets.training.spec import ModelSpec

COMMON = dict(table="shop.visits", id_column="visit_id", time_column="seen_at")
CLASSIFIER = ModelSpec(name="buys", task="classification", target="bought", **COMMON)
REGRESSOR = ModelSpec(
    name="basket", task="regression", target="spent", where={"bought": True}, **COMMON
)
TRAINED_UNTIL = pd.Timestamp("2025-01-20")
DAYS = [date(2025, 2, 1) + timedelta(days=i) for i in range(5)]


class FakeRegistry:
    """A registry holding one champion per model, with its drift reference and card."""

    def __init__(self, root, cards: dict[str, dict]):
        self.root, self.cards = root, cards

    def champion(self, model):
        return f"{model}-v1"

    def attachment(self, model, version, name):
        return self.root / model / name

    def card(self, model, version):
        return SimpleNamespace(data=self.cards[model])


def _visits(rng, start: str, days: int, shift: float) -> pd.DataFrame:
    rows = days * 300
    seen = pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, days * 24, rows), "h")
    x = rng.normal(shift, 1, rows)
    bought = rng.random(rows) < 1 / (1 + np.exp(-2 * x))
    return pd.DataFrame(
        {
            "visit_id": [f"{start}-{i}" for i in range(rows)],
            "seen_at": seen,
            "x": x,
            "channel": rng.choice(["web", "app"], rows),
            "bought": bought,
            "spent": np.where(bought, rng.gamma(2, 50, rows), np.nan),
        }
    )


def _shop(tmp_path) -> tuple[duckdb.DuckDBPyConnection, FakeRegistry, pd.DataFrame]:
    """A warehouse of visits (20 days before the champions' training ended, then 5 shifted),
    both models' champion scores, and a registry of their champions' drift references."""
    rng = np.random.default_rng(11)
    past, live = _visits(rng, "2025-01-01", 20, 0.0), _visits(rng, "2025-02-01", 5, 0.8)
    visits = pd.concat([past, live], ignore_index=True)
    con = duckdb.connect()
    con.execute("create schema shop")
    con.register("visits_frame", visits)
    con.execute("create table shop.visits as select * from visits_frame")
    signature = FeatureSpec(numeric=("x",), categorical=("channel",))
    # The classifier scores the probability of buying (informative); the regressor's predicted
    # basket is off by ~100 where its holdout was off by 50: RMSE doubled.
    scores = {
        "buys": 1 / (1 + np.exp(-2 * visits["x"])),
        "basket": visits["spent"].fillna(100) + rng.normal(0, 100, len(visits)),
    }
    cards = {
        "buys": {"applied_until": str(TRAINED_UNTIL), "metrics": {"roc_auc": 0.75}},
        "basket": {"applied_until": str(TRAINED_UNTIL), "metrics": {"rmse": 50.0}},
    }
    con.execute("create schema predictions")
    for spec in (CLASSIFIER, REGRESSOR):
        frame = pd.DataFrame(
            {"visit_id": visits["visit_id"], "score": scores[spec.name],
             "model_version": f"{spec.name}-v1", "mode": "champion"}
        )  # fmt: skip
        con.register("frame", frame)
        con.execute(f"create table predictions.{spec.name} as select * from frame")
        con.unregister("frame")
        trained = (visits["seen_at"] <= TRAINED_UNTIL).to_numpy()
        (tmp_path / spec.name).mkdir()
        attachments = reference_attachments(
            visits.loc[trained, ["x", "channel"]], signature, scores[spec.name][trained].to_numpy()
        )
        for name, write in attachments.items():
            write(tmp_path / spec.name / name)
    return con, FakeRegistry(tmp_path, cards), visits


def test_a_classifier_and_a_regressor_on_one_table_are_monitored_side_by_side(tmp_path):
    con, registry, visits = _shop(tmp_path)
    live = visits[visits["seen_at"] >= pd.Timestamp("2025-02-01")]
    config = MonitorConfig(multivariate=False, min_labelled=100)

    results = {
        spec.name: monitor_days(con, registry, spec, DAYS, config)
        for spec in (CLASSIFIER, REGRESSOR)
    }
    for name, days in results.items():
        store(con, name, days)

    buys, basket = results["buys"][-1].summary(), results["basket"][-1].summary()
    assert buys["rows"] == basket["rows"] == (live["seen_at"].dt.date == DAYS[-1]).sum()
    assert buys["performance_metric"] == "roc_auc" and not buys["performance_drift"]
    assert basket["performance_metric"] == "rmse" and basket["performance_drift"]
    # Rows after the champion's training data count; for the regressor only those bought.
    unseen = visits[visits["seen_at"] > TRAINED_UNTIL]
    assert basket["labelled"] == unseen["bought"].sum() < buys["labelled"] == len(unseen)
    assert basket["live_metric"] > 1.5 * basket["holdout_metric"]
    assert buys["dataset_drift"] and buys["prediction_drift"]  # x moved, and so the score
    rows = con.execute(
        f"select model, count(*), bool_and(performance_drift) from {REPORTS_TABLE} "
        "group by model order by model"
    ).fetchall()
    assert rows == [("basket", 5, True), ("buys", 5, False)]
    assert set(drifted_days(con, DAYS[0], DAYS[-1])) == {"basket", "buys"}


def test_days_go_to_the_cluster_only_when_many_or_a_scheduler_runs_it(tmp_path, monkeypatch):
    """Days go to the Dask client from PARALLEL_FROM_DAYS days with PARALLEL_FROM_ROWS rows
    in all, or at a scheduler address; fewer rows run on the step's threads and ask for no
    client (starting workers would cost more than the days), with the same reports."""
    from mlops_assets.monitoring import daily

    con, registry, visits = _shop(tmp_path)
    days = [date(2025, 1, 2) + timedelta(days=i) for i in range(daily.PARALLEL_FROM_DAYS)]
    rows = int(visits["seen_at"].dt.date.isin(days).sum())
    config = MonitorConfig(multivariate=False)
    asked: list[bool] = []

    def client_factory():  # a client on threads, counted
        asked.append(True)
        return contextlib.nullcontext(None)

    def report(**options) -> list[dict]:
        placement = Placement()
        results = monitor_days(
            con, registry, CLASSIFIER, days, config, client_factory, placement, **options
        )
        assert sum(placement.values()) == len(days)
        return [r.summary() for r in results]

    assert rows < daily.PARALLEL_FROM_ROWS
    local = report()
    assert asked == []
    # At a scheduler address the days' rows are not even counted.
    counted = daily._rows_of
    with monkeypatch.context() as patched:
        patched.setattr(daily, "_rows_of", lambda *args: pytest.fail("counted"))
        assert report(has_scheduler=True) == local and asked == [True]
    # The count is of these days' rows: one more than they hold stays on threads.
    assert counted(con, CLASSIFIER, days) == rows < len(visits)
    monkeypatch.setattr(daily, "PARALLEL_FROM_ROWS", rows + 1)
    assert report() == local and asked == [True]
    monkeypatch.setattr(daily, "PARALLEL_FROM_ROWS", rows)
    assert report() == local and asked == [True, True]
    # Fewer days than fan out stay here, however many rows or whatever the scheduler.
    few = days[: daily.PARALLEL_FROM_DAYS - 1]
    monitor_days(con, registry, CLASSIFIER, few, config, client_factory, has_scheduler=True)
    assert asked == [True, True]
