-- Customer attributes that may be used downstream: all generalised or non-identifying.
select
    customer_key,
    age_band,
    region,
    education,
    marital_status,
    dependents,
    registered_at
from {{ ref('stg_customers') }}
