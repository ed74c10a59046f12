{% test unique_combination_of_columns(model, combination) %}
-- Rows whose combination of key columns appears more than once.
select
    {{ combination | join(', ') }},
    count(*) as duplicates
from {{ model }}
group by {{ combination | join(', ') }}
having count(*) > 1
{% endtest %}
