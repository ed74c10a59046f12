-- E = retained + reactivated + N and S = retained + churned, in every row of both bases,
-- and no rate without a starting base.
select *
from {{ ref('retention_rates') }}
where
    customers_end
    != retained_customers + reactivated_customers + new_customers
    or customers_start != retained_customers + churned_customers
    or reactivated_customers < 0
    or (customers_start = 0 and (crr is not null or churn_rate is not null))
