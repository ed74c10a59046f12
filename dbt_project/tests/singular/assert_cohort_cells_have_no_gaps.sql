-- Every (grain, cohort, period number) cell up to the as-of date is present: period numbers
-- run 0, 1, ..., max without gaps, period 0 is the cohort period, and the last cell of
-- every cohort is the period holding the as-of date.
with

cells as (

    select * from {{ ref('cohort_retention') }}

),

last_periods as (

    select
        grain,
        max(period_start) as as_of_period_start
    from {{ ref('int_calendar__periods') }}
    group by grain

),

cohorts as (

    select
        grain,
        cohort_start,
        count(*) as cells,
        min(period_number) as first_period_number,
        max(period_number) as last_period_number,
        max(period_start) as last_period_start,
        max(case when period_number = 0 then period_start end) as period_zero_start
    from cells
    group by grain, cohort_start

)

select
    cohorts.*,
    last_periods.as_of_period_start
from cohorts
left join last_periods
    on cohorts.grain = last_periods.grain
where
    cohorts.cells != cohorts.last_period_number + 1
    or cohorts.first_period_number != 0
    or cohorts.period_zero_start is null
    or cohorts.period_zero_start != cohorts.cohort_start
    or last_periods.as_of_period_start is null
    or cohorts.last_period_start != last_periods.as_of_period_start
