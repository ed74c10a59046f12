-- One row per customer, grain and period in which the customer made a valid order.
{% set grains = ['day', 'week', 'month', 'quarter', 'year'] %}

with

orders as (

    select * from {{ ref('fct_orders') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

by_grain as (

    {% for grain in grains %}
    select
        '{{ grain }}' as grain,
        orders.customer_id,
        {{ period_start(grain, 'customers.first_order_date') }} as cohort_start,
        {{ period_start(grain, 'orders.order_date') }} as period_start,
        orders.net_amount
    from orders
    inner join customers
        on orders.customer_id = customers.customer_id
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
        count(*) as valid_orders,
        sum(net_amount) as net_revenue
    from by_grain
    group by grain, customer_id, cohort_start, period_start

)

select * from final
