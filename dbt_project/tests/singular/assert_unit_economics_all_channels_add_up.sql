-- The `all` row of each cohort month and age holds the sum of the channel rows: spend,
-- new customers and revenue. Returns the cells where it does not.
with

unit_economics as (

    select * from {{ ref('unit_economics') }}

),

channel_sums as (

    select
        cohort_month,
        months_since_acquisition,
        sum(marketing_spend) as marketing_spend,
        sum(new_customers) as new_customers,
        sum(net_revenue) as net_revenue
    from unit_economics
    where acquisition_channel != 'all'
    group by cohort_month, months_since_acquisition

),

all_channels as (

    select * from unit_economics
    where acquisition_channel = 'all'

),

final as (

    select
        all_channels.cohort_month,
        all_channels.months_since_acquisition
    from all_channels
    full outer join channel_sums
        on
            all_channels.cohort_month = channel_sums.cohort_month
            and all_channels.months_since_acquisition = channel_sums.months_since_acquisition
    where
        all_channels.cohort_month is null
        or channel_sums.cohort_month is null
        or all_channels.marketing_spend != channel_sums.marketing_spend
        or all_channels.new_customers != channel_sums.new_customers
        or all_channels.net_revenue != channel_sums.net_revenue

)

select * from final
