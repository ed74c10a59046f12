-- One row per day from the first valid order to the as-of date: the window-based customer
-- base and its moves. active_end = active_start + new + reactivated - churned.
with

spells as (

    select * from {{ ref('int_customers__active_spells') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

calendar as (

    select * from {{ ref('int_calendar__periods') }}
    where grain = 'day'

),

events as (

    select
        spells.spell_start_date as activity_date,
        case when spells.spell_start_date = customers.first_order_date then 1 else 0 end
            as new_customers,
        case when spells.spell_start_date > customers.first_order_date then 1 else 0 end
            as reactivated_customers,
        0 as churned_customers
    from spells
    inner join customers
        on spells.customer_id = customers.customer_id
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
        sum(new_customers) as new_customers,
        sum(reactivated_customers) as reactivated_customers,
        sum(churned_customers) as churned_customers
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
        sum(new_customers + reactivated_customers - churned_customers) over (
            order by activity_date rows unbounded preceding
        ) as active_end,
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
