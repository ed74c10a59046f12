-- At the grains both tables share (week, month, quarter), the cohorts' active customers
-- in a period add up to the activity base E of retention_rates, and the cohort sizes to N.
with

cohorts as (

    select
        grain,
        period_start,
        sum(active_customers) as active_customers,
        sum(case when period_number = 0 then cohort_customers else 0 end) as new_customers
    from {{ ref('cohort_retention') }}
    where grain in ('week', 'month', 'quarter')
    group by grain, period_start

),

rates as (

    select * from {{ ref('retention_rates') }}
    where base = 'activity' and grain in ('week', 'month', 'quarter')

)

select
    rates.grain,
    rates.period_start,
    rates.customers_end,
    rates.new_customers,
    cohorts.active_customers,
    cohorts.new_customers as cohort_new_customers
from rates
left join cohorts
    on
        rates.grain = cohorts.grain
        and rates.period_start = cohorts.period_start
where
    rates.customers_end != coalesce(cohorts.active_customers, 0)
    or rates.new_customers != coalesce(cohorts.new_customers, 0)
