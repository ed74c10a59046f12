-- One row per grain and period, every period from the first valid order's to the as-of date's.
{% set grains = calendar_grains() %}

with

orders as (

    select * from {{ ref('fct_orders') }}

),

as_of as (

    select * from {{ ref('int_run__as_of') }}

),

day_offsets as (

    {{ integers_below_power_of_ten(5) }}

),

bounds as (

    select
        min(orders.order_date) as first_date,
        max(as_of.as_of_date) as as_of_date
    from orders
    cross join as_of

),

days as (

    select
        {{ add_days('bounds.first_date', 'day_offsets.n') }} as calendar_date,
        bounds.as_of_date
    from bounds
    inner join day_offsets
        on day_offsets.n <= {{ dbt.datediff('bounds.first_date', 'bounds.as_of_date', 'day') }}

),

periods as (

    {% for grain in grains %}
    select distinct
        '{{ grain }}' as grain,
        {{ period_start(grain, 'calendar_date') }} as period_start,
        as_of_date
    from days
    {{ "union all" if not loop.last }}
    {% endfor %}

),

final as (

    select
        grain,
        period_start,
        case grain
            {% for grain in grains %}
            when '{{ grain }}' then {{ add_days(next_period_start(grain, 'period_start'), -1) }}
            {% endfor %}
        end as period_end,
        row_number() over (partition by grain order by period_start) - 1 as period_index,
        as_of_date
    from periods

)

select
    grain,
    period_start,
    period_end,
    period_index,
    least(period_end, as_of_date) as effective_end,
    period_end <= as_of_date as is_complete
from final
