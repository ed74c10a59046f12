-- One row per customer: the CLV summary and the models' predictions, renamed.
with

source as (

    select * from {{ source('clv', 'customer_predictions') }}

),

final as (

    select
        customer_id,
        cast(frequency as integer) as repeat_purchases,
        recency,
        age as customer_age,
        monetary_value as mean_repeat_spend,
        p_alive,
        expected_purchases,
        expected_spend,
        predicted_ltv,
        predicted_ltv_if_alive,
        model,
        time_unit,
        horizon_months,
        calibration_end
    from source

)

select * from final
