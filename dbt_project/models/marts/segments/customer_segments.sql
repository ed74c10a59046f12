-- One row per customer: its RFM scores, segment, tier and lifecycle state on the as-of date.
with

history as (

    select * from {{ ref('customer_segment_history') }}

),

as_of as (

    select * from {{ ref('int_run__as_of') }}

),

final as (

    select
        history.customer_id,
        history.snapshot_date,
        history.days_since_last_order,
        history.valid_orders,
        history.net_revenue,
        history.recency_score,
        history.frequency_score,
        history.monetary_score,
        history.rfm_segment,
        history.tier,
        history.lifecycle_state,
        history.churn_type
    from history
    inner join as_of
        on history.snapshot_date = as_of.as_of_date

)

select * from final
