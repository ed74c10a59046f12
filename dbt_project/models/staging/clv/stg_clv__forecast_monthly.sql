-- One row per forecast month, with the backtest of the same month ahead.
with

source as (

    select * from {{ source('clv', 'forecast_monthly') }}

),

final as (

    select
        forecast_month,
        months_ahead,
        forecast_from,
        forecast_to,
        is_partial_month,
        active_customers,
        existing_active_customers,
        new_active_customers,
        new_customers,
        orders,
        existing_orders,
        new_customer_orders,
        revenue,
        existing_revenue,
        new_customer_revenue,
        backtest_month,
        backtest_actual_orders,
        backtest_forecast_orders,
        backtest_orders_error,
        backtest_actual_revenue,
        backtest_forecast_revenue,
        backtest_revenue_error,
        model,
        time_unit,
        forecast_origin,
        backtest_origin
    from source

)

select * from final
