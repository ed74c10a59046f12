{% test value_between(model, column_name, min_value=none, max_value=none) %}
-- Rows whose value lies outside [min_value, max_value]; either bound may be left out.
-- Nulls pass (pair with not_null where a value is required).
{%- if min_value is none and max_value is none -%}
    {{ exceptions.raise_compiler_error(
        "value_between on " ~ model ~ "." ~ column_name ~ " needs min_value or max_value"
    ) }}
{%- endif %}
select {{ column_name }}
from {{ model }}
where
    {%- if min_value is not none %}
    {{ column_name }} < {{ min_value }}
    {%- endif %}
    {%- if min_value is not none and max_value is not none %}
    or
    {%- endif %}
    {%- if max_value is not none %}
    {{ column_name }} > {{ max_value }}
    {%- endif %}
{% endtest %}
