-- One row per customer, grain and period in which the customer made a valid order.
-- Incremental (macros/incremental.sql): a night rebuilds the changed customers.
{{ incremental_config('customers') }}
{% set scope = incremental_scope() %}
{% set grains = calendar_grains() %}

with

orders as (

    select * from {{ ref('fct_orders') }}
    {%- if scope is not none %}
    where {{ rebuilt_rows('customers', scope) }}
    {%- endif %}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

customer_days as (

    -- Rolled up to days once, so each grain below groups days rather than orders.
    select
        orders.customer_id,
        customers.first_order_date,
        orders.order_date,
        count(*) as valid_orders,
        sum(orders.net_amount) as net_revenue
    from orders
    inner join customers
        on orders.customer_id = customers.customer_id
    group by orders.customer_id, customers.first_order_date, orders.order_date

),

days as (

    -- customer_days is one row per customer and day already.
    select
        'day' as grain,
        customer_id,
        first_order_date as cohort_start,
        order_date as period_start,
        first_order_date = order_date as is_first_period,
        valid_orders,
        net_revenue
    from customer_days

),

longer_periods as (

    -- Each grain grouped on its own: one aggregation over every grain's rows ran out of
    -- memory at 100M orders (docs/DECISIONS.md, "Models under the memory bound").
    {% for grain in grains if grain != 'day' %}
    select
        '{{ grain }}' as grain,
        customer_id,
        {{ period_start(grain, 'first_order_date') }} as cohort_start,
        {{ period_start(grain, 'order_date') }} as period_start,
        {{ period_start(grain, 'first_order_date') }}
        = {{ period_start(grain, 'order_date') }} as is_first_period,
        cast(sum(valid_orders) as bigint) as valid_orders,
        sum(net_revenue) as net_revenue
    from customer_days
    group by
        customer_id,
        {{ period_start(grain, 'first_order_date') }},
        {{ period_start(grain, 'order_date') }}
    {{ "union all" if not loop.last }}
    {% endfor %}

),

final as (

    select * from days
    union all
    select * from longer_periods

)

select * from final
