-- Newest version of each order wins: latest updated_at, ties broken by the latest load.
-- Incremental (macros/incremental.sql): a night re-ranks only the orders its loads touched.
{{ incremental_config('orders', records='loads') }}
{% set scope = incremental_scope() %}

with

source as (

    select * from {{ source('raw', 'orders') }}
    {%- if scope is not none %}
    where {{ rebuilt_rows('orders', scope) }}
    {%- endif %}

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
        -- Money in the reporting currency: the source amounts × the FX rate of the order
        -- date, which the extraction looked up (1 for the reporting currency; rows landed
        -- before rates existed are all in the reporting currency).
        cast(amount * coalesce(fx_rate, 1) as decimal(18, 4)) as gross_amount,
        cast(
            coalesce(refunded_amount, 0) * coalesce(fx_rate, 1) as decimal(18, 4)
        ) as refunded_amount,
        currency,
        coalesce(fx_rate, 1) as fx_rate,
        cast(amount as decimal(18, 4)) as original_gross_amount,
        cast(coalesce(refunded_amount, 0) as decimal(18, 4)) as original_refunded_amount,
        {{ mapped_status('status') }} as order_status,
        lower(trim(status)) as source_status,
        channel,
        customer_email_hash,
        line_count,
        coalesce(refund_rows, 0) as refund_rows,
        load_id,
        source,
        source_row
    from ranked
    where version_rank = 1

)

select * from final
