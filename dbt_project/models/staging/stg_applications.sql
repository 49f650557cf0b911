-- One row per application: typed, normalised, impossible values nulled and flagged, de-duplicated.
with source as (
    select * from {{ source('raw', 'applications') }}
),

cleaned as (
    select
        trim(application_id) as application_id,
        customer_key,
        {{ parse_timestamp('applied_at') }} as applied_at,
        amount as amount_submitted,
        annual_income as annual_income_submitted,
        debt_to_income as debt_to_income_submitted,
        bureau_score as bureau_score_submitted,
        term_months,
        replace({{ clean_text('purpose') }}, ' ', '_') as purpose,
        {{ clean_text('employment_length') }} as employment_length,
        upper(trim(home_ownership)) as home_ownership,
        open_accounts,
        delinq_2yrs,
        {{ clean_text('channel') }} as channel,
        {{ lineage_columns() }}
    from source
),

deduplicated as (
    select * from cleaned
    {{ keep_latest_record('application_id') }}
)

select
    application_id,
    customer_key,
    applied_at,
    -- Impossible values become null (to be imputed downstream) and are named in quality_flags.
    case when amount_submitted > 0 then amount_submitted end as amount,
    term_months,
    purpose,
    case when annual_income_submitted > 0 then annual_income_submitted end as annual_income,
    employment_length,
    case
        when employment_length like '<%' then 0
        else least(try_cast(regexp_extract(employment_length, '(\d+)', 1) as integer), 10)
    end as employment_years,
    home_ownership,
    case when debt_to_income_submitted between 0 and 100 then debt_to_income_submitted end
        as debt_to_income,
    case when bureau_score_submitted between 300 and 850 then bureau_score_submitted end
        as bureau_score,
    open_accounts,
    delinq_2yrs,
    channel,
    nullif(concat_ws(',',
        case when amount_submitted <= 0 then 'amount_not_positive' end,
        case when annual_income_submitted <= 0 then 'annual_income_not_positive' end,
        case when debt_to_income_submitted not between 0 and 100 then 'debt_to_income_out_of_range' end,
        case when bureau_score_submitted not between 300 and 850 then 'bureau_score_out_of_range' end
    ), '') as quality_flags,
    source_file,
    source_line,
    loaded_at
from deduplicated
