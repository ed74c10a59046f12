-- One row per grain (week, month, quarter, year) and period up to the as-of date.
with

kpis as (

    select * from {{ ref('int_kpis__periods') }}

),

final as (

    select * from kpis
    where grain != 'day'

)

select * from final
