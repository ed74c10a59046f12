with

source as (

    select * from {{ source('raw', 'rejected_orders') }}

),

final as (

    select
        load_id,
        source,
        source_row,
        raw_record,
        reason_code,
        reason,
        order_id,
        order_date,
        rejected_at
    from source

)

select * from final
