-- The columns each built model really has match the columns its YAML documents: one row
-- per column missing from the YAML (undocumented) or documented but not produced (a
-- misspelt or dropped column). Runs after the models below; a model missing from this
-- list is still checked when its relation exists, but list it so it is built first.
-- depends_on: {{ ref('stg_orders__orders') }}
-- depends_on: {{ ref('stg_orders__rejected_orders') }}
-- depends_on: {{ ref('stg_orders__load_audit') }}
-- depends_on: {{ ref('int_orders__classified') }}
-- depends_on: {{ ref('int_run__as_of') }}
-- depends_on: {{ ref('int_calendar__periods') }}
-- depends_on: {{ ref('int_customers__active_spells') }}
-- depends_on: {{ ref('int_customers__period_activity') }}
-- depends_on: {{ ref('fct_orders') }}
-- depends_on: {{ ref('dim_customers') }}
-- depends_on: {{ ref('cohort_retention') }}
-- depends_on: {{ ref('cohort_retention_wide') }}
-- depends_on: {{ ref('retention_rates') }}
-- depends_on: {{ ref('customer_base_daily') }}
-- depends_on: {{ ref('int_kpis__periods') }}
-- depends_on: {{ ref('kpi_periodic') }}
-- depends_on: {{ ref('kpi_daily') }}
-- depends_on: {{ ref('load_audit') }}
-- depends_on: {{ ref('rejected_orders') }}
-- depends_on: {{ ref('stg_marketing__spend') }}
-- depends_on: {{ ref('unit_economics') }}
{% set problems = [] %}
{% if execute and flags.WHICH in ['build', 'test', 'retry'] %}
    {% for node in graph.nodes.values()
        if node.resource_type == 'model'
        and node.package_name == project_name
        and node.config.materialized != 'ephemeral' %}
        {% set relation = adapter.get_relation(
            database=node.database, schema=node.schema, identifier=node.alias
        ) %}
        {% if relation is not none %}
            {% set built = adapter.get_columns_in_relation(relation)
                | map(attribute='name') | map('lower') | list %}
            {% set documented = node.columns.keys() | map('lower') | list %}
            {% for column in built if column not in documented %}
                {% do problems.append(node.name ~ '.' ~ column ~ ': not in the YAML') %}
            {% endfor %}
            {% for column in documented if column not in built %}
                {% do problems.append(node.name ~ '.' ~ column ~ ': in the YAML, not in the model') %}
            {% endfor %}
        {% endif %}
    {% endfor %}
{% endif %}
{{ problems_as_rows(problems) }}
