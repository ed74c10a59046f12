-- One row: the as-of date of this build (the `as_of` var, else the newest valid order's date).
with

orders as (

    select * from {{ ref('int_orders__classified') }}

),

final as (

    select coalesce({{ as_of_date_literal() }}, max(order_date)) as as_of_date
    from orders
    where is_valid

)

select * from final
