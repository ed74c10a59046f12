-- In its own period a cohort is fully active: active = cohort size, retention 100%.
select *
from {{ ref('cohort_retention') }}
where
    period_number = 0
    and (active_customers != cohort_customers or retention_rate != 1)
