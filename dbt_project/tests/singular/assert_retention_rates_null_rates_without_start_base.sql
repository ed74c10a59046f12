-- The first period of each grain and base has no starting base (S = 0), and a period
-- without a starting base shows null rates, never a division by zero or a 0%.
with

rates as (

    select
        *,
        min(period_start) over (partition by grain, base) as first_period_start
    from {{ ref('retention_rates') }}

)

select *
from rates
where
    (period_start = first_period_start and customers_start != 0)
    or (
        customers_start = 0
        and (crr is not null or retention_rate is not null or churn_rate is not null)
    )
