-- Customer attribute versions (slowly changing, type 2), so an application is joined to the
-- attributes known when it was made, never to a later update. Records are dated by the day
-- their file landed, not the hour, so a later version counts from the next day: an update
-- landing on day D may have arrived after an application made that morning. The first version
-- is valid from the beginning: registration attributes hold even when the customer's record
-- lands after their application. Only generalised or non-identifying attributes are here.
select
    customer_key,
    age_band,
    region,
    education,
    marital_status,
    dependents,
    registered_at,
    landed_on,
    case
        when row_number() over versions = 1 then '-infinity'::timestamp
        else cast(landed_on + 1 as timestamp)
    end as valid_from,
    coalesce(lead(cast(landed_on + 1 as timestamp)) over versions, 'infinity'::timestamp)
        as valid_to
from {{ ref('stg_customers') }}
window versions as (partition by customer_key order by landed_on)
