{#- The canonical status of a source status: lower-cased and trimmed, then mapped by the
    var status_map (source status: canonical status); unmapped statuses pass through. -#}
{% macro mapped_status(column) -%}
    {%- set status_map = var('status_map', {}) -%}
    {%- if status_map -%}
    case lower(trim({{ column }}))
        {%- for source_status, canonical in status_map.items() %}
        when '{{ source_status | replace("'", "''") }}' then '{{ canonical | replace("'", "''") }}'
        {%- endfor %}
        else lower(trim({{ column }}))
    end
    {%- else -%}
    lower(trim({{ column }}))
    {%- endif -%}
{%- endmacro %}
