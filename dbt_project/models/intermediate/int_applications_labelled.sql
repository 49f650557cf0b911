-- Applications with their outcome when it is known (a left join: most recent have none yet).
select
    a.*,
    o.observed_at as outcome_observed_at,
    o.defaulted,
    o.loss_amount,
    o.application_id is not null as is_labelled,
    date_diff('day', cast(a.applied_at as date), o.observed_at) as label_delay_days
from {{ ref('stg_applications') }} as a
left join {{ ref('stg_outcomes') }} as o using (application_id)
