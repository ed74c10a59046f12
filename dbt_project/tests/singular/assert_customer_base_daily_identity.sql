-- active_end = active_start + new + reactivated - churned, and each day starts where the
-- previous one ended.
with

days as (

    select
        *,
        lag(active_end) over (order by activity_date) as previous_active_end
    from {{ ref('customer_base_daily') }}

)

select *
from days
where
    active_end
    != active_start + new_customers + reactivated_customers - churned_customers
    or active_start != coalesce(previous_active_end, 0)
