-- Customer attributes that may leave staging: no direct identifiers (name, email, phone,
-- national id, street address); the birth date is reduced to the year.
select
    customer_id,
    year(date_of_birth) as birth_year,
    region,
    education,
    marital_status,
    dependents,
    registered_at
from {{ ref('stg_customers') }}
