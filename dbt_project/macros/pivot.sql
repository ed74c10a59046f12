{# max(retention_rate) for period numbers 0..last as columns period_0 .. period_<last>. #}
{% macro retention_by_period_columns(last) -%}
    {%- for period in range(last + 1) %}
    max(case when period_number = {{ period }} then retention_rate end) as period_{{ period }}
    {{- "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}
