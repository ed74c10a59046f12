-- One row: the as-of date of this build (the `as_of` var, else RETENTION_AS_OF, which the
-- pipeline sets, else the newest valid order's date).
-- A given date reads no order, but the dependency stays: Dagster's asset graph has it
-- either way.
-- depends_on: {{ ref('int_orders__classified') }}
{% set as_of = var('as_of') or env_var('RETENTION_AS_OF', '') %}
{% if as_of %}

select {{ date_literal(as_of) }} as as_of_date

{% else %}

with

orders as (

    select * from {{ ref('int_orders__classified') }}

),

final as (

    select max(order_date) as as_of_date
    from orders
    where is_valid

)

select * from final

{% endif %}
