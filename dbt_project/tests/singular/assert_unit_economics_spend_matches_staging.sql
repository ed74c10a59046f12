-- The spend of the cohort rows (age 0, every channel but `all`) adds up to the staged
-- spend dated up to the as-of date: no spend is lost or counted twice.
with

unit_economics as (

    select * from {{ ref('unit_economics') }}

),

spend as (

    select * from {{ ref('stg_marketing__spend') }}

),

as_of as (

    select * from {{ ref('int_run__as_of') }}

),

mart_total as (

    select coalesce(sum(marketing_spend), 0) as total
    from unit_economics
    where acquisition_channel != 'all' and months_since_acquisition = 0

),

staged_total as (

    select coalesce(sum(spend.spend), 0) as total
    from spend
    cross join as_of
    where spend.spend_date <= as_of.as_of_date

),

final as (

    select
        mart_total.total as mart_spend,
        staged_total.total as staged_spend
    from mart_total
    cross join staged_total
    where mart_total.total != staged_total.total

)

select * from final
