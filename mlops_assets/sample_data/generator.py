"""Realistic, deterministic landing files: customers, loan applications and delayed default labels.

One CSV per source per day, ``<out>/<source>/<YYYY-MM-DD>.csv``. The data is built column by column
with numpy/pandas (no per-row Python), so a million applications take seconds.

What makes it realistic enough for every later stage:

* a learnable but noisy default signal (bureau score, debt-to-income, loan-to-income, term, purpose,
  a hidden per-customer risk that also shows in the customer's later applications);
* delayed labels: an application's outcome arrives 4-12 weeks later, in that later day's file,
  so the most recent applications have none yet;
* about 2 % dirty records of the kinds real feeds have (see ``*_DIRT``);
* from ``drift_from_day``, a population shift (lower incomes, a new purpose) and a concept shift
  (debt-to-income matters more for default).

Same arguments give byte-identical files: every day draws from its own seeded generator.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import repeat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from mlops_assets.sample_data import vocabulary as vocab

SOURCES = ("customers", "applications", "outcomes")

CUSTOMER_COLUMNS = (
    "customer_id",
    "full_name",
    "email",
    "phone",
    "national_id",
    "date_of_birth",
    "street_address",
    "city",
    "region",
    "education",
    "marital_status",
    "dependents",
    "registered_at",
)
APPLICATION_COLUMNS = (
    "application_id",
    "customer_id",
    "applied_at",
    "amount",
    "term_months",
    "purpose",
    "annual_income",
    "employment_length",
    "home_ownership",
    "debt_to_income",
    "bureau_score",
    "open_accounts",
    "delinq_2yrs",
    "channel",
)
OUTCOME_COLUMNS = ("application_id", "observed_at", "defaulted", "loss_amount")
COLUMNS = {
    "customers": CUSTOMER_COLUMNS,
    "applications": APPLICATION_COLUMNS,
    "outcomes": OUTCOME_COLUMNS,
}

# Share of records per kind of dirt. A record gets at most one kind, so the counts add up.
APPLICATION_DIRT = {
    "missing_value": 0.005,
    "casing_whitespace": 0.004,
    "date_format": 0.004,
    "exact_duplicate": 0.003,
    "impossible_value": 0.0025,
    "near_duplicate": 0.002,
    "not_a_number": 0.0005,
    "malformed_line": 0.0005,
}
CUSTOMER_DIRT = {
    "casing_whitespace": 0.005,
    "date_format": 0.005,
    "missing_value": 0.003,
    "exact_duplicate": 0.003,
    "near_duplicate": 0.002,
}
OUTCOME_DIRT = {"exact_duplicate": 0.006, "date_format": 0.006}

RETURNING_SHARE = 0.12  # applications from customers who applied before
LABEL_DELAY_DAYS = (28, 84)  # outcomes arrive 4 to 12 weeks after the application


@dataclass(frozen=True)
class GeneratorConfig:
    days: int = 90
    rows_per_day: int = 1100
    seed: int = 42
    drift_from_day: int | None = None
    start_date: date = date(2025, 1, 1)

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.rows_per_day < 1:
            raise ValueError(f"rows_per_day must be at least 1, got {self.rows_per_day}")
        if self.drift_from_day is not None and not 0 <= self.drift_from_day < self.days:
            raise ValueError(
                f"drift_from_day must be between 0 and {self.days - 1}, got {self.drift_from_day}"
            )


@dataclass
class GenerationReport:
    """What was written: files, data lines per source, and dirty records per (source, kind)."""

    files: list[Path] = field(default_factory=list)
    rows: Counter = field(default_factory=Counter)
    dirty: Counter = field(default_factory=Counter)

    def dirty_rate(self, source: str) -> float:
        total = sum(n for (src, _), n in self.dirty.items() if src == source)
        return total / max(self.rows[source], 1)


PARALLEL_FROM_ROWS = 20_000  # below this, starting worker processes costs more than it saves


def generate(config: GeneratorConfig, out: Path, *, workers: int | None = None) -> GenerationReport:
    """Write the landing files for ``config`` under ``out`` and report what was written.

    Days are built on ``workers`` processes (default: one per core from PARALLEL_FROM_ROWS
    rows), in two passes because a day's outcomes file holds labels drawn on earlier days.
    Each day keeps its own seeded generator across both passes, so the files are the same
    byte for byte whatever the number of workers."""
    out = Path(out)
    plan = _plan(config)
    if workers is None:
        big = config.days * config.rows_per_day >= PARALLEL_FROM_ROWS
        workers = min(os.cpu_count() or 1, config.days) if big else 1
    days = range(config.days)
    with _executor(workers) as pool:
        chunk = max(1, config.days // (4 * workers))
        built = list(pool.map(_build_day, repeat(config), repeat(plan), days, chunksize=chunk))
        pending_outcomes: dict[int, list[pd.DataFrame]] = {}
        outcomes_of_day = []
        for day, (_, _, outcomes, _) in zip(days, built, strict=True):
            for observed_day, frame in outcomes.groupby("observed_day", sort=True):
                pending_outcomes.setdefault(int(observed_day), []).append(frame)
            outcomes_of_day.append(pd.concat(pending_outcomes.pop(day, []) or [_empty_outcomes()]))
        written = pool.map(
            _write_day,
            repeat(config),
            repeat(out),
            days,
            [b[0] for b in built],
            [b[1] for b in built],
            outcomes_of_day,
            [b[3] for b in built],
            chunksize=chunk,
        )
        report = GenerationReport()
        for day_report in written:
            report.files += day_report.files
            report.rows.update(day_report.rows)
            report.dirty.update(day_report.dirty)
    return report


@contextlib.contextmanager
def _executor(workers: int) -> Iterator:
    """Worker processes, or (one worker) this process: the same ``map`` either way."""
    if workers <= 1:
        yield SimpleNamespace(map=lambda fn, *iterables, chunksize=1: map(fn, *iterables))
        return
    # forkserver, not fork: the caller may have threads (a test runner, a Dagster run).
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield pool


def _build_day(config: GeneratorConfig, plan: _Plan, day: int):
    """A day's records, and its generator's state for :func:`_write_day` to go on from."""
    rng = np.random.default_rng([config.seed, day])
    customers, applications, outcomes = _day(config, plan, day, rng)
    return customers, applications, outcomes, rng.bit_generator.state


def _write_day(
    config: GeneratorConfig,
    out: Path,
    day: int,
    customers: pd.DataFrame,
    applications: pd.DataFrame,
    outcomes: pd.DataFrame,
    state: dict,
) -> GenerationReport:
    """Dirty and write the day's three files (the outcomes observed that day)."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    report = GenerationReport()
    for source, frame, dirt in (
        ("customers", customers, CUSTOMER_DIRT),
        ("applications", applications, APPLICATION_DIRT),
        ("outcomes", outcomes.drop(columns="observed_day"), OUTCOME_DIRT),
    ):
        if frame.empty:
            continue  # no file rather than a header-only one (early days have no outcomes)
        lines = _csv_lines(frame[list(COLUMNS[source])], source, dirt, rng, report)
        path = out / source / f"{config.start_date + timedelta(days=day):%Y-%m-%d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(",".join(COLUMNS[source]) + "\n" + "\n".join(lines) + "\n")
        report.files.append(path)
        report.rows[source] += len(lines)
    return report


@dataclass(frozen=True)
class _Plan:
    """Decisions that span days: how many applications, which customers exist, hidden risk."""

    n_applications: np.ndarray
    n_returning: np.ndarray
    first_application: np.ndarray  # global id of each day's first application
    first_customer: np.ndarray  # global id of each day's first new customer
    customer_risk: np.ndarray  # hidden risk per customer, N(0, 1)


def _plan(config: GeneratorConfig) -> _Plan:
    rng = np.random.default_rng([config.seed, 1_000_003])
    weekday = (np.arange(config.days) + config.start_date.weekday()) % 7
    volume = np.where(weekday >= 5, 0.7, 1.12) * config.rows_per_day  # quieter weekends
    n_apps = np.maximum(rng.poisson(volume), 1)
    n_returning = rng.binomial(n_apps, RETURNING_SHARE)
    n_returning[0] = 0  # nobody has applied before day one
    n_new = n_apps - n_returning
    first_app = np.concatenate([[0], np.cumsum(n_apps)[:-1]])
    first_customer = np.concatenate([[0], np.cumsum(n_new)[:-1]])
    return _Plan(n_apps, n_returning, first_app, first_customer, rng.normal(size=int(n_new.sum())))


def _choice(rng: np.random.Generator, options: tuple, size: int) -> np.ndarray:
    values, weights = zip(*options, strict=True)
    weights = np.asarray(weights, dtype=float)
    return np.asarray(values)[rng.choice(len(values), size=size, p=weights / weights.sum())]


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    return prefix + pd.Series(numbers, dtype="int64").astype(str).str.zfill(width)


def _money(values: np.ndarray) -> pd.Series:
    """Two-decimal strings without a per-row format call: integer cents split into parts."""
    cents = np.round(np.asarray(values, dtype=float) * 100).astype(np.int64)
    sign = np.where(cents < 0, "-", "")
    cents = np.abs(cents)
    whole = pd.Series(cents // 100).astype(str)
    frac = pd.Series(cents % 100).astype(str).str.zfill(2)
    return sign + whole + "." + frac


def _timestamps(seconds: np.ndarray) -> pd.Series:
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return pd.Series(text).str.replace("T", " ", regex=False)


def _day(
    config: GeneratorConfig, plan: _Plan, day: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    drifted = config.drift_from_day is not None and day >= config.drift_from_day
    n = int(plan.n_applications[day])
    n_ret = int(plan.n_returning[day])
    n_new = n - n_ret
    day_start = np.datetime64(config.start_date + timedelta(days=day), "s").astype(np.int64)

    # Customers first seen today, and the returning ones drawn from everyone seen before.
    new_ids = plan.first_customer[day] + np.arange(n_new)
    returning_ids = rng.integers(0, max(plan.first_customer[day], 1), size=n_ret)
    customer_idx = np.concatenate([new_ids, returning_ids])
    risk = plan.customer_risk[customer_idx]

    applied = day_start + np.sort(rng.integers(6 * 3600, 23 * 3600, size=n))
    order = rng.permutation(n)  # who applies when: new and returning customers interleave
    customer_idx, risk = customer_idx[order], risk[order]

    income = np.exp(rng.normal(math.log(62_000), 0.45, size=n) - 0.15 * risk)
    if drifted:
        income *= 0.8  # population shift: the new campaign reaches lower incomes
    income = np.round(income / 100) * 100
    amount = np.clip(np.round(income * rng.uniform(0.04, 0.45, size=n) / 25) * 25, 1000, 40000)
    term = _choice(rng, vocab.TERMS, n).astype(int)
    purposes = vocab.PURPOSES + ((vocab.DRIFT_PURPOSE,) if drifted else ())
    purpose = _choice(rng, purposes, n)
    employment_years = np.minimum(rng.geometric(0.18, size=n) - 1, 10)
    dti = np.round(np.clip(rng.normal(18 + 3 * risk, 7, size=n), 0, 45), 2)
    bureau = np.clip(np.round(rng.normal(690 - 35 * risk, 40, size=n)), 300, 850).astype(int)
    open_accounts = rng.poisson(9, size=n)
    delinq = rng.poisson(0.25 * np.exp(0.6 * risk))

    # The default signal: observable drivers plus the hidden customer risk plus noise.
    dti_weight = 0.09 if drifted else 0.035  # concept shift: debt-to-income matters more
    logit = (
        -2.4
        + 0.5 * risk
        + dti_weight * (dti - 18)
        - 0.012 * (bureau - 690)
        + 1.2 * np.log(amount / income / 0.2)
        + 0.35 * (term == 60)
        + 0.25 * delinq
        - 0.04 * employment_years
        + pd.Series(purpose).map(vocab.PURPOSE_RISK).to_numpy()
        + rng.normal(0, 0.5, size=n)
    )
    defaulted = rng.random(n) < 1 / (1 + np.exp(-logit))
    loss = np.where(defaulted, np.round(amount * rng.uniform(0.25, 0.95, size=n), 2), 0.0)
    observed_day = day + rng.integers(LABEL_DELAY_DAYS[0], LABEL_DELAY_DAYS[1] + 1, size=n)

    app_ids = _ids("APP-", plan.first_application[day] + np.arange(n), 8)
    cust_ids = _ids("CUS-", customer_idx, 7)
    applications = pd.DataFrame(
        {
            "application_id": app_ids,
            "customer_id": cust_ids,
            "applied_at": _timestamps(applied),
            "amount": _money(amount),
            "term_months": pd.Series(term).astype(str),
            "purpose": purpose,
            "annual_income": _money(income),
            "employment_length": np.asarray(vocab.EMPLOYMENT_LENGTHS)[employment_years],
            "home_ownership": _choice(rng, vocab.HOME_OWNERSHIP, n),
            "debt_to_income": _money(dti),
            "bureau_score": pd.Series(bureau).astype(str),
            "open_accounts": pd.Series(open_accounts).astype(str),
            "delinq_2yrs": pd.Series(delinq).astype(str),
            "channel": _choice(rng, vocab.CHANNELS, n),
        }
    )
    labelled = observed_day < config.days  # later outcomes are not known yet
    outcome_dates = np.datetime64(config.start_date, "D") + observed_day[labelled]
    outcomes = pd.DataFrame(
        {
            "application_id": app_ids[labelled].to_numpy(),
            "observed_at": np.datetime_as_string(outcome_dates, unit="D"),
            "defaulted": defaulted[labelled].astype(int).astype(str),
            "loss_amount": _money(loss[labelled]).to_numpy(),
            "observed_day": observed_day[labelled],
        }
    )
    return _customers(new_ids, day_start, rng), applications, outcomes


def _customers(ids: np.ndarray, day_start: int, rng: np.random.Generator) -> pd.DataFrame:
    n = len(ids)
    first = pd.Series(np.asarray(vocab.FIRST_NAMES)[rng.integers(0, len(vocab.FIRST_NAMES), n)])
    last = pd.Series(np.asarray(vocab.LAST_NAMES)[rng.integers(0, len(vocab.LAST_NAMES), n)])
    digits = pd.Series(rng.integers(0, 10_000, n)).astype(str)
    domain = pd.Series(np.asarray(vocab.EMAIL_DOMAINS)[rng.integers(0, 4, n)])
    email_local = (first + "." + last.str.replace("'", "", regex=False) + digits).str.lower()
    city_idx = rng.integers(0, len(vocab.CITIES), n)
    cities = np.asarray([c for c, _ in vocab.CITIES])
    regions = np.asarray([r for _, r in vocab.CITIES])
    age_days = rng.integers(21 * 365, 76 * 365, n)
    dob = np.datetime64(int(day_start // 86400), "D") - age_days
    street = pd.Series(np.asarray(vocab.STREET_NAMES)[rng.integers(0, len(vocab.STREET_NAMES), n)])
    suffix = pd.Series(
        np.asarray(vocab.STREET_SUFFIXES)[rng.integers(0, len(vocab.STREET_SUFFIXES), n)]
    )

    def number_block(low: int, high: int, width: int) -> pd.Series:
        return pd.Series(rng.integers(low, high, n)).astype(str).str.zfill(width)

    return pd.DataFrame(
        {
            "customer_id": _ids("CUS-", ids, 7),
            "full_name": first + " " + last,
            "email": email_local + "@" + domain,
            "phone": "+1-555-" + number_block(100, 1000, 3) + "-" + number_block(0, 10_000, 4),
            "national_id": number_block(100, 900, 3)
            + "-"
            + number_block(10, 100, 2)
            + "-"
            + number_block(0, 10_000, 4),
            "date_of_birth": np.datetime_as_string(dob, unit="D"),
            "street_address": number_block(1, 2000, 1) + " " + street + " " + suffix,
            "city": cities[city_idx],
            "region": regions[city_idx],
            "education": _choice(rng, vocab.EDUCATION, n),
            "marital_status": _choice(rng, vocab.MARITAL_STATUS, n),
            "dependents": pd.Series(np.minimum(rng.poisson(0.9, n), 6)).astype(str),
            "registered_at": _timestamps(day_start + rng.integers(0, 6 * 3600, n)),
        }
    )


def _empty_outcomes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in (*OUTCOME_COLUMNS, "observed_day")})


# --- dirt -------------------------------------------------------------------------------------


def _alternative_date_format(values: pd.Series, rng: np.random.Generator) -> pd.Series:
    """ISO 'YYYY-MM-DD[ HH:MM:SS]' rewritten as 'YYYY-MM-DDTHH:MM:SSZ' or 'DD/MM/YYYY[ ...]'."""
    iso_t = values.str.replace(" ", "T", regex=False) + "Z"
    european = (
        values.str.slice(8, 10)
        + "/"
        + values.str.slice(5, 7)
        + "/"
        + values.str.slice(0, 4)
        + values.str.slice(10)
    )
    if values.str.len().max() <= 10:  # a date, not a timestamp: only the European form applies
        return european
    return european.where(rng.random(len(values)) < 0.5, iso_t)


def _messy_case(values: pd.Series, rng: np.random.Generator) -> pd.Series:
    pick = rng.integers(0, 3, len(values))
    return (
        values.str.upper()
        .where(pick == 0, values.str.title())
        .where(pick != 2, "  " + values + " ")
    )


def _apply_dirt(
    frame: pd.DataFrame, source: str, kind: str, rows: np.ndarray, rng: np.random.Generator
) -> None:
    """Make ``rows`` of ``frame`` dirty in place with one kind of dirt."""
    sub = frame.loc[rows]
    if kind == "missing_value":
        nullable = {
            "applications": [
                "employment_length",
                "annual_income",
                "bureau_score",
                "home_ownership",
            ],
            "customers": ["city", "education", "marital_status"],
        }[source]
        column = np.asarray(nullable)[rng.integers(0, len(nullable), len(rows))]
        for col in nullable:
            frame.loc[rows[column == col], col] = ""
    elif kind in ("casing_whitespace", "near_duplicate"):
        col = {"applications": "purpose", "customers": "city"}[source]
        frame.loc[rows, col] = _messy_case(sub[col], rng).to_numpy()
        other = {"applications": "channel", "customers": "email"}[source]
        frame.loc[rows, other] = sub[other].str.upper().to_numpy()
    elif kind == "date_format":
        col = {
            "applications": "applied_at",
            "customers": "date_of_birth",
            "outcomes": "observed_at",
        }
        col = col[source]
        frame.loc[rows, col] = _alternative_date_format(sub[col], rng).to_numpy()
    elif kind == "impossible_value":
        pick = rng.integers(0, 4, len(rows))
        frame.loc[rows[pick == 0], "amount"] = "-" + sub["amount"][pick == 0]
        frame.loc[rows[pick == 1], "annual_income"] = "0.00"
        frame.loc[rows[pick == 2], "bureau_score"] = "9999"
        frame.loc[rows[pick == 3], "debt_to_income"] = "999.00"
    elif kind == "not_a_number":
        income = sub["annual_income"]
        frame.loc[rows, "annual_income"] = np.where(
            rng.random(len(rows)) < 0.5,
            "n/a",
            '"' + income.str[:-6] + "," + income.str[-6:-3] + '"',
        )
    else:  # pragma: no cover - guarded by the dirt tables above
        raise ValueError(f"unknown dirt kind {kind!r}")


def _csv_lines(
    frame: pd.DataFrame,
    source: str,
    dirt: dict[str, float],
    rng: np.random.Generator,
    report: GenerationReport,
) -> list[str]:
    """Dirty ``frame`` as configured and render it as CSV lines (no header)."""
    frame = frame.reset_index(drop=True).astype("string[pyarrow]")
    n = len(frame)
    # One uniform draw per record; disjoint intervals of it select the kind of dirt.
    draw = rng.random(n)
    edges = np.cumsum([0.0, *dirt.values()])
    kinds = dict(zip(dirt, itertools.pairwise(edges), strict=True))
    rows_of = {kind: np.flatnonzero((draw >= lo) & (draw < hi)) for kind, (lo, hi) in kinds.items()}
    for kind, rows in rows_of.items():
        report.dirty[(source, kind)] += len(rows)

    # Duplicates are extra records: copy the original first, then dirty the near-duplicate copy.
    copies, origins = [], []
    for kind in ("exact_duplicate", "near_duplicate"):
        rows = rows_of.get(kind, np.array([], dtype=int))
        if len(rows):
            copy = frame.loc[rows].reset_index(drop=True)
            if kind == "near_duplicate":
                _apply_dirt(copy, source, kind, np.arange(len(copy)), rng)
            copies.append(copy)
            origins.append(rows)
    for kind, rows in rows_of.items():
        if kind not in ("exact_duplicate", "near_duplicate", "malformed_line") and len(rows):
            _apply_dirt(frame, source, kind, rows, rng)

    columns = list(frame.columns)
    lines = frame[columns[0]].str.cat([frame[c] for c in columns[1:]], sep=",")
    malformed = rows_of.get("malformed_line", np.array([], dtype=int))
    if len(malformed):
        # Half lose their last field, half gain an unexpected one.
        cut = lines[malformed].str.rsplit(",", n=1).str[0]
        lines[malformed] = cut.where(rng.random(len(malformed)) < 0.5, lines[malformed] + ",??")
    if copies:
        copy_frame = pd.concat(copies, ignore_index=True)
        copy_lines = copy_frame[columns[0]].str.cat([copy_frame[c] for c in columns[1:]], sep=",")
        # Re-sent records arrive right after the original, as they do from a retrying client.
        copy_lines.index = np.concatenate(origins) + 0.5
        lines = pd.concat([lines, copy_lines]).sort_index(kind="stable")
    return lines.tolist()
