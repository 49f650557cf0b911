"""Feature engineering in DuckDB SQL: one row per application, point in time.

Every feature of an application uses only what was known when it was made (``applied_at``):
the customer's attributes come from the mart's as-of join, earlier applications are those
submitted strictly before, and an earlier loan's outcome counts only when it was observed on
an earlier day than the application (outcomes are dated by day, so a same-day outcome could
be later in that day). The SQL runs on DuckDB's out-of-core engine: the row count is bounded
by disk, not memory.
"""

from __future__ import annotations

import duckdb

from mlops_assets.sql import table
from mlops_assets.warehouse import column_types, scalar

SOURCE_TABLE = "marts.loan_applications"
STAGED = "_features"  # the temporary table the contract validates

# Employment length bands as underwriters read them; 'unknown' keeps missing values visible.
EMPLOYMENT_BANDS = ("<1", "1-2", "3-5", "6-9", "10+", "unknown")

# The mart columns the feature SQL reads, with the DuckDB types it accepts for each. Checked
# before the SQL runs, so a changed mart fails naming the column instead of casting silently
# (a DOUBLE bureau score would otherwise be rounded to an integer).
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "application_id": ("VARCHAR",),
    "customer_key": ("VARCHAR",),
    "applied_at": ("TIMESTAMP",),
    "amount": ("DOUBLE", "FLOAT"),
    "term_months": ("INTEGER", "BIGINT", "SMALLINT"),
    "purpose": ("VARCHAR",),
    "annual_income": ("DOUBLE", "FLOAT"),
    "employment_years": ("INTEGER", "BIGINT", "SMALLINT", "TINYINT"),
    "home_ownership": ("VARCHAR",),
    "debt_to_income": ("DOUBLE", "FLOAT"),
    "bureau_score": ("INTEGER", "BIGINT", "SMALLINT"),
    "open_accounts": ("INTEGER", "BIGINT", "SMALLINT", "TINYINT"),
    "delinq_2yrs": ("INTEGER", "BIGINT", "SMALLINT", "TINYINT"),
    "channel": ("VARCHAR",),
    "age_band": ("VARCHAR",),
    "region": ("VARCHAR",),
    "education": ("VARCHAR",),
    "marital_status": ("VARCHAR",),
    "dependents": ("INTEGER", "BIGINT", "SMALLINT", "TINYINT"),
    "customer_tenure_days": ("INTEGER", "BIGINT"),
    "is_labelled": ("BOOLEAN",),
    "defaulted": ("BOOLEAN",),
    "loss_amount": ("DOUBLE", "FLOAT"),
    "outcome_observed_at": ("DATE",),
}

FEATURE_SQL = """
with applications as (
    select * from {source}
),

-- Outcomes as events in the customer's history: cumulative counts by the day they became known.
-- An application without a time cannot be placed in the history (it fails the contract).
outcome_events as (
    select
        customer_key,
        outcome_observed_at as known_on,
        sum(count_if(defaulted)) over history as defaults_known,
        sum(count_if(not defaulted)) over history as repaid_known
    from applications
    where is_labelled and applied_at is not null
    group by customer_key, outcome_observed_at
    window history as (partition by customer_key order by outcome_observed_at)
)

select
    a.application_id,
    a.customer_key,
    a.applied_at,
    cast(a.amount as double) as amount,
    ln(1 + cast(a.amount as double)) as log_amount,
    cast(a.term_months as bigint) as term_months,
    cast(a.amount as double) / a.term_months as instalment,
    cast(a.annual_income as double) as annual_income,
    ln(1 + cast(a.annual_income as double)) as log_annual_income,
    a.amount / nullif(a.annual_income, 0) as loan_to_income,
    (a.amount / a.term_months) / nullif(a.annual_income / 12, 0) as payment_to_income,
    cast(a.debt_to_income as double) as debt_to_income,
    cast(a.bureau_score as bigint) as bureau_score,
    cast(a.open_accounts as bigint) as open_accounts,
    cast(a.delinq_2yrs as bigint) as delinq_2yrs,
    cast(a.employment_years as bigint) as employment_years,
    case
        when a.employment_years is null then 'unknown'
        when a.employment_years < 1 then '<1'
        when a.employment_years <= 2 then '1-2'
        when a.employment_years <= 5 then '3-5'
        when a.employment_years <= 9 then '6-9'
        else '10+'
    end as employment_band,
    a.purpose,
    a.home_ownership,
    a.channel,
    a.age_band,
    a.region,
    a.education,
    a.marital_status,
    cast(a.dependents as bigint) as dependents,
    cast(a.customer_tenure_days as bigint) as customer_tenure_days,
    -- rank - 1 = the customer's applications submitted strictly earlier (ties are not before).
    cast(rank() over by_time - 1 as bigint) as prior_applications,
    cast(coalesce(o.defaults_known, 0) as bigint) as prior_defaults,
    cast(coalesce(o.repaid_known, 0) as bigint) as prior_repaid,
    date_diff(
        'second',
        max(a.applied_at) over (
            partition by a.customer_key order by a.applied_at
            range between unbounded preceding and interval 1 microsecond preceding
        ),
        a.applied_at
    ) / 86400.0 as days_since_prior_application,
    a.is_labelled,
    a.defaulted,
    cast(a.loss_amount as double) as loss_amount,
    cast(a.outcome_observed_at as timestamp) as outcome_observed_at
from applications as a
asof left join outcome_events as o
    on a.customer_key = o.customer_key and cast(a.applied_at as date) > o.known_on
window by_time as (partition by a.customer_key order by a.applied_at)
"""


class FeatureInputError(ValueError):
    """The mart does not have the columns and types the feature SQL reads."""


def check_source(con: duckdb.DuckDBPyConnection, source: str = SOURCE_TABLE) -> None:
    """Fail, naming every missing column and wrong type, before any feature is computed."""
    types = column_types(con, source)
    problems = [
        f"{name}: missing"
        if name not in types
        else f"{name}: {types[name]}, expected {' or '.join(allowed)}"
        for name, allowed in SOURCE_COLUMNS.items()
        if types.get(name) not in allowed
    ]
    if problems:
        raise FeatureInputError(
            f"{source} does not match what the feature SQL reads (input check source_schema): "
            + "; ".join(problems)
            + ". Nothing was written; the previous features are unchanged."
        )


def feature_sql(source: str = SOURCE_TABLE) -> str:
    """The feature SELECT over ``source`` (a table or view with the mart's columns)."""
    return FEATURE_SQL.format(source=table(source))


def stage_features(con: duckdb.DuckDBPyConnection, *, source: str = SOURCE_TABLE) -> int:
    """Compute the features into the temporary table ``_features``; returns its row count.

    Rows are stored in time order, so ``rowid`` is a stable row id in that order: a verdict
    on a row is applied in SQL by it, and the published table keeps the order. DuckDB spills
    the temporary table to disk when it does not fit in memory.
    """
    check_source(con, source)
    con.execute(
        f"create or replace temporary table {STAGED} as "
        f"select * from ({feature_sql(source)}) order by applied_at, application_id"
    )
    return scalar(con, f"select count(*) from {STAGED}")
