-- The window base of retention_rates agrees with customer_base_daily: S of a period is the
-- daily active_end of the day before it (0 before the first day), E is the active_end of
-- its effective end (the period's last day, or the as-of date while it is open).
with

rates as (

    select * from {{ ref('retention_rates') }}
    where base = 'window'

),

calendar as (

    select * from {{ ref('int_calendar__periods') }}

),

daily as (

    select * from {{ ref('customer_base_daily') }}

),

compared as (

    select
        rates.grain,
        rates.period_start,
        rates.customers_start,
        rates.customers_end,
        coalesce(day_before.active_end, 0) as daily_active_before,
        last_day.active_end as daily_active_at_end
    from rates
    inner join calendar
        on
            rates.grain = calendar.grain
            and rates.period_start = calendar.period_start
    left join daily as day_before
        on day_before.activity_date = {{ add_days('rates.period_start', -1) }}
    left join daily as last_day
        on calendar.effective_end = last_day.activity_date

)

select *
from compared
where
    customers_start != daily_active_before
    or daily_active_at_end is null
    or customers_end != daily_active_at_end
