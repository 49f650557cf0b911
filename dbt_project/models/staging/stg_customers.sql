-- One row per customer and landing day: casing normalised, a record re-sent within a day is
-- de-duplicated (the latest wins). A record that lands on a later day is a new version of the
-- customer, kept so applications can be joined to what was known when they were made.
-- Identifiers never got here: ingestion put them in the vault and left the pseudonymous
-- customer_key and an age band.
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
        {{ landing_date('_source_file') }} as landed_on,
        {{ lineage_columns() }}
    from source
)

select * from cleaned
{{ keep_latest_record('customer_key, landed_on') }}
