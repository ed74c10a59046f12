"""The engine floor: the fewest DuckDB statements that compute SPEC's headline tables from
the generated Parquet file, with the pipeline's definitions, in an in-memory DuckDB.

The tables: `cohort_retention` (day, week, month, quarter), `retention_rates` on the activity
base (week, month, quarter, year), `customer_base_daily`, and `kpi_daily` / `kpi_periodic`
(`kpis`, one table with a grain column) with the column contract's measures. Left out: the
window base of `retention_rates` and `simple_ltv` (which needs it), `customer_segments`,
`customer_ltv` (a SciPy fit, no DuckDB query) and the load bookkeeping. So the floor is still
lower than the pipeline's real work. `tests/test_benchmark_floor.py` checks every cell of
these tables against the pipeline's marts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from retention_pipeline.lib.config import PipelineConfig

# Statement by statement; `$path` is the Parquet file or glob, {window_days} the active
# window and {currency} the reporting currency.
VALID_ORDERS = """
create temp table valid_orders as
with versions as (
    select
        order_id,
        customer_id,
        try_cast(ordered_at as timestamp) as ordered_at,
        lower(status) as status,
        -- without FX rates, an order in another currency is quarantined
        coalesce(nullif(upper(trim(currency)), ''), '{currency}') = '{currency}' as is_reported,
        try_cast(amount as decimal(18, 2))
            - coalesce(try_cast(refunded_amount as decimal(18, 2)), 0) as net_amount
    from read_parquet($path, filename = true, file_row_number = true)
    where customer_id <> '' and order_id <> ''
    -- the newest version of a repeated order id wins; of equal ones, the one read last
    qualify row_number() over (
        partition by order_id order by updated_at desc, filename desc, file_row_number desc
    ) = 1
)
select
    customer_id,
    cast(ordered_at as date) as order_date,
    net_amount,
    row_number() over (partition by customer_id order by ordered_at, order_id)
        as customer_order_number
from versions
-- orders dated in the future are quarantined, as the pipeline does
where ordered_at <= cast(now() as timestamp) and net_amount > 0 and is_reported
    and status not in ('cancelled', 'canceled', 'failed', 'voided', 'fraud', 'test')
"""

CUSTOMER_PERIODS = """
create temp table customer_periods as
select
    grains.grain,
    grains.step,
    valid_orders.customer_id,
    cast(date_trunc(grains.grain, valid_orders.order_date) as date) as period_start,
    count(*) as orders,
    sum(valid_orders.net_amount) as net_revenue,
    -- not null in the period of the customer's first order only
    sum(valid_orders.net_amount) filter (valid_orders.customer_order_number = 1) as new_revenue
from valid_orders
cross join (values
    ('day', interval 1 day), ('week', interval 7 day), ('month', interval 1 month),
    ('quarter', interval 3 month), ('year', interval 1 year)) as grains (grain, step)
group by all
"""

COHORT_RETENTION = """
create temp table cohort_retention as
with as_of as (select max(period_start) as as_of_date from customer_periods where grain = 'day'),
activity as (
    select
        grain, step, customer_id, period_start, net_revenue,
        min(period_start) over (partition by grain, customer_id) as cohort_start
    from customer_periods
    where grain <> 'year'
),
cells as (
    select grain, step, cohort_start, period_start,
        count(*) as active_customers, sum(net_revenue) as net_revenue
    from activity
    group by all
),
grid as (
    select cells.grain, cells.cohort_start, cells.active_customers as cohort_customers,
        cells.step, cast(unnest(generate_series(cast(cells.cohort_start as timestamp),
            cast(as_of.as_of_date as timestamp), cells.step)) as date) as period_start
    from cells
    cross join as_of
    where cells.period_start = cells.cohort_start
),
final as (
    select
        grid.grain, grid.cohort_start,
        date_diff(grid.grain, grid.cohort_start, grid.period_start) as period_number,
        grid.period_start, grid.cohort_customers,
        coalesce(cells.active_customers, 0) as active_customers,
        coalesce(cells.active_customers, 0) / grid.cohort_customers as retention_rate,
        coalesce(cells.net_revenue, 0) as net_revenue,
        sum(coalesce(cells.net_revenue, 0)) over (partition by grid.grain, grid.cohort_start
            order by grid.period_start) as cumulative_net_revenue,
        cumulative_net_revenue / grid.cohort_customers as cumulative_revenue_per_customer,
        grid.period_start + grid.step - interval 1 day <= as_of.as_of_date as is_complete
    from grid
    cross join as_of
    left join cells
        on grid.grain = cells.grain and grid.cohort_start = cells.cohort_start
        and grid.period_start = cells.period_start
)
select * from final
"""

RETENTION_RATES = """
create temp table retention_rates as
with as_of as (select max(period_start) as as_of_date from customer_periods where grain = 'day'),
activity as (
    select
        customer_periods.grain, customer_periods.period_start, customer_periods.step,
        customer_periods.period_start = min(customer_periods.period_start)
            over (partition by customer_periods.grain, customer_periods.customer_id) as is_new,
        lag(customer_periods.period_start) over customer_history
            = customer_periods.period_start - customer_periods.step as is_retained,
        coalesce(lead(customer_periods.period_start) over customer_history
            > customer_periods.period_start + customer_periods.step, true) as churns_next
    from customer_periods
    where customer_periods.grain <> 'day'
    window customer_history as (partition by customer_periods.grain,
        customer_periods.customer_id order by customer_periods.period_start)
),
ends as (
    select grain, period_start, any_value(step) as step, count(*) as customers_end,
        count(*) filter (is_new) as new_customers,
        count(*) filter (is_retained) as retained_customers
    from activity
    group by all
),
churn as (
    -- customers of a period with no order in the next one churn in the next one
    select grain, cast(period_start + step as date) as period_start,
        count(*) as churned_customers
    from activity
    where churns_next
    group by all
),
final as (
    select
        ends.grain, ends.period_start, 'activity' as base,
        ends.retained_customers + coalesce(churn.churned_customers, 0) as customers_start,
        ends.customers_end, ends.new_customers, ends.retained_customers,
        ends.customers_end - ends.new_customers - ends.retained_customers
            as reactivated_customers,
        coalesce(churn.churned_customers, 0) as churned_customers,
        (ends.customers_end - ends.new_customers) / nullif(customers_start, 0) as crr,
        ends.retained_customers / nullif(customers_start, 0) as retention_rate,
        coalesce(churn.churned_customers, 0) / nullif(customers_start, 0) as churn_rate,
        ends.period_start + ends.step - interval 1 day <= as_of.as_of_date as is_complete
    from ends
    cross join as_of
    left join churn on ends.grain = churn.grain and ends.period_start = churn.period_start
)
select * from final
"""

CUSTOMER_BASE_DAILY = """
create temp table customer_base_daily as
with days as (
    select
        period_start as order_date,
        period_start - lag(period_start) over customer_days as gap_before,
        lead(period_start) over customer_days - period_start as gap_after
    from customer_periods
    where grain = 'day'
    window customer_days as (partition by customer_id order by period_start)
),
events as (
    -- a customer is new on its first day, reactivated after a gap longer than the window,
    -- and churns the window's length after the last day of a run of orders
    select order_date as activity_date,
        count(*) filter (gap_before is null) as new_customers,
        count(*) filter (gap_before > {window_days}) as reactivated_customers,
        0 as churned_customers
    from days
    group by all
    union all
    select order_date + {window_days}, 0, 0, count(*)
    from days
    where coalesce(gap_after > {window_days}, true)
    group by all
),
moves as (
    select activity_date, sum(new_customers) as new_customers,
        sum(reactivated_customers) as reactivated_customers,
        sum(churned_customers) as churned_customers
    from events
    group by all
),
calendar as (
    select cast(unnest(generate_series(cast(min(period_start) as timestamp),
        cast(max(period_start) as timestamp), interval 1 day)) as date) as activity_date
    from customer_periods
    where grain = 'day'
),
final as (
    select
        calendar.activity_date,
        coalesce(moves.new_customers, 0) as new_customers,
        coalesce(moves.reactivated_customers, 0) as reactivated_customers,
        coalesce(moves.churned_customers, 0) as churned_customers,
        sum(coalesce(moves.new_customers, 0) + coalesce(moves.reactivated_customers, 0)
            - coalesce(moves.churned_customers, 0)) over (order by calendar.activity_date)
            as active_end
    from calendar
    left join moves on calendar.activity_date = moves.activity_date
)
select
    activity_date,
    active_end - new_customers - reactivated_customers + churned_customers as active_start,
    new_customers, reactivated_customers, churned_customers, active_end
from final
"""

KPIS = """
create temp table kpis as
with bounds as (
    select min(period_start) as first_day, max(period_start) as as_of_date
    from customer_periods
    where grain = 'day'
),
calendar as (
    select grains.grain, grains.step,
        cast(unnest(generate_series(
            cast(date_trunc(grains.grain, bounds.first_day) as timestamp),
            cast(bounds.as_of_date as timestamp), grains.step)) as date) as period_start
    from bounds
    cross join (values
        ('day', interval 1 day), ('week', interval 7 day), ('month', interval 1 month),
        ('quarter', interval 3 month), ('year', interval 1 year)) as grains (grain, step)
),
periods as (
    select calendar.grain, calendar.period_start,
        least(cast(calendar.period_start + calendar.step - interval 1 day as date),
            bounds.as_of_date) as effective_end,
        calendar.period_start + calendar.step - interval 1 day <= bounds.as_of_date
            as is_complete
    from calendar
    cross join bounds
),
buyers as (
    select grain, period_start, count(*) as buying_customers,
        count(new_revenue) as new_customers, sum(orders) as orders,
        sum(net_revenue) as net_revenue, coalesce(sum(new_revenue), 0) as new_revenue
    from customer_periods
    group by all
),
milestones as (
    -- customers reaching their first and their second valid order, by day
    select order_date,
        count(*) filter (customer_order_number = 1) as first_buyers,
        count(*) filter (customer_order_number = 2) as second_buyers
    from valid_orders
    where customer_order_number <= 2
    group by all
),
buyers_to_date as (
    select periods.period_start as activity_date,
        sum(coalesce(milestones.first_buyers, 0)) over (order by periods.period_start)
            as customers,
        sum(coalesce(milestones.second_buyers, 0)) over (order by periods.period_start)
            as repeat_customers
    from periods
    left join milestones on periods.period_start = milestones.order_date
    where periods.grain = 'day'
),
measures as (
    select periods.grain, periods.period_start, periods.is_complete,
        coalesce(buyers.orders, 0) as orders,
        coalesce(buyers.net_revenue, 0) as net_revenue,
        coalesce(buyers.buying_customers, 0) as buying_customers,
        coalesce(buyers.new_customers, 0) as new_customers,
        coalesce(buyers.new_revenue, 0) as new_revenue,
        coalesce(base.active_end, 0) as active_customers,
        to_date.repeat_customers / nullif(to_date.customers, 0) as repeat_purchase_rate
    from periods
    left join buyers
        on periods.grain = buyers.grain and periods.period_start = buyers.period_start
    left join customer_base_daily as base on periods.effective_end = base.activity_date
    left join buyers_to_date as to_date on periods.effective_end = to_date.activity_date
)
select
    grain, period_start, orders, net_revenue, buying_customers, new_customers,
    buying_customers - new_customers as returning_customers,
    (net_revenue - new_revenue) / nullif(net_revenue, 0) as returning_revenue_share,
    net_revenue / nullif(orders, 0) as aov,
    orders / nullif(buying_customers, 0) as purchase_frequency,
    active_customers,
    net_revenue / nullif(active_customers, 0) as arpu,
    net_revenue / nullif(buying_customers, 0) as arppu,
    repeat_purchase_rate, is_complete
from measures
"""

# The floor before the base and the KPIs were added (cohorts and activity rates only),
# still timed, so that ratios can be compared with earlier records.
COHORTS_AND_RATES = (VALID_ORDERS, CUSTOMER_PERIODS, COHORT_RETENTION, RETENTION_RATES)
HEADLINE_TABLES = ("cohort_retention", "retention_rates", "customer_base_daily", "kpis")


@dataclass(frozen=True)
class FloorTimes:
    cohorts_and_rates: float  # seconds to the end of COHORTS_AND_RATES
    headline: float  # seconds for every statement


def compute_floor(con: duckdb.DuckDBPyConnection, path: Path, config: PipelineConfig) -> FloorTimes:
    """Runs the floor's statements on `con` with the pipeline's active window and reporting
    currency, leaving HEADLINE_TABLES as temp tables."""
    currency = config.reporting_currency
    if not currency.isalpha():
        raise ValueError(f"reporting currency {currency!r} is no currency code")
    settings = {"window_days": int(config.active_window_days), "currency": currency}
    started = time.perf_counter()
    for statement in COHORTS_AND_RATES:
        con.execute(
            statement.format(**settings), {"path": str(path)} if "$path" in statement else None
        )
    cohorts_and_rates = time.perf_counter() - started
    for statement in (CUSTOMER_BASE_DAILY, KPIS):
        con.execute(statement.format(**settings))
    return FloorTimes(cohorts_and_rates, time.perf_counter() - started)
