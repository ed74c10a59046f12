{# On Spark with the var raw_parquet_dir set: every source table of the project becomes a
   Spark table over the Parquet files in <raw_parquet_dir>/<identifier>/, in the source's
   schema, before the run (on-run-start). Registering again each run picks up new files;
   dropping such a table leaves its files. Elsewhere, or without the var, nothing. #}
{% macro register_raw_parquet() %}
    {% set parquet_dir = var('raw_parquet_dir') %}
    {% if execute and target.type == 'spark' and parquet_dir %}
        {% for schema in graph.sources.values() | map(attribute='schema') | unique %}
            {% do run_query('create schema if not exists ' ~ schema) %}
        {% endfor %}
        {% for source in graph.sources.values() %}
            {% set table = source.schema ~ '.' ~ source.identifier %}
            {% do run_query('drop table if exists ' ~ table) %}
            {% do run_query(
                "create table " ~ table ~ " using parquet location '"
                ~ parquet_dir ~ "/" ~ source.identifier ~ "'"
            ) %}
        {% endfor %}
    {% endif %}
{% endmacro %}
