-- Every period number from 0 up to the as-of date has a cell: no silent gaps.
select
    grain,
    cohort_start
from {{ ref('cohort_retention') }}
group by grain, cohort_start
having count(*) != max(period_number) + 1
