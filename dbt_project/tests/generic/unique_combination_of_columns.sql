{% test unique_combination_of_columns(model, combination) %}
-- Rows whose combination of key columns appears more than once: the grain of a model
-- whose key spans several columns (dbt_utils is not available).
select
    {{ combination | join(', ') }},
    count(*) as duplicates
from {{ model }}
group by {{ combination | join(', ') }}
having count(*) > 1
{% endtest %}
