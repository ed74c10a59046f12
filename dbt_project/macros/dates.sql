{# Date helpers that stay portable across DuckDB, PostgreSQL and Spark. #}

{# The grains of the calendar (int_calendar__periods), finest first. #}
{% macro calendar_grains() -%}
    {{ return(['day', 'week', 'month', 'quarter', 'year']) }}
{%- endmacro %}

{% macro add_days(date_expr, days) -%}
    cast({{ dbt.dateadd('day', days, date_expr) }} as date)
{%- endmacro %}

{% macro period_start(grain, date_expr) -%}
    cast({{ dbt.date_trunc(grain, date_expr) }} as date)
{%- endmacro %}

{# Quarters as 3 months: PostgreSQL has no quarter interval. #}
{% macro next_period_start(grain, period_start_expr) -%}
    {%- if grain == 'quarter' -%}
        cast({{ dbt.dateadd('month', 3, period_start_expr) }} as date)
    {%- else -%}
        cast({{ dbt.dateadd(grain, 1, period_start_expr) }} as date)
    {%- endif -%}
{%- endmacro %}

{% macro previous_period_start(grain, period_start_expr) -%}
    {{ period_start(grain, add_days(period_start_expr, -1)) }}
{%- endmacro %}

{% macro date_literal(value) -%}
    cast('{{ value }}' as date)
{%- endmacro %}
