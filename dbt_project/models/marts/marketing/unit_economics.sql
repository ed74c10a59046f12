-- One row per acquisition channel (and 'all'), cohort month and months since acquisition:
-- the cohort months are those the marketing spend covers, so no spend means no rows.
with

spend as (

    select * from {{ ref('stg_marketing__spend') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

orders as (

    select * from {{ ref('fct_orders') }}

),

as_of as (

    select * from {{ ref('int_run__as_of') }}

),

month_offsets as (

    {{ integers_below_power_of_ten(4) }}

),

spend_in_window as (

    select
        spend.channel as acquisition_channel,
        {{ period_start('month', 'spend.spend_date') }} as cohort_month,
        spend.spend
    from spend
    cross join as_of
    where spend.spend_date <= as_of.as_of_date

),

spend_by_month as (

    select
        acquisition_channel,
        cohort_month,
        sum(spend) as marketing_spend
    from spend_in_window
    group by acquisition_channel, cohort_month

),

bounds as (

    select
        min(spend_by_month.cohort_month) as first_month,
        max(spend_by_month.cohort_month) as last_month,
        max({{ period_start('month', 'as_of.as_of_date') }}) as as_of_month,
        max(as_of.as_of_date) as as_of_date
    from spend_by_month
    cross join as_of

),

cohort_months as (

    select
        cast({{ dbt.dateadd('month', 'month_offsets.n', 'bounds.first_month') }} as date)
            as cohort_month,
        bounds.as_of_month,
        bounds.as_of_date
    from bounds
    inner join month_offsets
        on month_offsets.n <= {{ dbt.datediff('bounds.first_month', 'bounds.last_month', 'month') }}

),

acquired as (

    select
        customers.customer_id,
        customers.cohort_month,
        coalesce(nullif(lower(trim(customers.acquisition_channel)), ''), 'unknown')
            as acquisition_channel
    from customers
    inner join cohort_months
        on customers.cohort_month = cohort_months.cohort_month

),

channels as (

    select acquisition_channel from spend_by_month
    union
    select acquisition_channel from acquired
    union
    select 'all' as acquisition_channel from cohort_months

),

cohort_spend as (

    select
        acquisition_channel,
        cohort_month,
        marketing_spend
    from spend_by_month
    union all
    select
        'all' as acquisition_channel,
        cohort_month,
        sum(marketing_spend) as marketing_spend
    from spend_by_month
    group by cohort_month

),

cohort_sizes as (

    select
        acquisition_channel,
        cohort_month,
        count(*) as new_customers
    from acquired
    group by acquisition_channel, cohort_month
    union all
    select
        'all' as acquisition_channel,
        cohort_month,
        count(*) as new_customers
    from acquired
    group by cohort_month

),

monthly_revenue as (

    select
        acquired.acquisition_channel,
        acquired.cohort_month,
        {{ period_start('month', 'orders.order_date') }} as period_start,
        orders.net_amount
    from orders
    inner join acquired
        on orders.customer_id = acquired.customer_id

),

cohort_revenue as (

    select
        acquisition_channel,
        cohort_month,
        period_start,
        sum(net_amount) as net_revenue
    from monthly_revenue
    group by acquisition_channel, cohort_month, period_start
    union all
    select
        'all' as acquisition_channel,
        cohort_month,
        period_start,
        sum(net_amount) as net_revenue
    from monthly_revenue
    group by cohort_month, period_start

),

cells as (

    select
        channels.acquisition_channel,
        cohort_months.cohort_month,
        month_offsets.n as months_since_acquisition,
        cast({{ dbt.dateadd('month', 'month_offsets.n', 'cohort_months.cohort_month') }} as date)
            as period_start,
        cohort_months.as_of_date
    from channels
    cross join cohort_months
    inner join month_offsets
        on month_offsets.n <= {{ dbt.datediff(
            'cohort_months.cohort_month', 'cohort_months.as_of_month', 'month'
        ) }}

),

filled as (

    select
        cells.acquisition_channel,
        cells.cohort_month,
        cells.months_since_acquisition,
        cells.period_start,
        coalesce(cohort_spend.marketing_spend, 0) as marketing_spend,
        coalesce(cohort_sizes.new_customers, 0) as new_customers,
        coalesce(cohort_revenue.net_revenue, 0) as net_revenue,
        {{ add_days(next_period_start('month', 'cells.period_start'), -1) }}
        <= cells.as_of_date as is_complete
    from cells
    left join cohort_spend
        on
            cells.acquisition_channel = cohort_spend.acquisition_channel
            and cells.cohort_month = cohort_spend.cohort_month
    left join cohort_sizes
        on
            cells.acquisition_channel = cohort_sizes.acquisition_channel
            and cells.cohort_month = cohort_sizes.cohort_month
    left join cohort_revenue
        on
            cells.acquisition_channel = cohort_revenue.acquisition_channel
            and cells.cohort_month = cohort_revenue.cohort_month
            and cells.period_start = cohort_revenue.period_start

),

cumulative as (

    select
        filled.*,
        sum(net_revenue) over (
            partition by acquisition_channel, cohort_month
            order by months_since_acquisition
            rows unbounded preceding
        ) as cumulative_net_revenue
    from filled

),

margins as (

    select
        cumulative.*,
        cumulative_net_revenue * {{ var('gross_margin') }} as cumulative_margin
    from cumulative

),

final as (

    select
        margins.*,
        marketing_spend > 0 and cumulative_margin >= marketing_spend as is_paid_back
    from margins

)

select
    acquisition_channel,
    cohort_month,
    months_since_acquisition,
    period_start,
    marketing_spend,
    new_customers,
    {{ ratio('marketing_spend', 'new_customers') }} as cac,
    net_revenue,
    cumulative_net_revenue,
    cumulative_margin,
    {{ ratio('cumulative_margin', 'new_customers') }} as cumulative_margin_per_customer,
    case
        when new_customers > 0 then {{ ratio('cumulative_margin', 'marketing_spend') }}
    end as ltv_to_cac,
    is_paid_back,
    min(case when is_paid_back then months_since_acquisition end) over (
        partition by acquisition_channel, cohort_month
    ) as payback_months,
    is_complete
from final
