{{ config(materialized='view') }}
-- One row per grain and cohort: retention rate by period number as columns, for heatmaps.
with

cohort_retention as (

    select * from {{ ref('cohort_retention') }}

),

final as (

    select
        grain,
        cohort_start,
        max(cohort_customers) as cohort_customers,
        {{ retention_by_period_columns(var('cohort_wide_periods') | int) }}
    from cohort_retention
    group by grain, cohort_start

)

select * from final
