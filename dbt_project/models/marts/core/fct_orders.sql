-- One row per valid order (a purchase) on or before the as-of date.
-- Incremental (macros/incremental.sql): a night rebuilds the changed customers' orders.
{{ incremental_config('customers', records='as_of', lineage=true) }}
{% set scope = incremental_scope() %}

with

orders as {{ materialized_rebuilt_rows(scope) }} (

    select * from {{ ref('int_orders__classified') }}
    {%- if scope is not none %}
    where {{ rebuilt_rows('customers', scope) }}
    {%- endif %}

),

as_of as (

    select * from {{ ref('int_run__as_of') }}

),

purchases as (

    select orders.*
    from orders
    cross join as_of
    where orders.is_valid and orders.order_date <= as_of.as_of_date

),

final as (

    select
        order_id,
        customer_id,
        ordered_at,
        order_date,
        order_status,
        source_status,
        currency,
        gross_amount,
        refunded_amount,
        net_amount,
        fx_rate,
        original_gross_amount,
        original_refunded_amount,
        original_gross_amount - original_refunded_amount as original_net_amount,
        channel,
        line_count,
        refund_rows,
        row_number() over (
            partition by customer_id order by ordered_at, order_id
        ) as customer_order_number,
        load_id,
        source,
        source_row
    from purchases

)

select
    final.*,
    customer_order_number = 1 as is_first_order
from final
