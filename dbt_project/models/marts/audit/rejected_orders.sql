-- One row per quarantined source row.
with

rejected as (

    select * from {{ ref('stg_orders__rejected_orders') }}

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
    from rejected

)

select * from final
