-- One row per month, dimension and movement (from last month's state to this month's):
-- how many customers moved, e.g. pre-VIP to VIP, or VIP to churned.
-- Incremental (macros/incremental.sql): a night recounts the months the segment history
-- rebuilt.
{{ incremental_config('months') }}
{% set scope = incremental_scope() %}

with

history as (

    select * from {{ ref('customer_segment_history') }}
    {%- if scope is not none %}
    where {{ rebuilt_rows('months', scope) }}
    {%- endif %}

),

-- A churned customer keeps its revenue tier; here it counts as churned, so that
-- "VIP -> churned" is a tier movement.
states as (

    select
        snapshot_month,
        is_complete,
        'tier' as dimension,
        case when previous_lifecycle_state = 'churned' then 'churned' else previous_tier end
            as from_state,
        case when lifecycle_state = 'churned' then 'churned' else tier end as to_state
    from history

    union all

    select
        snapshot_month,
        is_complete,
        'rfm_segment' as dimension,
        previous_rfm_segment as from_state,
        rfm_segment as to_state
    from history

    union all

    select
        snapshot_month,
        is_complete,
        'lifecycle_state' as dimension,
        previous_lifecycle_state as from_state,
        lifecycle_state as to_state
    from history

),

final as (

    select
        snapshot_month,
        dimension,
        coalesce(from_state, 'none') as from_state,
        to_state,
        count(*) as customers,
        is_complete
    from states
    group by snapshot_month, dimension, coalesce(from_state, 'none'), to_state, is_complete

)

select * from final
