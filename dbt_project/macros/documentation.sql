{# Models of this project without a description, documented columns without one, and
   columns of the SPEC contract that a mart does not document. #}
{% macro documentation_problems() %}
{% set contract = {
    'cohort_retention': ['grain', 'cohort_start', 'period_number', 'period_start',
        'cohort_customers', 'active_customers', 'retention_rate', 'net_revenue',
        'cumulative_net_revenue', 'cumulative_revenue_per_customer', 'is_complete'],
    'retention_rates': ['grain', 'period_start', 'base', 'customers_start', 'customers_end',
        'new_customers', 'retained_customers', 'reactivated_customers', 'churned_customers',
        'crr', 'retention_rate', 'churn_rate', 'is_complete'],
    'customer_base_daily': ['activity_date', 'active_start', 'new_customers',
        'reactivated_customers', 'churned_customers', 'active_end'],
    'kpi_periodic': ['grain', 'period_start', 'orders', 'net_revenue', 'buying_customers',
        'new_customers', 'returning_customers', 'returning_revenue_share', 'aov',
        'purchase_frequency', 'arpu', 'arppu', 'repeat_purchase_rate', 'is_complete'],
    'kpi_daily': ['activity_date', 'orders', 'net_revenue', 'buying_customers',
        'new_customers', 'returning_customers', 'returning_revenue_share', 'aov',
        'purchase_frequency', 'arpu', 'arppu', 'repeat_purchase_rate', 'is_complete'],
    'load_audit': ['load_id', 'source', 'started_at', 'finished_at', 'rows_read',
        'rows_loaded', 'rows_rejected', 'rows_deduplicated', 'status'],
    'rejected_orders': ['load_id', 'source', 'source_row', 'raw_record', 'reason_code',
        'reason'],
} %}
{% set problems = [] %}
{% for node in graph.nodes.values()
    if node.resource_type == 'model' and node.package_name == project_name %}
    {% if not node.description %}
        {% do problems.append(node.name ~ ': no description') %}
    {% endif %}
    {% for column in node.columns.values() if not column.description %}
        {% do problems.append(node.name ~ '.' ~ column.name ~ ': no description') %}
    {% endfor %}
    {% for column in contract.get(node.name, []) if column not in node.columns %}
        {% do problems.append(node.name ~ '.' ~ column ~ ': contract column not documented') %}
    {% endfor %}
{% endfor %}

{{ return(problems) }}
{% endmacro %}

{# A singular test's query over a list of problems: one failing row per problem. #}
{% macro problems_as_rows(problems) %}
select problem
from (
    select cast(null as varchar(200)) as problem
    {% for problem in problems %}
    union all
    select '{{ problem }}' as problem
    {% endfor %}
) as problems
where problem is not null
{% endmacro %}
