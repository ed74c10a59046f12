-- Fails with one row per missing description (see macros/documentation.sql).
{% set problems = documentation_problems() if execute else [] %}
select problem
from (
    select cast(null as varchar) as problem
    {% for problem in problems %}
    union all
    select '{{ problem }}' as problem
    {% endfor %}
) as problems
where problem is not null
