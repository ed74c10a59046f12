-- churned = S - retained, and the rates are the counts over S: retention = retained / S,
-- churn = churned / S (so retention + churn = 1), CRR = (E - N) / S.
{% set tolerance = 0.000001 %}

select *
from {{ ref('retention_rates') }}
where
    churned_customers != customers_start - retained_customers
    or retained_customers > customers_start
    or (
        customers_start > 0
        and (
            crr is null
            or retention_rate is null
            or churn_rate is null
            or abs(retention_rate * customers_start - retained_customers) > {{ tolerance }}
            or abs(churn_rate * customers_start - churned_customers) > {{ tolerance }}
            or abs(crr * customers_start - (customers_end - new_customers)) > {{ tolerance }}
            or abs(retention_rate + churn_rate - 1) > {{ tolerance }}
        )
    )
