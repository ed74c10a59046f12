-- active_end = active_start + new + reactivated - churned on every day, each day starts
-- where the previous calendar day ended, and the first day starts from nobody.
with

days as (

    select * from {{ ref('customer_base_daily') }}

),

first_day as (

    select min(activity_date) as activity_date from days

),

checked as (

    select
        days.*,
        previous_days.active_end as previous_active_end,
        days.activity_date = first_day.activity_date as is_first_day
    from days
    cross join first_day
    left join days as previous_days
        on previous_days.activity_date = {{ add_days('days.activity_date', -1) }}

)

select *
from checked
where
    active_end
    != active_start + new_customers + reactivated_customers - churned_customers
    or (is_first_day and active_start != 0)
    or (not is_first_day and previous_active_end is null)
    or (not is_first_day and active_start != previous_active_end)
