-- One row per customer and active spell: a run of valid orders with gaps of at most
-- active_window_days. The customer is active through the last order + window - 1 day.
-- Incremental (macros/incremental.sql): a night rebuilds the changed customers.
{{ incremental_config('customers') }}
{% set scope = incremental_scope() %}
{% set window_days = var('active_window_days') | int %}

with

orders as (

    select * from {{ ref('fct_orders') }}
    {%- if scope is not none %}
    where {{ rebuilt_rows('customers', scope) }}
    {%- endif %}

),

order_days as (

    select distinct
        customer_id,
        order_date
    from orders

),

with_gaps as (

    select
        customer_id,
        order_date,
        {{ dbt.datediff(
            'lag(order_date) over (partition by customer_id order by order_date)',
            'order_date',
            'day'
        ) }} as days_since_previous
    from order_days

),

spell_numbers as (

    select
        customer_id,
        order_date,
        sum(
            case
                when days_since_previous is null then 1
                when days_since_previous > {{ window_days }} then 1
                else 0
            end
        ) over (
            partition by customer_id order by order_date rows unbounded preceding
        ) as spell_number
    from with_gaps

),

final as (

    select
        customer_id,
        spell_number,
        min(order_date) as spell_start_date,
        max(order_date) as last_order_date,
        {{ add_days('max(order_date)', window_days - 1) }} as active_until_date,
        {{ add_days('max(order_date)', window_days) }} as churn_date
    from spell_numbers
    group by customer_id, spell_number

)

select * from final
