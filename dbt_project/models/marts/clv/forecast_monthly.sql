-- One row per month of the next twelve: active customers, orders and revenue, existing and
-- new customers apart, with the backtest error of the same month ahead beside it.
with

forecast_monthly as (

    select * from {{ ref('stg_clv__forecast_monthly') }}

),

final as (

    select * from forecast_monthly

)

select * from final
