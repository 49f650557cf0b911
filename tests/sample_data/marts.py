"""Mart-shaped synthetic rows: `marts.loan_applications` without the landing/dbt round trip.

For tests and benchmarks of the feature and training layers at sizes the full pipeline would
take minutes to reach (test data: not shipped with the package). Values are valid under the
feature contract; history is consistent (returning customers, outcomes 4-12 weeks after the
application, losses only on defaults).
"""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import pandas as pd

from mlops_assets.sample_data import vocabulary as vocab


def _choice(rng: np.random.Generator, options: tuple, size: int) -> np.ndarray:
    values, weights = zip(*options, strict=True)
    p = np.asarray(weights, dtype=float)
    return np.asarray(values)[rng.choice(len(values), size=size, p=p / p.sum())]


def synthetic_mart(rows: int, *, seed: int = 0, days: int = 90) -> pd.DataFrame:
    """``rows`` applications over ``days`` days, as the mart would hold them."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2025-01-01T00:00:00", "s")
    applied = start + np.sort(rng.integers(0, days * 86_400, rows)).astype("timedelta64[s]")
    n_customers = max(1, int(rows * 0.85))
    customer = rng.integers(0, n_customers, rows)
    keys = np.asarray(
        [hashlib.sha256(f"{seed}:{c}".encode()).hexdigest() for c in range(n_customers)]
    )
    income = np.round(np.exp(rng.normal(np.log(62_000), 0.45, rows)) / 100) * 100
    amount = np.clip(np.round(income * rng.uniform(0.04, 0.45, rows) / 25) * 25, 1000, 40000)
    dti = np.round(np.clip(rng.normal(18, 7, rows), 0, 45), 2)
    bureau = np.clip(np.round(rng.normal(690, 40, rows)), 300, 850)
    defaulted = rng.random(rows) < 1 / (1 + np.exp(-(-2.0 + 0.04 * (dti - 18))))
    observed = (applied.astype("datetime64[D]") + rng.integers(28, 85, rows)).astype(
        "datetime64[s]"
    )
    labelled = observed <= applied.max()
    loss = np.where(defaulted, np.round(amount * rng.uniform(0.25, 0.95, rows), 2), 0.0)
    return pd.DataFrame(
        {
            "application_id": pd.Series(np.arange(rows)).map("APP-{:09d}".format),
            "customer_key": keys[customer],
            "applied_at": applied.astype("datetime64[us]"),
            "amount": amount,
            "term_months": _choice(rng, vocab.TERMS, rows).astype("int32"),
            "purpose": _choice(rng, vocab.PURPOSES, rows),
            "annual_income": income,
            "employment_years": np.minimum(rng.geometric(0.18, rows) - 1, 10).astype("int32"),
            "home_ownership": _choice(rng, vocab.HOME_OWNERSHIP, rows),
            "debt_to_income": dti,
            "bureau_score": bureau.astype("int32"),
            "open_accounts": rng.poisson(9, rows).astype("int32"),
            "delinq_2yrs": rng.poisson(0.25, rows).astype("int32"),
            "channel": _choice(rng, vocab.CHANNELS, rows),
            "age_band": _choice(rng, tuple((b, 1) for b in ("25-34", "35-44", "45-54")), rows),
            "region": _choice(rng, tuple((r, 1) for r in ("north", "south", "east", "west")), rows),
            "education": _choice(rng, vocab.EDUCATION, rows),
            "marital_status": _choice(rng, vocab.MARITAL_STATUS, rows),
            "dependents": np.minimum(rng.poisson(0.9, rows), 6).astype("int32"),
            "customer_tenure_days": rng.integers(0, 400, rows),
            "is_labelled": labelled,
            "defaulted": pd.Series(defaulted, dtype="boolean").where(labelled),
            "loss_amount": np.where(labelled, loss, np.nan),
            "outcome_observed_at": pd.Series(observed.astype("datetime64[us]")).where(labelled),
        }
    )


def load_synthetic_mart(
    con: duckdb.DuckDBPyConnection, rows: int, *, seed: int = 0, days: int = 90
) -> None:
    """Create ``marts.loan_applications`` with ``rows`` synthetic applications."""
    frame = synthetic_mart(rows, seed=seed, days=days)
    con.execute("create schema if not exists marts")
    con.register("_synthetic_mart", frame)
    con.execute(
        "create or replace table marts.loan_applications as "
        "select * replace (cast(outcome_observed_at as date) as outcome_observed_at) "
        "from _synthetic_mart"
    )
    con.unregister("_synthetic_mart")
