-- One row per churned or at-risk customer, ranked by the value a win-back would bring back:
-- its historical value until predicted LTV exists.
with

segments as (

    select * from {{ ref('customer_segments') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

candidates as (

    select
        segments.customer_id,
        segments.lifecycle_state,
        segments.churn_type,
        segments.rfm_segment,
        segments.tier,
        customers.last_order_date,
        segments.days_since_last_order,
        segments.valid_orders,
        segments.net_revenue,
        customers.historical_ltv as winback_value,
        'historical_ltv' as winback_value_basis
    from segments
    inner join customers
        on segments.customer_id = customers.customer_id
    where segments.lifecycle_state in ('churned', 'at_risk')

),

final as (

    select
        row_number() over (
            order by winback_value desc, days_since_last_order asc, customer_id asc
        ) as winback_rank,
        customer_id,
        lifecycle_state as winback_reason_code,
        case lifecycle_state
            when 'churned' then 'churned: no order for '
            else 'at risk: no order for '
        end
        || cast(days_since_last_order as {{ dbt.type_string() }})
        || ' days (active window {{ var("active_window_days") }} days); valid orders: '
        || cast(valid_orders as {{ dbt.type_string() }})
        || ', historical value: '
        || cast(round(winback_value, 2) as {{ dbt.type_string() }})
        || '; tier '
        || tier
        || ', segment '
        || rfm_segment as winback_reason,
        winback_value,
        winback_value_basis,
        lifecycle_state,
        churn_type,
        rfm_segment,
        tier,
        last_order_date,
        days_since_last_order,
        valid_orders,
        net_revenue
    from candidates

)

select * from final
