-- One row per readable marketing spend row, renamed and cast; channels trimmed and
-- lower-cased so that they match the channels of the orders.
with

source as (

    select * from {{ source('marketing', 'marketing_spend') }}

),

final as (

    select
        spend_date,
        lower(trim(channel)) as channel,
        cast(spend as decimal(18, 4)) as spend,
        load_id,
        source_row
    from source

)

select * from final
