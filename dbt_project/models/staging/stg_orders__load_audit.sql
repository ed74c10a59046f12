with

source as (

    select * from {{ source('raw', 'load_audit') }}

),

final as (

    select
        load_id,
        load_sequence,
        source,
        window_first as window_first_date,
        window_last as window_last_date,
        started_at,
        finished_at,
        rows_read,
        rows_loaded,
        rows_rejected,
        rows_deduplicated,
        status,
        error as error_message
    from source

)

select * from final
