-- On the as-of date the window base of customer_base_daily is the set of customers that
-- dim_customers flags active: two independent computations of the same number.
with

daily as (

    select * from {{ ref('customer_base_daily') }}

),

last_day as (

    select daily.active_end
    from daily
    where daily.activity_date = (select max(all_days.activity_date) from daily as all_days)

),

active_customers as (

    select count(*) as active_customers
    from {{ ref('dim_customers') }}
    where is_active

)

select
    last_day.active_end,
    active_customers.active_customers
from last_day
cross join active_customers
where last_day.active_end != active_customers.active_customers
