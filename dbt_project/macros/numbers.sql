{% macro to_double(expr) -%}
    {{ return(adapter.dispatch('to_double', 'retention')(expr)) }}
{%- endmacro %}

{% macro default__to_double(expr) -%}
    cast({{ expr }} as double)
{%- endmacro %}

{% macro postgres__to_double(expr) -%}
    cast({{ expr }} as double precision)
{%- endmacro %}

{# numerator / denominator as a double, null when the denominator is 0. #}
{% macro ratio(numerator, denominator) -%}
    {{ to_double(numerator) }} / nullif({{ denominator }}, 0)
{%- endmacro %}

{# Integers 0 .. 10^digits - 1 as column n. #}
{% macro integers_below_power_of_ten(digits) -%}
    {{ return(adapter.dispatch('integers_below_power_of_ten', 'retention')(digits)) }}
{%- endmacro %}

{# Cross-joined digits: a series in plain SQL. #}
{% macro default__integers_below_power_of_ten(digits) -%}
    select
        {% for i in range(digits) -%}
        d{{ i }}.digit * {{ 10 ** i }}{{ " + " if not loop.last }}
        {%- endfor %} as n
    from
        {% for i in range(digits) -%}
        (
            select 0 as digit union all select 1 union all select 2 union all select 3
            union all select 4 union all select 5 union all select 6 union all select 7
            union all select 8 union all select 9
        ) as d{{ i }}{{ "," if not loop.last }}
        {% endfor %}
{%- endmacro %}

{# Spark joins the digits with one nested-loop join per digit; its range() generates
   the series in one step. #}
{% macro spark__integers_below_power_of_ten(digits) -%}
    select id as n from range({{ 10 ** digits }})
{%- endmacro %}
