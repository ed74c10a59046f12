-- One row per customer: historical LTV beside the models' P(alive), expected purchases and
-- discounted predicted LTV over the horizon (null when no model could be fitted yet).
with

customers as (

    select * from {{ ref('dim_customers') }}

),

predictions as (

    select * from {{ ref('stg_clv__customer_predictions') }}

),

final as (

    select
        customers.customer_id,
        customers.historical_ltv,
        predictions.p_alive,
        predictions.expected_purchases,
        predictions.predicted_ltv,
        predictions.horizon_months,
        predictions.predicted_ltv_if_alive,
        predictions.expected_spend,
        predictions.repeat_purchases,
        predictions.recency,
        predictions.customer_age,
        predictions.mean_repeat_spend,
        predictions.model,
        predictions.time_unit,
        predictions.calibration_end
    from customers
    left join predictions
        on customers.customer_id = predictions.customer_id

)

select * from final
