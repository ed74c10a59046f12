-- One row per grain and period (day to year): the KPI measures of kpi_daily and
-- kpi_periodic, which only split this by grain.
{% set grains = calendar_grains() %}

with

activity as (

    select * from {{ ref('int_customers__period_activity') }}

),

orders as (

    select * from {{ ref('fct_orders') }}

),

calendar as (

    select * from {{ ref('int_calendar__periods') }}

),

daily_base as (

    select * from {{ ref('customer_base_daily') }}

),

window_rates as (

    select * from {{ ref('retention_rates') }}
    where base = 'window'

),

buyers as (

    select
        grain,
        period_start,
        count(*) as buying_customers,
        sum(case when is_first_period then 1 else 0 end) as new_customers,
        sum(valid_orders) as orders,
        sum(net_revenue) as net_revenue
    from activity
    group by grain, period_start

),

first_orders as (

    {% for grain in grains %}
    select
        '{{ grain }}' as grain,
        {{ period_start(grain, 'order_date') }} as period_start,
        net_amount
    from orders
    where is_first_order
    {{ "union all" if not loop.last }}
    {% endfor %}

),

new_revenue as (

    select
        grain,
        period_start,
        sum(net_amount) as new_revenue
    from first_orders
    group by grain, period_start

),

milestones as (

    -- Customers reaching their first and their second valid order, by day.
    select
        order_date,
        sum(case when customer_order_number = 1 then 1 else 0 end) as first_buyers,
        sum(case when customer_order_number = 2 then 1 else 0 end) as second_buyers
    from orders
    where customer_order_number <= 2
    group by order_date

),

buyers_to_date as (

    select
        calendar.period_start as activity_date,
        sum(coalesce(milestones.first_buyers, 0)) over (
            order by calendar.period_start rows unbounded preceding
        ) as customers,
        sum(coalesce(milestones.second_buyers, 0)) over (
            order by calendar.period_start rows unbounded preceding
        ) as repeat_customers
    from calendar
    left join milestones
        on calendar.period_start = milestones.order_date
    where calendar.grain = 'day'

),

churn_rates as (

    select
        grain,
        period_start,
        churn_rate
    from window_rates
    union all
    select
        'day' as grain,
        activity_date as period_start,
        {{ ratio('churned_customers', 'active_start') }} as churn_rate
    from daily_base

),

measures as (

    select
        calendar.grain,
        calendar.period_start,
        cast(coalesce(buyers.orders, 0) as bigint) as orders,
        coalesce(buyers.net_revenue, 0) as net_revenue,
        cast(coalesce(buyers.buying_customers, 0) as bigint) as buying_customers,
        cast(coalesce(buyers.new_customers, 0) as bigint) as new_customers,
        coalesce(new_revenue.new_revenue, 0) as new_revenue,
        cast(coalesce(base_at_end.active_end, 0) as bigint) as active_customers,
        {{ ratio('coalesce(buyers.net_revenue, 0)', 'base_at_end.active_end') }} as arpu,
        {{ ratio('to_date.repeat_customers', 'to_date.customers') }} as repeat_purchase_rate,
        churn_rates.churn_rate,
        calendar.is_complete
    from calendar
    left join buyers
        on
            calendar.grain = buyers.grain
            and calendar.period_start = buyers.period_start
    left join new_revenue
        on
            calendar.grain = new_revenue.grain
            and calendar.period_start = new_revenue.period_start
    left join daily_base as base_at_end
        on calendar.effective_end = base_at_end.activity_date
    left join buyers_to_date as to_date
        on calendar.effective_end = to_date.activity_date
    left join churn_rates
        on
            calendar.grain = churn_rates.grain
            and calendar.period_start = churn_rates.period_start

),

final as (

    select
        grain,
        period_start,
        orders,
        net_revenue,
        buying_customers,
        new_customers,
        buying_customers - new_customers as returning_customers,
        -- Each new customer's first order falls in its first period, so new orders = new
        -- customers; a new customer's second order is a returning order.
        new_customers as new_orders,
        orders - new_customers as returning_orders,
        new_revenue,
        net_revenue - new_revenue as returning_revenue,
        {{ ratio('net_revenue - new_revenue', 'net_revenue') }} as returning_revenue_share,
        {{ ratio('net_revenue', 'orders') }} as aov,
        {{ ratio('orders', 'buying_customers') }} as purchase_frequency,
        active_customers,
        arpu,
        {{ ratio('net_revenue', 'buying_customers') }} as arppu,
        repeat_purchase_rate,
        arpu * {{ var('gross_margin') }} / nullif(churn_rate, 0) as simple_ltv,
        is_complete
    from measures

)

select * from final
