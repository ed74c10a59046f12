-- Newest version of each order wins: latest updated_at, ties broken by the latest load.
with

source as (

    select * from {{ source('raw', 'orders') }}

),

ranked as (

    select
        source.*,
        row_number() over (
            partition by order_id
            order by updated_at desc nulls last, load_sequence desc
        ) as version_rank
    from source

),

final as (

    select
        order_id,
        customer_id,
        ordered_at,
        order_date,
        updated_at,
        cast(amount as decimal(18, 4)) as gross_amount,
        cast(coalesce(refunded_amount, 0) as decimal(18, 4)) as refunded_amount,
        currency,
        lower(trim(status)) as order_status,
        channel,
        customer_email_hash,
        line_count,
        load_id,
        source,
        source_row
    from ranked
    where version_rank = 1

)

select * from final
