-- One row per customer: trimmed, casing normalised, dates parsed; the latest record wins.
with source as (
    select * from {{ source('raw', 'customers') }}
),

cleaned as (
    select
        trim(customer_id) as customer_id,
        regexp_replace(trim(full_name), '\s+', ' ', 'g') as full_name,
        {{ clean_text('email') }} as email,
        nullif(trim(phone), '') as phone,
        nullif(trim(national_id), '') as national_id,
        {{ parse_date('date_of_birth') }} as date_of_birth,
        nullif(regexp_replace(trim(street_address), '\s+', ' ', 'g'), '') as street_address,
        {{ title_case(clean_text("city")) }} as city,
        {{ clean_text('region') }} as region,
        {{ clean_text('education') }} as education,
        {{ clean_text('marital_status') }} as marital_status,
        case when dependents between 0 and 20 then dependents end as dependents,
        {{ parse_timestamp('registered_at') }} as registered_at,
        {{ lineage_columns() }}
    from source
)

select * from cleaned
{{ keep_latest_record('customer_id') }}
