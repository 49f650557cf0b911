-- One row per customer: casing normalised, the latest record wins. Identifiers never got here:
-- ingestion put them in the vault and left the pseudonymous customer_key and an age band.
with source as (
    select * from {{ source('raw', 'customers') }}
),

cleaned as (
    select
        customer_key,
        age_band,
        {{ clean_text('region') }} as region,
        {{ clean_text('education') }} as education,
        {{ clean_text('marital_status') }} as marital_status,
        case when dependents between 0 and 20 then dependents end as dependents,
        {{ parse_timestamp('registered_at') }} as registered_at,
        {{ lineage_columns() }}
    from source
)

select * from cleaned
{{ keep_latest_record('customer_key') }}
