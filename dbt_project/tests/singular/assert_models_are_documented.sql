-- Fails with one row per missing description (see macros/documentation.sql).
{% set problems = documentation_problems() if execute else [] %}
{% for problem in problems %}
    select '{{ problem }}' as problem
    {{ "union all" if not loop.last }}
{% else %}
    select 'none' as problem
    where 1 = 0
{% endfor %}
