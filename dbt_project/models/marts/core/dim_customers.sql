-- One row per customer: a customer_id with at least one valid order.
with

orders as (

    select * from {{ ref('fct_orders') }}

),

as_of as (

    select * from {{ ref('int_run__as_of') }}

),

customer_orders as (

    select
        customer_id,
        min(ordered_at) as first_ordered_at,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date,
        count(*) as valid_orders,
        sum(net_amount) as net_revenue
    from orders
    group by customer_id

),

first_orders as (

    select
        customer_id,
        channel as acquisition_channel
    from orders
    where is_first_order

),

final as (

    select
        customer_orders.customer_id,
        customer_orders.first_ordered_at,
        customer_orders.first_order_date,
        customer_orders.last_order_date,
        {{ period_start('week', 'customer_orders.first_order_date') }} as cohort_week,
        {{ period_start('month', 'customer_orders.first_order_date') }} as cohort_month,
        {{ period_start('quarter', 'customer_orders.first_order_date') }} as cohort_quarter,
        first_orders.acquisition_channel,
        customer_orders.valid_orders,
        customer_orders.net_revenue,
        customer_orders.net_revenue * {{ var('gross_margin') }} as historical_ltv,
        {{ dbt.datediff('customer_orders.last_order_date', 'as_of.as_of_date', 'day') }}
            as days_since_last_order
    from customer_orders
    inner join first_orders
        on customer_orders.customer_id = first_orders.customer_id
    cross join as_of

)

select
    final.*,
    days_since_last_order < {{ var('active_window_days') }} as is_active
from final
