-- One row per customer and month with valid orders: the customer's totals at the month's
-- end, which hold until the next month with orders (a span), and those of the span before.
-- customer_segment_history spreads them over the calendar's months; they depend on the
-- customer's orders only, so a night reads them instead of every order.
-- Incremental (macros/incremental.sql): a night rebuilds the changed customers.
{{ incremental_config('customers') }}
{% set scope = incremental_scope() %}

with

orders as (

    select * from {{ ref('fct_orders') }}
    {%- if scope is not none %}
    where {{ rebuilt_rows('customers', scope) }}
    {%- endif %}

),

order_days as (

    select
        customer_id,
        order_date,
        count(*) as valid_orders,
        sum(net_amount) as net_revenue
    from orders
    group by customer_id, order_date

),

order_day_gaps as (

    select
        customer_id,
        order_date,
        valid_orders,
        net_revenue,
        {{ dbt.datediff(
            'lag(order_date) over (partition by customer_id order by order_date)',
            'order_date',
            'day'
        ) }} as days_since_previous_order,
        {% set next_order_date =
            'lead(order_date) over (partition by customer_id order by order_date)' %}
        coalesce(
            {{ period_start('month', next_order_date) }}
            > {{ period_start('month', 'order_date') }},
            true
        ) as is_last_in_month
    from order_days

),

customer_months as (

    select
        customer_id,
        {{ period_start('month', 'order_date') }} as order_month,
        sum(valid_orders) as valid_orders,
        sum(net_revenue) as net_revenue,
        max(order_date) as last_order_date,
        max(case when is_last_in_month then days_since_previous_order end)
            as last_order_gap
    from order_day_gaps
    group by customer_id, {{ period_start('month', 'order_date') }}

),

final as (

    select
        customer_id,
        order_month,
        lead(order_month) over customer_months_in_order as next_order_month,
        cast(sum(valid_orders) over running_totals as bigint) as valid_orders,
        sum(net_revenue) over running_totals as net_revenue,
        last_order_date,
        last_order_gap,
        cast(sum(valid_orders) over totals_before as bigint) as previous_valid_orders,
        sum(net_revenue) over totals_before as previous_net_revenue,
        lag(last_order_date) over customer_months_in_order as previous_last_order_date,
        lag(last_order_gap) over customer_months_in_order as previous_last_order_gap
    from customer_months
    window
        customer_months_in_order as (partition by customer_id order by order_month),
        running_totals as (
            partition by customer_id order by order_month rows unbounded preceding
        ),
        totals_before as (
            partition by customer_id order by order_month
            rows between unbounded preceding and 1 preceding
        )

)

select * from final
