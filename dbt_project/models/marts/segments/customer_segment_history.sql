-- One row per customer and month, from the customer's first month to the as-of month: RFM,
-- named segment, tier and lifecycle state at the month's end (or at the as-of date).
-- Incremental (macros/incremental.sql): a night rebuilds the months from the first one a
-- change can reach; earlier months fold into that month's running totals, and the month
-- before it, kept in this table, gives its previous_* columns.
{{ incremental_config('months') }}
{% set scope = incremental_scope() %}
{% if scope is not none %}
    {% set first_rebuilt_month = first_rebuilt_month(scope) %}
    {% set month_before = period_start('month', add_days(first_rebuilt_month, -1)) %}
{% endif %}
{% set window_days = var('active_window_days') %}
{% set at_risk_days = var('at_risk_days') or (window_days // 2) %}

with

orders as (

    select * from {{ ref('fct_orders') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

calendar as (

    select * from {{ ref('int_calendar__periods') }}
    {%- if scope is not none %}
    where period_start >= {{ first_rebuilt_month }}
    {%- endif %}

),

order_days as (

    select
        customer_id,
        order_date,
        count(*) as valid_orders,
        sum(net_amount) as net_revenue
    from orders
    group by customer_id, order_date

),

-- A gap longer than the window means the customer had churned before this order.
order_day_gaps as (

    select
        customer_id,
        order_date,
        {{ dbt.datediff(
            'lag(order_date) over (partition by customer_id order by order_date)',
            'order_date',
            'day'
        ) }} as days_since_previous_order
    from order_days

),

{% set order_month = period_start('month', 'order_date') %}
{% if scope is not none %}
    {% set order_month = 'greatest(' ~ order_month ~ ', ' ~ first_rebuilt_month ~ ')' %}
{% endif %}
customer_months as (

    select
        customer_id,
        {{ order_month }} as snapshot_month,
        sum(valid_orders) as valid_orders,
        sum(net_revenue) as net_revenue,
        max(order_date) as last_order_date
    from order_days
    group by customer_id, {{ order_month }}

),

snapshots as (

    select
        customers.customer_id,
        calendar.period_start as snapshot_month,
        calendar.effective_end as snapshot_date,
        calendar.is_complete
    from customers
    inner join calendar
        on
            calendar.grain = 'month'
            and customers.cohort_month <= calendar.period_start

),

running as (

    select
        snapshots.customer_id,
        snapshots.snapshot_month,
        snapshots.snapshot_date,
        snapshots.is_complete,
        cast(sum(coalesce(customer_months.valid_orders, 0)) over (
            partition by snapshots.customer_id
            order by snapshots.snapshot_month
            rows unbounded preceding
        ) as bigint) as valid_orders,
        sum(coalesce(customer_months.net_revenue, 0)) over (
            partition by snapshots.customer_id
            order by snapshots.snapshot_month
            rows unbounded preceding
        ) as net_revenue,
        max(customer_months.last_order_date) over (
            partition by snapshots.customer_id
            order by snapshots.snapshot_month
            rows unbounded preceding
        ) as last_order_date
    from snapshots
    left join customer_months
        on
            snapshots.customer_id = customer_months.customer_id
            and snapshots.snapshot_month = customer_months.snapshot_month

),

measured as (

    select
        running.*,
        {{ dbt.datediff('running.last_order_date', 'running.snapshot_date', 'day') }}
            as days_since_last_order,
        order_day_gaps.days_since_previous_order
    from running
    inner join order_day_gaps
        on
            running.customer_id = order_day_gaps.customer_id
            and running.last_order_date = order_day_gaps.order_date

),

-- Ties share a rank, and so a score: the lowest of the quintiles the tied values span.
ranked as (

    select
        measured.*,
        rank() over (
            partition by snapshot_month order by days_since_last_order desc
        ) as recency_rank,
        rank() over (partition by snapshot_month order by valid_orders) as frequency_rank,
        rank() over (partition by snapshot_month order by net_revenue) as monetary_rank,
        row_number() over (
            partition by snapshot_month order by net_revenue desc, customer_id asc
        ) as revenue_position,
        count(*) over (partition by snapshot_month) as month_customers
    from measured

),

scored as (

    select
        ranked.*,
        {% for measure in ['recency', 'frequency', 'monetary'] %}
        cast(floor(
            {{ to_double('5 * (' ~ measure ~ '_rank - 1)') }} / month_customers
        ) as integer) + 1 as {{ measure }}_score,
        {% endfor %}
        case
            when days_since_last_order >= {{ window_days }} then 'churned'
            when days_since_last_order >= {{ at_risk_days }} then 'at_risk'
            when days_since_previous_order is null then 'new'
            when days_since_previous_order > {{ window_days }} then 'reactivated'
            else 'returning'
        end as lifecycle_state,
        case
            when revenue_position <= floor(month_customers * {{ var('vip_share') }} + 0.5)
                then 'vip'
            when
                revenue_position <= floor(
                    month_customers * ({{ var('vip_share') }} + {{ var('pre_vip_share') }}) + 0.5
                )
                then 'pre_vip'
            else 'standard'
        end as tier
    from ranked

),

final as (

    select
        snapshot_month,
        snapshot_date,
        customer_id,
        days_since_last_order,
        valid_orders,
        net_revenue,
        recency_score,
        frequency_score,
        monetary_score,
        case
            when recency_score = 5 and frequency_score >= 4 then 'champions'
            when recency_score >= 3 and frequency_score >= 4 then 'loyal'
            when recency_score >= 4 and frequency_score >= 2 then 'potential_loyalists'
            when recency_score = 5 then 'new'
            when recency_score = 4 then 'promising'
            when recency_score = 3 and frequency_score = 3 then 'need_attention'
            when recency_score = 3 then 'about_to_sleep'
            when frequency_score = 5 then 'cant_lose'
            when frequency_score >= 3 then 'at_risk'
            else 'hibernating'
        end as rfm_segment,
        tier,
        lifecycle_state,
        case
            when lifecycle_state = 'churned' and valid_orders <= {{ var('quick_churn_max_orders') }}
                then 'quick'
            when lifecycle_state = 'churned' then 'late'
        end as churn_type,
        is_complete
    from scored

),

-- The month before the first rebuilt one, kept in this table (none in a whole build).
kept_month_before as (

    select
        customer_id,
        rfm_segment,
        tier,
        lifecycle_state
    {%- if scope is not none %}
    from {{ this }}
    where snapshot_month = {{ month_before }}
    {%- else %}
    from final
    where false
    {%- endif %}

),

-- A customer's first computed row has no lag: its previous month is the kept one, if any.
with_previous as (

    select
        final.*,
        coalesce(
            lag(final.rfm_segment) over (
                partition by final.customer_id order by final.snapshot_month
            ),
            kept_month_before.rfm_segment
        ) as previous_rfm_segment,
        coalesce(
            lag(final.tier) over (
                partition by final.customer_id order by final.snapshot_month
            ),
            kept_month_before.tier
        ) as previous_tier,
        coalesce(
            lag(final.lifecycle_state) over (
                partition by final.customer_id order by final.snapshot_month
            ),
            kept_month_before.lifecycle_state
        ) as previous_lifecycle_state
    from final
    left join kept_month_before
        on final.customer_id = kept_month_before.customer_id

)

select * from with_previous
