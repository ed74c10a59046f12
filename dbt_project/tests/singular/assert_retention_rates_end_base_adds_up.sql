-- E = retained + reactivated + N in every row of both bases: everyone in the end base is
-- exactly one of new, retained or reactivated.
select *
from {{ ref('retention_rates') }}
where
    customers_end
    != retained_customers + reactivated_customers + new_customers
    or retained_customers > customers_end
    or new_customers > customers_end
