-- One row per application with a known outcome; the latest record wins.
with source as (
    select * from {{ source('raw', 'outcomes') }}
),

cleaned as (
    select
        trim(application_id) as application_id,
        {{ parse_date('observed_at') }} as observed_at,
        case when defaulted in (0, 1) then defaulted = 1 end as defaulted,
        case when loss_amount >= 0 then loss_amount end as loss_amount,
        {{ lineage_columns() }}
    from source
)

select * from cleaned
{{ keep_latest_record('application_id') }}
