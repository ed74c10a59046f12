-- One row per day from the first valid order to the as-of date: the window-based customer
-- base and its moves. active_end = active_start + new + reactivated - churned.
with

spells as (

    select * from {{ ref('int_customers__active_spells') }}

),

calendar as (

    select * from {{ ref('int_calendar__periods') }}
    where grain = 'day'

),

events as (

    select
        spells.spell_start_date as activity_date,
        case when spells.spell_number = 1 then 1 else 0 end as new_customers,
        case when spells.spell_number > 1 then 1 else 0 end as reactivated_customers,
        0 as churned_customers
    from spells
    union all
    select
        churn_date as activity_date,
        0 as new_customers,
        0 as reactivated_customers,
        1 as churned_customers
    from spells

),

daily_events as (

    select
        activity_date,
        cast(sum(new_customers) as bigint) as new_customers,
        cast(sum(reactivated_customers) as bigint) as reactivated_customers,
        cast(sum(churned_customers) as bigint) as churned_customers
    from events
    group by activity_date

),

moves as (

    select
        calendar.period_start as activity_date,
        coalesce(daily_events.new_customers, 0) as new_customers,
        coalesce(daily_events.reactivated_customers, 0) as reactivated_customers,
        coalesce(daily_events.churned_customers, 0) as churned_customers
    from calendar
    left join daily_events
        on calendar.period_start = daily_events.activity_date

),

final as (

    select
        activity_date,
        cast(sum(new_customers + reactivated_customers - churned_customers) over (
            order by activity_date rows unbounded preceding
        ) as bigint) as active_end,
        new_customers,
        reactivated_customers,
        churned_customers
    from moves

)

select
    activity_date,
    active_end - new_customers - reactivated_customers + churned_customers as active_start,
    new_customers,
    reactivated_customers,
    churned_customers,
    active_end
from final
