-- Every current order version with its net amount and whether it counts as a purchase.
with

orders as (

    select * from {{ ref('stg_orders__orders') }}

),

final as (

    select
        orders.*,
        orders.gross_amount - orders.refunded_amount as net_amount,
        (
            coalesce(orders.order_status, '') not in (
                {%- for status in var('excluded_statuses') %}
                '{{ status | lower }}'{{ "," if not loop.last }}
                {%- endfor %}
            )
            and (
                orders.gross_amount - orders.refunded_amount > 0
                {%- if var('free_orders_are_purchases') %}
                or orders.gross_amount = 0
                {%- endif %}
            )
        ) as is_valid
    from orders

)

select * from final
