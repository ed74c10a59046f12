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

by_grain as (

    {% for grain in grains %}
    select
        '{{ grain }}' as grain,
        customer_id,
        {{ period_start(grain, 'first_order_date') }} as cohort_start,
        {{ period_start(grain, 'order_date') }} as period_start,
        valid_orders,
        net_revenue
    from customer_days
    {{ "union all" if not loop.last }}
    {% endfor %}

),

final as (

    select
        grain,
        customer_id,
        cohort_start,
        period_start,
        cohort_start = period_start as is_first_period,
        cast(sum(valid_orders) as bigint) as valid_orders,
        sum(net_revenue) as net_revenue
    from by_grain
    group by grain, customer_id, cohort_start, period_start

)

select * from final
