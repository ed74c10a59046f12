-- One row per load with its row accounting: rows_read = loaded + rejected + deduplicated.
with

loads as (

    select * from {{ ref('stg_orders__load_audit') }}

),

final as (

    select
        load_id,
        source,
        started_at,
        finished_at,
        rows_read,
        rows_loaded,
        rows_rejected,
        rows_deduplicated,
        status,
        load_sequence,
        window_first_date,
        window_last_date,
        error_message,
        rows_read = rows_loaded + rows_rejected + rows_deduplicated as is_balanced
    from loads

)

select * from final
