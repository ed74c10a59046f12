{# Marts land in the target schema. A DuckDB file is one warehouse, so staging and
   intermediate keep their plain names; on a database server, which several warehouses
   (and tests) may share, they are prefixed with the target schema, as the raw layer is. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ return(adapter.dispatch('layer_schema_name', 'retention')(custom_schema_name)) }}
{%- endmacro %}

{% macro default__layer_schema_name(custom_schema_name) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}

{% macro duckdb__layer_schema_name(custom_schema_name) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
