{# The segment rules of SPEC, shared by a month's state and the month before's
   (customer_segment_history computes both in one row). #}

{# The named RFM segment of a recency and a frequency score (1-5). #}
{% macro rfm_segment(recency_score, frequency_score) -%}
    case
        when {{ recency_score }} = 5 and {{ frequency_score }} >= 4 then 'champions'
        when {{ recency_score }} >= 3 and {{ frequency_score }} >= 4 then 'loyal'
        when {{ recency_score }} >= 4 and {{ frequency_score }} >= 2 then 'potential_loyalists'
        when {{ recency_score }} = 5 then 'new'
        when {{ recency_score }} = 4 then 'promising'
        when {{ recency_score }} = 3 and {{ frequency_score }} = 3 then 'need_attention'
        when {{ recency_score }} = 3 then 'about_to_sleep'
        when {{ frequency_score }} = 5 then 'cant_lose'
        when {{ frequency_score }} >= 3 then 'at_risk'
        else 'hibernating'
    end
{%- endmacro %}

{# A gap longer than the window before the last order means the customer had churned
   before it (reactivated); no gap means the last order was the first (new). #}
{% macro lifecycle_state(days_since_last_order, days_since_previous_order) -%}
    {%- set window_days = var('active_window_days') -%}
    case
        when {{ days_since_last_order }} >= {{ window_days }} then 'churned'
        when {{ days_since_last_order }} >= {{ var('at_risk_days') or (window_days // 2) }}
            then 'at_risk'
        when {{ days_since_previous_order }} is null then 'new'
        when {{ days_since_previous_order }} > {{ window_days }} then 'reactivated'
        else 'returning'
    end
{%- endmacro %}

{# The tier of a customer's net revenue, from the month's bounds: the last VIP's and the
   last pre-VIP's (net revenue, customer_id), ranked by revenue descending, then by
   customer_id ascending; the bounds are the columns named with `bounds_prefix`. #}
{% macro tier(net_revenue, customer_id, bounds_prefix) -%}
    case
        when
            {{ net_revenue }} > {{ bounds_prefix }}vip_net_revenue
            or (
                {{ net_revenue }} = {{ bounds_prefix }}vip_net_revenue
                and {{ customer_id }} <= {{ bounds_prefix }}vip_customer_id
            )
            then 'vip'
        when
            {{ net_revenue }} > {{ bounds_prefix }}pre_vip_net_revenue
            or (
                {{ net_revenue }} = {{ bounds_prefix }}pre_vip_net_revenue
                and {{ customer_id }} <= {{ bounds_prefix }}pre_vip_customer_id
            )
            then 'pre_vip'
        else 'standard'
    end
{%- endmacro %}

{# 1-5: one more for each of the month's quintile bounds of `measure` that `value` is above
   (ties share the lowest score); the bounds are the columns named with `bounds_prefix`. #}
{% macro quintile_score(value, bounds_prefix, measure) -%}
    1
    {%- for k in range(1, 5) %}
    + case when {{ value }} > {{ bounds_prefix }}{{ measure }}_bound_{{ k }} then 1 else 0 end
    {%- endfor %}
{%- endmacro %}

{# Whether a span of a customer's running totals (from a month with orders to the month
   before the next one) covers the calendar month. #}
{% macro span_covers_month(spans, calendar) -%}
    {{ spans }}.order_month <= {{ calendar }}.period_start
    and (
        {{ spans }}.next_order_month is null
        or {{ spans }}.next_order_month > {{ calendar }}.period_start
    )
{%- endmacro %}
