-- One row per application, with the applicant's attributes as they were at application time
-- (point in time) and the label when known. The business entity the feature layer and the
-- models start from.
select
    a.application_id,
    a.customer_key,
    a.applied_at,
    cast(a.applied_at as date) as application_date,
    a.amount,
    a.term_months,
    a.purpose,
    a.annual_income,
    a.employment_length,
    a.employment_years,
    a.home_ownership,
    a.debt_to_income,
    a.bureau_score,
    a.open_accounts,
    a.delinq_2yrs,
    a.channel,
    a.quality_flags,
    c.age_band,
    c.region,
    c.education,
    c.marital_status,
    c.dependents,
    date_diff('day', c.registered_at, a.applied_at) as customer_tenure_days,
    a.is_labelled,
    a.defaulted,
    a.loss_amount,
    a.outcome_observed_at,
    a.label_delay_days,
    a.source_file,
    a.source_line
from {{ ref('int_applications_labelled') }} as a
-- The customer as known when the application was made: a later update never reaches back.
asof left join {{ ref('int_customer_profiles') }} as c
    on a.customer_key = c.customer_key and a.applied_at >= c.valid_from
