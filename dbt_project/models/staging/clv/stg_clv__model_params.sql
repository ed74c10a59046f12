-- One row per published model parameter.
with

source as (

    select * from {{ source('clv', 'model_params') }}

),

final as (

    select
        model,
        parameter,
        value,
        time_unit,
        log_likelihood,
        n_customers,
        calibration_end,
        fitted_at
    from source

)

select * from final
