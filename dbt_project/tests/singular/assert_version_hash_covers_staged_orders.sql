-- Every column of stg_orders__orders but its key and lineage is in the version hash that
-- tells a changed order from one re-sent unchanged (macros/incremental.sql): a column left
-- out would let a change in it alone go unseen by the incremental models.
-- depends_on: {{ ref('stg_orders__orders') }}
{% set problems = [] %}
{% set key_and_lineage = ['order_id', 'load_id', 'source', 'source_row'] %}
{% set hashed = version_hash_columns() %}
{% if execute %}
    {% for column in adapter.get_columns_in_relation(ref('stg_orders__orders'))
        | map(attribute='name') | map('lower')
        if column not in key_and_lineage and column not in hashed %}
        {% do problems.append('stg_orders__orders.' ~ column ~ ': not in version_hash_columns') %}
    {% endfor %}
{% endif %}
{{ problems_as_rows(problems) }}
