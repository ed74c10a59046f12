-- One row per grain, period and customer-base definition (activity or window).
-- Activity base: S = buyers of the previous period, E = buyers of this one.
-- Window base: S = active (ordered within the window) at the end of the day before the
-- period, E = active at its end (or at the as-of date while it is open).
-- Incremental (macros/incremental.sql): a night rebuilds each grain's periods from the first
-- one a change can reach, from the activity and spells of the period before it on.
{{ incremental_config('periods') }}
{% set scope = incremental_scope() %}
{% set spell_grains = ['week', 'month', 'quarter', 'year'] %}

with

activity as (

    select * from {{ ref('int_customers__period_activity') }}
    {%- if scope is not none %}
    where {{ in_rebuilt_periods(scope, look_back=true) }}
    {%- endif %}

),

spells as (

    select * from {{ ref('int_customers__active_spells') }}
    {%- if scope is not none %}
    -- A spell that ended before the day before a rebuilt period neither enters it nor was
    -- active the day before it; spells do not overlap, so nor did any earlier spell. The
    -- earliest rebuilt period is the year's or the week's (which can start the year before).
    {% set earliest = 'least(' ~ first_rebuilt_period('year', scope) ~ ', '
        ~ first_rebuilt_period('week', scope) ~ ')' %}
    where active_until_date >= {{ add_days(earliest, -1) }}
    {%- endif %}

),

daily_base as (

    select * from {{ ref('customer_base_daily') }}

),

calendar as (

    select * from {{ ref('int_calendar__periods') }}
    where grain != 'day'
    {%- if scope is not none %}
        and {{ in_rebuilt_periods(scope, look_back=true) }}
    {%- endif %}

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

spells_with_previous as (

    select
        customer_id,
        spell_number,
        spell_start_date,
        active_until_date,
        lag(spell_start_date) over (
            partition by customer_id order by spell_number
        ) as previous_spell_start_date,
        lag(active_until_date) over (
            partition by customer_id order by spell_number
        ) as previous_active_until_date
    from spells

),

spell_periods as (

    {% for grain in spell_grains %}
    select
        '{{ grain }}' as grain,
        {{ period_start(grain, 'spell_start_date') }} as period_start,
        customer_id,
        spell_number,
        spell_start_date,
        active_until_date,
        previous_spell_start_date,
        previous_active_until_date
    from spells_with_previous
    {{ "union all" if not loop.last }}
    {% endfor %}

),

entrants as (

    -- Customers with a spell starting in the period. Spells do not overlap, so the one
    -- active at the period's end (if any) is the last of them, and the one active the day
    -- before the period (if any) is the spell just before the first of them.
    select
        spell_periods.grain,
        spell_periods.period_start,
        spell_periods.customer_id,
        max(spell_periods.active_until_date) as last_active_until_date,
        min(spell_periods.spell_number) = 1 as is_new,
        max(
            case
                when
                    (
                        spell_periods.previous_spell_start_date is null
                        or spell_periods.previous_spell_start_date < spell_periods.period_start
                    )
                    and spell_periods.previous_active_until_date
                    >= {{ add_days('spell_periods.period_start', -1) }}
                    then 1
                else 0
            end
        ) as was_active_before
    from spell_periods
    group by spell_periods.grain, spell_periods.period_start, spell_periods.customer_id

),

entrant_counts as (

    -- Entrants still active at the period's end; a customer active at the end through a
    -- spell that started earlier was active the day before too, so is retained.
    select
        entrants.grain,
        entrants.period_start,
        count(*) as entrants_at_end,
        sum(case when entrants.is_new then 1 else 0 end) as new_customers,
        sum(entrants.was_active_before) as returned_customers
    from entrants
    inner join calendar
        on
            entrants.grain = calendar.grain
            and entrants.period_start = calendar.period_start
    where entrants.last_active_until_date >= calendar.effective_end
    group by entrants.grain, entrants.period_start

),

window_base as (

    select
        calendar.grain,
        calendar.period_start,
        'window' as base,
        coalesce(day_before.active_end, 0) as customers_start,
        coalesce(last_day.active_end, 0) as customers_end,
        coalesce(entrant_counts.new_customers, 0) as new_customers,
        coalesce(last_day.active_end, 0)
        - coalesce(entrant_counts.entrants_at_end, 0)
        + coalesce(entrant_counts.returned_customers, 0) as retained_customers,
        calendar.is_complete
    from calendar
    left join daily_base as day_before
        on {{ add_days('calendar.period_start', -1) }} = day_before.activity_date
    left join daily_base as last_day
        on calendar.effective_end = last_day.activity_date
    left join entrant_counts
        on
            calendar.grain = entrant_counts.grain
            and calendar.period_start = entrant_counts.period_start

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
        cast(customers_start as bigint) as customers_start,
        cast(customers_end as bigint) as customers_end,
        cast(new_customers as bigint) as new_customers,
        cast(retained_customers as bigint) as retained_customers,
        cast(customers_end - new_customers - retained_customers as bigint)
            as reactivated_customers,
        cast(customers_start - retained_customers as bigint) as churned_customers,
        {{ ratio('customers_end - new_customers', 'customers_start') }} as crr,
        {{ ratio('retained_customers', 'customers_start') }} as retention_rate,
        {{ ratio('customers_start - retained_customers', 'customers_start') }} as churn_rate,
        is_complete
    from both_bases
    {%- if scope is not none %}
    where {{ in_rebuilt_periods(scope) }}
    {%- endif %}

)

select * from final
