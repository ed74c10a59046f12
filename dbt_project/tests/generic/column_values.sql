{% test column_values(model, not_null=[], value_between={}, accepted_values={}) %}
-- dbt's not_null, value_between and accepted_values for the columns of a model, as one
-- test and one scan: a dbt node per column and rule cost about a quarter of a small
-- build's time (docs/DECISIONS.md, "Column tests"). One row per column and rule that some
-- rows break, with their count. Nulls pass value_between and accepted_values; not_null
-- catches them.
{%- set checks = [] -%}
{%- for column in not_null -%}
    {%- do checks.append((column, 'not_null', column ~ ' is null')) -%}
{%- endfor -%}
{%- for column, bounds in value_between.items() -%}
    {%- set outside = [] -%}
    {%- if bounds.get('min_value') is not none -%}
        {%- do outside.append(column ~ ' < ' ~ bounds.get('min_value')) -%}
    {%- endif -%}
    {%- if bounds.get('max_value') is not none -%}
        {%- do outside.append(column ~ ' > ' ~ bounds.get('max_value')) -%}
    {%- endif -%}
    {%- if not outside -%}
        {{ exceptions.raise_compiler_error(
            "column_values on " ~ model ~ ": value_between of " ~ column
            ~ " needs min_value or max_value"
        ) }}
    {%- endif -%}
    {%- do checks.append((column, 'value_between', outside | join(' or '))) -%}
{%- endfor -%}
{%- for column, values in accepted_values.items() -%}
    {%- set literals = [] -%}
    {%- for value in values -%}
        {%- do literals.append(dbt.string_literal(value) if value is string else value) -%}
    {%- endfor -%}
    {%- do checks.append(
        (column, 'accepted_values', column ~ ' not in (' ~ literals | join(', ') ~ ')')
    ) -%}
{%- endfor %}
with failing as (
    select
    {%- for column, rule, condition in checks %}
        count(case when {{ condition }} then 1 end) as failing_{{ loop.index }}
        {{- ',' if not loop.last }}
    {%- endfor %}
    from {{ model }}
)

{%- for column, rule, condition in checks %}
{% if not loop.first %}union all
{% endif -%}
select
    '{{ column }}' as column_name,
    '{{ rule }}' as rule,
    failing_{{ loop.index }} as failing_rows
from failing
where failing_{{ loop.index }} > 0
{%- endfor %}
{% endtest %}
