-- One row per currency and date: the FX rates the last load used, for BI to audit
-- conversions (rate = units of the reporting currency per unit of the currency).
with

source as (

    select * from {{ source('raw', 'fx_rates') }}

),

final as (

    select
        currency,
        rate_date,
        rate as fx_rate,
        source_row,
        load_id,
        loaded_at
    from source

)

select * from final
