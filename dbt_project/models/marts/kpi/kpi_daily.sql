-- One row per day from the first valid order to the as-of date.
with

kpis as (

    select * from {{ ref('int_kpis__periods') }}

),

final as (

    select
        period_start as activity_date,
        orders,
        net_revenue,
        buying_customers,
        new_customers,
        returning_customers,
        new_orders,
        returning_orders,
        new_revenue,
        returning_revenue,
        returning_revenue_share,
        aov,
        purchase_frequency,
        active_customers,
        arpu,
        arppu,
        repeat_purchase_rate,
        simple_ltv,
        is_complete
    from kpis
    where grain = 'day'

)

select * from final
