-- One row per grain, cohort period and period number up to the as-of date, zero-filled.
-- Incremental (macros/incremental.sql): a night rebuilds each grain's periods from the first
-- one a change can reach. The cohorts that started before it keep their size (a change to
-- a first order reaches back to its period), and their row of the period before carries
-- the running sums.
{{ incremental_config('periods') }}
{% set scope = incremental_scope() %}

with

activity as (

    select * from {{ ref('int_customers__period_activity') }}
    {%- if scope is not none %}
    where {{ in_rebuilt_periods(scope) }}
    {%- endif %}

),

calendar as (

    select * from {{ ref('int_calendar__periods') }}

),

orders as (

    select * from {{ ref('fct_orders') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

{% if scope is not none %}
-- Each earlier cohort's row of the period before the rebuilt ones, in the columns of
-- `filled`: its running sums so far start each earlier cohort's sums below.
carried as (

    select
        grain,
        cohort_start,
        period_number,
        period_start,
        cohort_customers,
        0 as active_customers,
        cumulative_net_revenue as net_revenue,
        repeat_customers as new_repeat_customers,
        is_complete,
        true as is_carried
    from {{ this }}
    where
        {{ in_rebuilt_periods(scope, look_back=true) }}
        and not {{ in_rebuilt_periods(scope) }}

),
{% endif %}

cohort_activity as (

    select
        grain,
        cohort_start,
        period_start,
        count(*) as active_customers,
        sum(net_revenue) as net_revenue
    from activity
    where grain in ('day', 'week', 'month', 'quarter')
    group by grain, cohort_start, period_start

),

-- A customer becomes a repeat buyer in the period of its second valid order.
second_orders as (

    select
        customers.first_order_date,
        orders.order_date
    from orders
    inner join customers
        on orders.customer_id = customers.customer_id
    where orders.customer_order_number = 2

),

repeat_periods as (

    {% for grain in ['day', 'week', 'month', 'quarter'] %}
    select
        '{{ grain }}' as grain,
        {{ period_start(grain, 'first_order_date') }} as cohort_start,
        {{ period_start(grain, 'order_date') }} as period_start
    from second_orders
    {{ "union all" if not loop.last }}
    {% endfor %}

),

cohort_repeaters as (

    select
        grain,
        cohort_start,
        period_start,
        count(*) as new_repeat_customers
    from repeat_periods
    {%- if scope is not none %}
    where {{ in_rebuilt_periods(scope) }}
    {%- endif %}
    group by grain, cohort_start, period_start

),

cohort_sizes as (

    select
        grain,
        cohort_start,
        active_customers as cohort_customers
    from cohort_activity
    where cohort_start = period_start
    {%- if scope is not none %}
    union all
    select
        grain,
        cohort_start,
        cohort_customers
    from carried
    {%- endif %}

),

cells as (

    select
        cohort_sizes.grain,
        cohort_sizes.cohort_start,
        cohort_sizes.cohort_customers,
        period_calendar.period_start,
        period_calendar.period_index - cohort_calendar.period_index as period_number,
        period_calendar.is_complete
    from cohort_sizes
    inner join calendar as cohort_calendar
        on
            cohort_sizes.grain = cohort_calendar.grain
            and cohort_sizes.cohort_start = cohort_calendar.period_start
    inner join calendar as period_calendar
        on
            cohort_sizes.grain = period_calendar.grain
            and cohort_sizes.cohort_start <= period_calendar.period_start
    {%- if scope is not none %}
    where {{ in_rebuilt_periods(scope, alias='period_calendar') }}
    {%- endif %}

),

filled as (

    select
        cells.grain,
        cells.cohort_start,
        cells.period_number,
        cells.period_start,
        cells.cohort_customers,
        coalesce(cohort_activity.active_customers, 0) as active_customers,
        coalesce(cohort_activity.net_revenue, 0) as net_revenue,
        coalesce(cohort_repeaters.new_repeat_customers, 0) as new_repeat_customers,
        cells.is_complete,
        false as is_carried
    from cells
    left join cohort_activity
        on
            cells.grain = cohort_activity.grain
            and cells.cohort_start = cohort_activity.cohort_start
            and cells.period_start = cohort_activity.period_start
    left join cohort_repeaters
        on
            cells.grain = cohort_repeaters.grain
            and cells.cohort_start = cohort_repeaters.cohort_start
            and cells.period_start = cohort_repeaters.period_start
    {%- if scope is not none %}
    union all
    select * from carried
    {%- endif %}

),

final as (

    select
        grain,
        cohort_start,
        period_number,
        period_start,
        cohort_customers,
        active_customers,
        {{ ratio('active_customers', 'cohort_customers') }} as retention_rate,
        net_revenue,
        sum(net_revenue) over (
            partition by grain, cohort_start
            order by period_number
            rows unbounded preceding
        ) as cumulative_net_revenue,
        cast(sum(new_repeat_customers) over (
            partition by grain, cohort_start
            order by period_number
            rows unbounded preceding
        ) as bigint) as repeat_customers,
        is_complete,
        is_carried
    from filled

)

select
    grain,
    cohort_start,
    period_number,
    period_start,
    cohort_customers,
    active_customers,
    retention_rate,
    net_revenue,
    cumulative_net_revenue,
    {{ ratio('cumulative_net_revenue', 'cohort_customers') }} as cumulative_revenue_per_customer,
    repeat_customers,
    {{ ratio('repeat_customers', 'cohort_customers') }} as repeat_purchase_rate,
    is_complete
from final
where not is_carried
