{# Incremental nights (docs/incremental.md). A few heavy models update only what changed
   since their own last build; every build of them is recorded in incremental_builds, and
   the orders that changed in incremental_changes, both in the intermediate schema:

   - stg_orders__orders records every order a new load touched (its new version, and its
     previous one with the customer and date it had), and every order a new load's window
     may have deleted; an order re-sent unchanged (the same content, a new load_id and
     source_row) counts as a lineage change only, which no model rebuilds for;
   - fct_orders records the orders that the as-of date's move brings in or drops;
   - each model applies the changes recorded since its own last build, so a model that
     failed or was skipped one night catches up the next.

   A model rebuilds whole on its first build, with --full-refresh, when the vars or any
   model's SQL changed since its last build (build_fingerprint), and when an upstream one
   rebuilt whole (a change row without an order: "everything changed").
   On Spark the models are plain tables (incremental_config). #}

{# The config of an incremental model: `kind` says which rows a night rebuilds
   (rebuilt_rows); `records` which changes it records for the models downstream: 'loads'
   (stg_orders__orders) or 'as_of' (fct_orders); `lineage` that it carries the orders'
   load_id, source and source_row, which it updates for the orders re-sent unchanged. #}
{% macro incremental_config(kind, records=none, lineage=false) %}
    {%- set records_literal = "'" ~ records ~ "'" if records else 'none' -%}
    {{ config(
        materialized='table' if target.type == 'spark' else 'incremental',
        incremental_strategy='append',
        on_schema_change='sync_all_columns',
        pre_hook="{{ delete_rebuilt_rows('" ~ kind ~ "', " ~ records_literal ~ ", "
            ~ lineage ~ ") }}",
        post_hook="{{ record_build('" ~ kind ~ "', " ~ records_literal ~ ") }}",
    ) }}
{% endmacro %}

{% macro intermediate_table(name) -%}
    {{ generate_schema_name('intermediate', none) }}.{{ name }}
{%- endmacro %}

{# The builds' timestamp: one per dbt invocation, later for every later one. #}
{% macro build_stamp() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as timestamp)
{%- endmacro %}

{# What the incremental models' results depend on besides the orders: the vars, and the SQL
   of every model (dbt's checksum of each node). #}
{% macro build_fingerprint() -%}
    {%- set settings = [
        var('active_window_days'), var('excluded_statuses'), var('status_map'),
        var('gross_margin'), var('free_orders_are_purchases'), var('vip_share'),
        var('pre_vip_share'), var('at_risk_days'), var('quick_churn_max_orders'),
    ] -%}
    {%- set checksums = [] -%}
    {%- for node in (graph.nodes.values() if execute else []) | sort(attribute='unique_id') -%}
        {%- do checksums.append(node.unique_id ~ ':' ~ node.checksum.checksum) -%}
    {%- endfor -%}
    {{ return(local_md5(tojson(settings) ~ checksums | join(','))) }}
{%- endmacro %}

{% macro create_incremental_state() %}
    {% if target.type != 'spark' %}
        create schema if not exists {{ generate_schema_name('intermediate', none) }};
        create table if not exists {{ intermediate_table('incremental_builds') }} (
            model_name varchar(200) not null,
            built_at timestamp not null,
            through_load_sequence bigint not null,
            as_of_date date,
            fingerprint varchar(64) not null,
            rebuilt_rows {{ dbt.type_string() }}
        );
        create table if not exists {{ intermediate_table('incremental_changes') }} (
            changed_at timestamp not null,
            order_id varchar,
            customer_id varchar,
            order_date date,
            version_hash varchar(32),
            is_lineage_only boolean default false
        );
        {# Added after the first release: a warehouse of then gains them. #}
        alter table {{ intermediate_table('incremental_changes') }}
            add column if not exists version_hash varchar(32);
        alter table {{ intermediate_table('incremental_changes') }}
            add column if not exists is_lineage_only boolean default false;
        alter table {{ intermediate_table('incremental_builds') }}
            add column if not exists rebuilt_rows {{ dbt.type_string() }};
    {% endif %}
{% endmacro %}

{# This model's incremental scope, read at run time: none when it rebuilds whole, else the
   previous build's built_at, through_load_sequence and as_of_date, and since_date, the
   earliest order date among the changes recorded since (none when there are none). #}
{% macro incremental_scope() %}
    {% if not (execute and is_incremental()) %}
        {{ return(none) }}
    {% endif %}
    {% set previous = run_query(
        "select built_at, through_load_sequence, as_of_date, fingerprint from "
        ~ intermediate_table('incremental_builds') ~ " where model_name = '"
        ~ this.identifier ~ "' order by built_at desc limit 1"
    ) %}
    {% if previous.rows | length == 0 or previous.rows[0][3] != build_fingerprint() %}
        {{ return(none) }}
    {% endif %}
    {% set built_at = previous.rows[0][0] %}
    {% set since = "changed_at > cast('" ~ built_at ~ "' as timestamp)" %}
    {% set changes = run_query(
        "select count(*) - count(order_date), min(order_date) from "
        ~ intermediate_table('incremental_changes') ~ " where " ~ since
        ~ " and not is_lineage_only"
    ) %}
    {% if changes.rows[0][0] > 0 %}
        {{ return(none) }}
    {% endif %}
    {{ return({
        'since': since,
        'through_load_sequence': previous.rows[0][1],
        'as_of_date': previous.rows[0][2],
        'since_date': changes.rows[0][1],
    }) }}
{% endmacro %}

{# The rows a model rebuilds, as a condition on its columns: of the changed orders (`orders`,
   stg_orders__orders), of their customers (`customers`), the months from the first rebuilt
   one (`months`), or each grain's periods from its first rebuilt one (`periods`). #}
{% macro rebuilt_rows(kind, scope) -%}
    {%- set changes = intermediate_table('incremental_changes') -%}
    {%- if kind == 'orders' -%}
        order_id in (
            select order_id from {{ changes }} where {{ scope.since }} and order_id is not null
        )
    {%- elif kind == 'customers' -%}
        customer_id in (
            select customer_id from {{ changes }}
            where {{ scope.since }} and customer_id is not null and not is_lineage_only
        )
    {%- elif kind == 'months' -%}
        snapshot_month >= {{ first_rebuilt_period('month', scope) }}
    {%- elif kind == 'periods' -%}
        {{ in_rebuilt_periods(scope) }}
    {%- else -%}
        {{ exceptions.raise_compiler_error("rebuilt_rows: unknown kind " ~ kind) }}
    {%- endif -%}
{%- endmacro %}

{# The keyword that makes a CTE holding a night's rebuilt rows (`scope` not none) a table
   of its own, where the engine's estimate of them misleads its plan. DuckDB estimates the
   changed customers' valid orders from selectivity guesses (10M orders: 407k estimated),
   builds the semi-join's hash table on them, and so hashes every order (fct_orders at
   night: 2.1 s against 0.9 s materialized, docs/benchmarks.md). #}
{% macro materialized_rebuilt_rows(scope) -%}
    {%- if scope is not none -%}
        {{ return(adapter.dispatch('materialized_rebuilt_rows', 'retention')()) }}
    {%- endif -%}
{%- endmacro %}

{% macro default__materialized_rebuilt_rows() -%}
{%- endmacro %}

{% macro duckdb__materialized_rebuilt_rows() -%}
    materialized
{%- endmacro %}

{# The first period of `grain` whose rows can differ: that of the earliest changed order, or
   that of the day after the earlier of the previous and the current as-of date (a period
   that ended by both dates is complete in both builds). #}
{% macro first_rebuilt_period(grain, scope) -%}
    {%- set earlier_as_of = 'least(' ~ date_literal(scope.as_of_date) ~ ', '
        ~ current_as_of_date() ~ ')' -%}
    {%- set dates = [add_days(earlier_as_of, 1)] -%}
    {%- if scope.since_date is not none -%}
        {%- do dates.append(date_literal(scope.since_date)) -%}
    {%- endif -%}
    {{ period_start(grain, 'least(' ~ dates | join(', ') ~ ')') }}
{%- endmacro %}

{# Whether a row's period (its columns grain and period_start, of `alias` if given) is
   rebuilt; with `look_back`, from the period before each grain's first rebuilt one, which a
   period's start reads. #}
{% macro in_rebuilt_periods(scope, look_back=false, alias=none) -%}
    {%- set prefix = alias ~ '.' if alias else '' -%}
    case {{ prefix }}grain
    {%- for grain in calendar_grains() %}
        {%- set first = first_rebuilt_period(grain, scope) %}
        when '{{ grain }}' then {{ prefix }}period_start >= {{
            previous_period_start(grain, first) if look_back else first }}
    {%- endfor %}
    end
{%- endmacro %}

{# By name, not ref(): a hook's ref() would become a dependency of the model (and an input
   of its unit tests); int_run__as_of is upstream of every model calling this anyway. #}
{% macro current_as_of_date() -%}
    (select as_of_date from {{ intermediate_table('int_run__as_of') }})
{%- endmacro %}

{# Pre-hook: removes the rows this model is about to rebuild, all of them when it rebuilds
   whole; first the changes it `records`: the orders loads touched, or the orders the as-of
   date's move brings in or drops; and with `lineage`, updates the lineage of the orders
   re-sent unchanged. #}
{% macro delete_rebuilt_rows(kind, records, lineage) %}
    {% if is_incremental() %}
        {% set scope = incremental_scope() %}
        {% if scope is not none and records == 'loads' %}
            {{ record_loaded_changes(scope) }};
        {% elif scope is not none and records == 'as_of' %}
            {{ record_as_of_changes(scope) }};
        {% endif %}
        {% if scope is not none and lineage %}
            {{ refresh_lineage(scope) }};
        {% endif %}
        delete from {{ this }}
        {% if scope is not none %} where {{ rebuilt_rows(kind, scope) }} {% endif %}
    {% endif %}
{% endmacro %}

{# The orders that loads after the previous build touched: each new version, and the
   current version (with its customer and date then) of every order a new load re-sent or
   may have deleted: by its window's days (replaced 'window'), or all of the source's
   (replaced 'source', and loads from before the column). Then the changes every
   incremental model has applied are dropped. #}
{% macro record_loaded_changes(scope) %}
    {%- set raw_orders = source('raw', 'orders') -%}
    {%- set loaded = raw_orders ~ ' where load_sequence > ' ~ scope.through_load_sequence -%}
    delete from {{ intermediate_table('incremental_changes') }}
    where changed_at <= (
        select min(built_at) from (
            select model_name, max(built_at) as built_at
            from {{ intermediate_table('incremental_builds') }}
            group by model_name
        ) as latest
    );
    insert into {{ intermediate_table('incremental_changes') }}
    select {{ build_stamp() }}, order_id, customer_id, order_date, null, false
    from {{ loaded }}
    union all
    select
        {{ build_stamp() }},
        previous.order_id,
        previous.customer_id,
        previous.order_date,
        {{ version_hash('previous') }},
        false
    from {{ this }} as previous
    {#- One list of order ids: "in (loaded) or exists (window)" made DuckDB carry every
        order's columns through both semi-joins (1.1 s against 0.65 s at 10M). #}
    where previous.order_id in (
        select order_id from {{ loaded }}
        union all
        select in_window.order_id
        from {{ this }} as in_window
        where exists (
            select 1 from {{ source('raw', 'load_audit') }} as loads
            where
                loads.load_sequence > {{ scope.through_load_sequence }}
                and loads.status = 'succeeded'
                and loads.source = in_window.source
                and (
                    coalesce(loads.replaced, 'source') = 'source'
                    or (
                        loads.replaced = 'window'
                        and in_window.order_date <= loads.window_last
                        and (
                            loads.window_first is null
                            or in_window.order_date >= loads.window_first
                        )
                    )
                )
        )
    )
{% endmacro %}

{# The columns of stg_orders__orders besides its key (order_id) and lineage (load_id,
   source, source_row); the test assert_version_hash_covers_staged_orders keeps the list
   whole. #}
{% macro version_hash_columns() -%}
    {{ return([
        'customer_id', 'ordered_at', 'order_date', 'updated_at', 'gross_amount',
        'refunded_amount', 'currency', 'fx_rate', 'original_gross_amount',
        'original_refunded_amount', 'order_status', 'source_status', 'channel',
        'customer_email_hash', 'line_count', 'refund_rows',
    ]) }}
{%- endmacro %}

{# What a version of an order holds besides its lineage, as one hash: equal hashes, the
   same order for every model downstream. #}
{% macro version_hash(alias) -%}
    {%- set columns = version_hash_columns() -%}
    md5(
        {%- for column in columns %}
        coalesce(cast({{ alias }}.{{ column }} as {{ dbt.type_string() }}), '~')
        {{- " || '|' ||" if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}

{# Post-hook of the model recording loads: the orders of this build whose new version hashes
   like the one it replaced were re-sent unchanged; their changes are lineage only. #}
{% macro mark_lineage_only_changes() %}
    {%- set changes = intermediate_table('incremental_changes') -%}
    {#- Hashes only the rebuilt orders' new versions: hashing every order cost seconds. #}
    update {{ changes }} set is_lineage_only = true
    where
        changed_at = {{ build_stamp() }}
        and order_id in (
            select previous.order_id
            from {{ changes }} as previous
            inner join (
                select order_id, {{ version_hash('rebuilt') }} as version_hash
                from {{ this }} as rebuilt
                where order_id in (
                    select order_id from {{ changes }}
                    where changed_at = {{ build_stamp() }} and version_hash is not null
                )
            ) as current_version
                on previous.order_id = current_version.order_id
            where
                previous.changed_at = {{ build_stamp() }}
                and previous.version_hash = current_version.version_hash
        )
{% endmacro %}

{# The orders re-sent unchanged since this model's last build take their current lineage. #}
{% macro refresh_lineage(scope) %}
    update {{ this }} as orders
    set
        load_id = current_version.load_id,
        source = current_version.source,
        source_row = current_version.source_row
    from (
        select order_id, load_id, source, source_row
        from {{ ref('int_orders__classified') }}
        where order_id in (
            select order_id from {{ intermediate_table('incremental_changes') }}
            where {{ scope.since }} and is_lineage_only
        )
    ) as current_version
    where orders.order_id = current_version.order_id
{% endmacro %}

{# Orders dated between the previous and the current as-of date: the move adds or drops them. #}
{% macro record_as_of_changes(scope) %}
    insert into {{ intermediate_table('incremental_changes') }}
    select {{ build_stamp() }}, order_id, customer_id, order_date, null, false
    from {{ ref('int_orders__classified') }}
    where
        order_date > least({{ date_literal(scope.as_of_date) }}, {{ current_as_of_date() }})
        and order_date <= greatest({{ date_literal(scope.as_of_date) }}, {{ current_as_of_date() }})
{% endmacro %}

{# Post-hook: records this build, with the rows it rebuilt as a condition on the model's
   columns (null: the whole table), which the data tests marked `where: __rebuilt_rows__`
   read. A model that records changes also tells the models downstream to rebuild whole
   after a whole rebuild here. The model recording loads is upstream of the as-of date, so
   its build has none. #}
{% macro record_build(kind, records) %}
    {% if target.type != 'spark' %}
        {% set scope = incremental_scope() %}
        {% if records and scope is none %}
            insert into {{ intermediate_table('incremental_changes') }}
            values ({{ build_stamp() }}, null, null, null, null, false);
        {% elif records == 'loads' %}
            {{ mark_lineage_only_changes() }};
        {% endif %}
        insert into {{ intermediate_table('incremental_builds') }}
        select
            '{{ this.identifier }}',
            {{ build_stamp() }},
            (select coalesce(max(load_sequence), 0) from {{ source('raw', 'load_audit') }}),
            {% if records == 'loads' %} null {% else %}
            {{ current_as_of_date() }} {% endif %},
            '{{ build_fingerprint() }}',
            {% if scope is none %} null {% else %}
            '{{ rebuilt_rows(kind, scope) | replace("'", "''") }}' {% endif %}
    {% endif %}
{% endmacro %}

{# The rows of `relation` its last build rebuilt, as a condition on its columns; none when
   that build rebuilt it whole or it is not incremental. #}
{% macro last_rebuilt_rows(relation) %}
    {% if not execute or target.type == 'spark' %}
        {{ return(none) }}
    {% endif %}
    {% set last_build = run_query(
        "select rebuilt_rows from " ~ intermediate_table('incremental_builds')
        ~ " where model_name = '" ~ relation.identifier ~ "' order by built_at desc limit 1"
    ) %}
    {{ return(last_build.rows[0][0] if last_build.rows | length > 0 else none) }}
{% endmacro %}

{# dbt's own, plus the `where` value __rebuilt_rows__: a data test of an incremental model
   checks only the rows its last build rebuilt, the rest having passed when they were built.
   For tests of rows, and of keys that hold the column the model rebuilds by (the month, the
   customer, the order): a night's tests then cost what its changes do, not the history. #}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where == '__rebuilt_rows__' -%}
        {%- set where = last_rebuilt_rows(relation) -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
