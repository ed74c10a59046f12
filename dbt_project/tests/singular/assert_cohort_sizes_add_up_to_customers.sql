-- At every grain the cohorts partition the customers: sizes add up to dim_customers.
with

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

select sizes.*
from sizes
cross join customers
where sizes.customers != customers.customers
