-- One row per grain, period and customer-base definition (activity or window).
-- Activity base: S = buyers of the previous period, E = buyers of this one.
-- Window base: S = active (ordered within the window) at the end of the day before the
-- period, E = active at its end (or at the as-of date while it is open).

with

activity as (

    select * from {{ ref('int_customers__period_activity') }}

),

spells as (

    select * from {{ ref('int_customers__active_spells') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

calendar as (

    select * from {{ ref('int_calendar__periods') }}
    where grain in ('week', 'month', 'quarter', 'year')

),

buyer_periods as (

    select
        activity.grain,
        activity.customer_id,
        activity.is_first_period,
        calendar.period_index,
        lag(calendar.period_index) over (
            partition by activity.grain, activity.customer_id
            order by calendar.period_index
        ) as previous_buying_index
    from activity
    inner join calendar
        on
            activity.grain = calendar.grain
            and activity.period_start = calendar.period_start

),

activity_counts as (

    select
        grain,
        period_index,
        count(*) as customers_end,
        sum(case when is_first_period then 1 else 0 end) as new_customers,
        sum(case when previous_buying_index = period_index - 1 then 1 else 0 end)
            as retained_customers
    from buyer_periods
    group by grain, period_index

),

activity_base as (

    select
        calendar.grain,
        calendar.period_start,
        'activity' as base,
        coalesce(previous_counts.customers_end, 0) as customers_start,
        coalesce(current_counts.customers_end, 0) as customers_end,
        coalesce(current_counts.new_customers, 0) as new_customers,
        coalesce(current_counts.retained_customers, 0) as retained_customers,
        calendar.is_complete
    from calendar
    left join activity_counts as current_counts
        on
            calendar.grain = current_counts.grain
            and calendar.period_index = current_counts.period_index
    left join activity_counts as previous_counts
        on
            calendar.grain = previous_counts.grain
            and calendar.period_index - 1 = previous_counts.period_index

),

spell_periods as (

    -- A customer is in S when a spell covers the day before the period starts, and in E
    -- when a spell covers the period's effective end.
    select
        calendar.grain,
        calendar.period_index,
        spells.customer_id,
        max(
            case
                when
                    spells.spell_start_date < calendar.period_start
                    and spells.active_until_date >= {{ add_days('calendar.period_start', -1) }}
                    then 1
                else 0
            end
        ) as in_start,
        max(
            case
                when
                    spells.spell_start_date <= calendar.effective_end
                    and spells.active_until_date >= calendar.effective_end
                    then 1
                else 0
            end
        ) as in_end
    from calendar
    inner join spells
        on
            calendar.effective_end >= spells.spell_start_date
            and {{ add_days('calendar.period_start', -1) }} <= spells.active_until_date
    group by calendar.grain, calendar.period_index, spells.customer_id

),

window_counts as (

    select
        spell_periods.grain,
        spell_periods.period_index,
        sum(spell_periods.in_start) as customers_start,
        sum(spell_periods.in_end) as customers_end,
        sum(
            case
                when
                    spell_periods.in_end = 1
                    and customers.first_order_date >= calendar.period_start
                    then 1
                else 0
            end
        ) as new_customers,
        sum(spell_periods.in_start * spell_periods.in_end) as retained_customers
    from spell_periods
    inner join calendar
        on
            spell_periods.grain = calendar.grain
            and spell_periods.period_index = calendar.period_index
    inner join customers
        on spell_periods.customer_id = customers.customer_id
    group by spell_periods.grain, spell_periods.period_index

),

window_base as (

    select
        calendar.grain,
        calendar.period_start,
        'window' as base,
        coalesce(window_counts.customers_start, 0) as customers_start,
        coalesce(window_counts.customers_end, 0) as customers_end,
        coalesce(window_counts.new_customers, 0) as new_customers,
        coalesce(window_counts.retained_customers, 0) as retained_customers,
        calendar.is_complete
    from calendar
    left join window_counts
        on
            calendar.grain = window_counts.grain
            and calendar.period_index = window_counts.period_index

),

both_bases as (

    select * from activity_base
    union all
    select * from window_base

),

final as (

    select
        grain,
        period_start,
        base,
        customers_start,
        customers_end,
        new_customers,
        retained_customers,
        customers_end - new_customers - retained_customers as reactivated_customers,
        customers_start - retained_customers as churned_customers,
        {{ ratio('customers_end - new_customers', 'customers_start') }} as crr,
        {{ ratio('retained_customers', 'customers_start') }} as retention_rate,
        {{ ratio('customers_start - retained_customers', 'customers_start') }} as churn_rate,
        is_complete
    from both_bases

)

select * from final
