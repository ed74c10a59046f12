-- One row per calibration frequency bucket of the holdout evaluation, and the total.
with

source as (

    select * from {{ source('clv', 'holdout_eval') }}

),

final as (

    select
        frequency_bucket,
        bucket_order,
        customers,
        actual_purchases,
        predicted_purchases,
        purchases_error,
        purchases_relative_error,
        mean_actual_purchases,
        mean_predicted_purchases,
        mean_absolute_error,
        actual_spend,
        predicted_spend,
        model,
        time_unit,
        calibration_end,
        holdout_end
    from source

)

select * from final
