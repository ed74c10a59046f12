-- At every grain the cohorts partition the customers: the period-0 cohort sizes add up to
-- the number of rows of dim_customers (a grain with no rows at all fails too).
with

grains as (

    select 'day' as grain
    union all
    select 'week' as grain
    union all
    select 'month' as grain
    union all
    select 'quarter' as grain

),

sizes as (

    select
        grain,
        sum(cohort_customers) as customers
    from {{ ref('cohort_retention') }}
    where period_number = 0
    group by grain

),

customers as (

    select count(*) as customers from {{ ref('dim_customers') }}

)

select
    grains.grain,
    sizes.customers as cohort_customers,
    customers.customers
from grains
cross join customers
left join sizes
    on grains.grain = sizes.grain
where coalesce(sizes.customers, 0) != customers.customers
