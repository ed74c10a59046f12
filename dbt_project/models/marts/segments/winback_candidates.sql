-- One row per win-back candidate: churned or at-risk customers, and active ones whose
-- P(alive) is below low_p_alive; ranked by the predicted value at risk of being lost,
-- (1 − P(alive)) × the predicted LTV if still alive, or the historical value while no
-- prediction exists.
with

segments as (

    select * from {{ ref('customer_segments') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

ltv as (

    select * from {{ ref('customer_ltv') }}

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
        customers.historical_ltv,
        ltv.p_alive,
        ltv.predicted_ltv,
        ltv.predicted_ltv_if_alive,
        case
            when segments.lifecycle_state in ('churned', 'at_risk') then segments.lifecycle_state
            else 'low_p_alive'
        end as winback_reason_code,
        case
            when ltv.predicted_ltv_if_alive is null then customers.historical_ltv
            else (1 - ltv.p_alive) * ltv.predicted_ltv_if_alive
        end as winback_value,
        case
            when ltv.predicted_ltv_if_alive is null then 'historical_ltv'
            else 'predicted_ltv_at_risk'
        end as winback_value_basis
    from segments
    inner join customers
        on segments.customer_id = customers.customer_id
    left join ltv
        on segments.customer_id = ltv.customer_id
    where
        segments.lifecycle_state in ('churned', 'at_risk')
        or ltv.p_alive < {{ var('low_p_alive') }}

),

-- Ranked on the sort keys alone, then joined back: sorting the candidates' whole rows made
-- the model about 30% slower at 10M orders (docs/benchmarks.md, seventh run).
ranks as (

    select
        customer_id,
        row_number() over (
            order by winback_value desc, days_since_last_order asc, customer_id asc
        ) as winback_rank
    from candidates

),

final as (

    select
        ranks.winback_rank,
        candidates.customer_id,
        candidates.winback_reason_code,
        case candidates.winback_reason_code
            when 'churned' then 'churned: no order for '
            when 'at_risk' then 'at risk: no order for '
            else 'low P(alive): no order for '
        end
        || cast(candidates.days_since_last_order as {{ dbt.type_string() }})
        || ' days (active window {{ var("active_window_days") }} days); valid orders: '
        || cast(candidates.valid_orders as {{ dbt.type_string() }})
        || ', historical value: '
        || cast(round(candidates.historical_ltv, 2) as {{ dbt.type_string() }})
        || coalesce(
            ', P(alive) '
            || cast(
                round(cast(candidates.p_alive as decimal(18, 4)), 2)
                as {{ dbt.type_string() }}
            )
            || ', predicted value if alive: '
            || cast(
                round(cast(candidates.predicted_ltv_if_alive as decimal(18, 4)), 2)
                as {{ dbt.type_string() }}
            ),
            ''
        )
        || '; tier '
        || candidates.tier
        || ', segment '
        || candidates.rfm_segment as winback_reason,
        candidates.winback_value,
        candidates.winback_value_basis,
        candidates.p_alive,
        candidates.predicted_ltv,
        candidates.predicted_ltv_if_alive,
        candidates.historical_ltv,
        candidates.lifecycle_state,
        candidates.churn_type,
        candidates.rfm_segment,
        candidates.tier,
        candidates.last_order_date,
        candidates.days_since_last_order,
        candidates.valid_orders,
        candidates.net_revenue
    from candidates
    inner join ranks
        on candidates.customer_id = ranks.customer_id

)

select * from final
