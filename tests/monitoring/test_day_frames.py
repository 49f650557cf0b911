"""The monitor reads the days' rows in one query, a batch at a time, and splits them by day:
every day gets exactly the rows a query of that day alone returns."""

from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from mlops_assets.monitoring import daily
from mlops_assets.monitoring.reference import SCORE
from mlops_assets.training.spec import ModelSpec

SPEC = ModelSpec(
    name="buys",
    task="classification",
    table="shop.visits",
    id_column="visit_id",
    time_column="seen_at",
    target="bought",
)
FEATURES = ["x", "visits", "channel"]
FIRST = date(2025, 2, 1)
# Rows per day: a day without rows, one larger than a batch, one of a single row.
ROWS = [300, 0, 2_500, 1, 40, 700, 0, 5]


def _warehouse(rng) -> duckdb.DuckDBPyConnection:
    days = np.repeat(np.arange(len(ROWS)), ROWS)
    rows = len(days)
    seen = (
        pd.Timestamp(FIRST)
        + pd.to_timedelta(days, "D")
        + pd.to_timedelta(rng.integers(0, 86_400, rows), "s")
    )
    visits = pd.DataFrame(
        {
            "visit_id": [f"v{i}" for i in range(rows)],
            "seen_at": seen,
            "x": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(size=rows)),
            "visits": pd.array(np.where(rng.random(rows) < 0.1, None, rng.integers(0, 9, rows))),
            "channel": np.where(rng.random(rows) < 0.1, None, rng.choice(["web", "app"], rows)),
        }
    ).sample(frac=1, random_state=1)  # stored in no particular order
    con = duckdb.connect()
    con.execute("create schema shop")
    con.execute("create schema predictions")
    con.register("visits_frame", visits)
    con.execute(
        "create table shop.visits as select visit_id, seen_at, x, "
        "cast(visits as integer) as visits, channel from visits_frame"
    )
    con.execute(
        f"create table {SPEC.scores} as select visit_id, 'champion' as mode, random() as score "
        "from shop.visits union all select visit_id, 'challenger', 2.0 from shop.visits"
    )
    return con


def _one_day(con, day: date) -> pd.DataFrame:
    """The day's rows as a query of that day alone returns them."""
    return con.execute(
        f"select f.x, f.visits, f.channel, s.score as {SCORE} from shop.visits f "
        f"join {SPEC.scores} s on s.visit_id = f.visit_id and s.mode = 'champion' "
        "where cast(f.seen_at as date) = ?",
        [day],
    ).df()


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"x": "float64", "visits": "float64", SCORE: "float64"})
    frame["channel"] = frame["channel"].astype(object).where(frame["channel"].notna(), None)
    return frame.sort_values(SCORE, ignore_index=True)


@pytest.mark.parametrize("vectors", [1, daily.BATCH_VECTORS])
def test_each_day_gets_exactly_its_own_rows(monkeypatch, vectors):
    """With batches of 2,048 rows a day spans three of them; days without rows come back
    empty, and days of the range not asked for are skipped."""
    monkeypatch.setattr(daily, "BATCH_VECTORS", vectors)
    con = _warehouse(np.random.default_rng(0))
    days = [FIRST + timedelta(days=i) for i in (0, 1, 2, 3, 5, 6, 7)]  # not day 4
    frames = list(daily.day_frames(con, SPEC, FEATURES, days))
    assert len(frames) == len(days)
    for day, frame in zip(days, frames, strict=True):
        expected = _one_day(con, day)
        assert list(frame.columns) == [*FEATURES, SCORE]
        assert len(frame) == len(expected) == ROWS[(day - FIRST).days]
        if len(expected):
            pd.testing.assert_frame_equal(_canonical(frame), _canonical(expected))


def test_days_past_the_last_row_are_empty():
    con = _warehouse(np.random.default_rng(1))
    days = [FIRST + timedelta(days=7), FIRST + timedelta(days=30)]
    last, later = daily.day_frames(con, SPEC, FEATURES, days)
    assert len(last) == ROWS[7] and later.empty
