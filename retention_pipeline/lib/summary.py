"""The short report printed after a command-line run."""

from __future__ import annotations

from retention_pipeline.lib.publish import published_location
from retention_pipeline.lib.runner import RunOutcome
from retention_pipeline.lib.warehouse import connect, marts_file, table_exists, warehouse_label

SUMMARY_TABLES = (
    "fct_orders",
    "dim_customers",
    "cohort_retention",
    "retention_rates",
    "customer_base_daily",
    "kpi_periodic",
    "kpi_daily",
    "customer_segments",
    "customer_segment_history",
    "segment_movements",
    "winback_candidates",
    "unit_economics",
    "customer_ltv",
    "clv_model_params",
    "clv_holdout_eval",
    "forecast_monthly",
    "rejected_orders",
    "load_audit",
)


def print_summary(outcome: RunOutcome) -> None:
    with marts_file(outcome.config) as path, connect(path, read_only=True) as con:
        print("\ntables built:")
        for table in SUMMARY_TABLES:
            rows = con.execute(f"select count(*) from main.{table}").fetchone()[0]
            print(f"  {table:<22} {rows:>10,} rows")
        as_of = con.execute("select as_of_date from intermediate.int_run__as_of").fetchone()[0]
        month = con.execute(
            """
            select period_start, crr, retention_rate, churn_rate,
                customers_start, customers_end, new_customers
            from main.retention_rates
            where grain = 'month' and base = 'activity' and is_complete
            order by period_start desc
            limit 1
            """
        ).fetchone()
        clv = _clv_lines(con)
        cac = con.execute(
            """
            select cohort_month, marketing_spend, new_customers, cac
            from main.unit_economics
            where acquisition_channel = 'all' and months_since_acquisition = 0 and is_complete
            order by cohort_month desc
            limit 1
            """
        ).fetchone()
    print(f"\nas-of date: {as_of}")
    if month and month[1] is not None:
        start, crr, retention, churn, s, e, n = month
        print(
            f"last complete month {start:%Y-%m}: CRR {crr:.1%}, retention {retention:.1%}, "
            f"churn {churn:.1%} (S={s:,}, E={e:,}, N={n:,})"
        )
    if cac and cac[3] is not None:
        cohort, spend, customers, value = cac
        print(
            f"CAC {cohort:%Y-%m} (all channels): {value:,.2f} "
            f"(spend {spend:,.2f}, {customers:,} new customers)"
        )
    for line in clv:
        print(line)
    print(f"warehouse: {warehouse_label(outcome.config)}")
    print(f"BI reads: {published_location(outcome.config)}")


def _clv_lines(con) -> list[str]:
    """The published CLV parameters, the holdout total and next year's forecast, and a
    warning when this run rejected a fit."""
    lines = []
    params = con.execute(
        "select model, parameter, value, time_unit, log_likelihood from main.clv_model_params "
        "order by model <> 'gamma_gamma' desc, model"
    ).fetchall()
    by_model: dict[str, list] = {}
    for model, parameter, value, unit, ll in params:
        by_model.setdefault(model, [unit, ll, []])[2].append(f"{parameter} {value:.4g}")
    for model, (unit, ll, values) in by_model.items():
        lines.append(f"CLV {model} ({unit}s): {', '.join(values)}; log-likelihood {ll:,.1f}")
    # The fit log lives beside the marts in a DuckDB warehouse (not in a PostgreSQL copy).
    rejected = []
    if table_exists(con, "raw", "clv_fit_attempts"):
        rejected = con.execute(
            "select model, problems from raw.clv_fit_attempts "
            "where purpose = 'production' and not is_accepted"
        ).fetchall()
    for model, problems in rejected:
        kept = "previous parameters kept" if model in by_model else "no parameters published"
        lines.append(f"WARNING: the {model} fit was rejected ({problems}); {kept}")
    total = con.execute(
        "select calibration_end, actual_purchases, predicted_purchases "
        "from main.clv_holdout_eval where frequency_bucket = 'all'"
    ).fetchone()
    if total:
        end, actual, predicted = total
        lines.append(
            f"CLV holdout after {end}: {predicted:,.0f} repeat purchases predicted, "
            f"{actual:,.0f} actual ({(predicted - actual) / max(actual, 1):+.1%})"
        )
    year = con.execute(
        "select sum(orders), sum(revenue), min(forecast_month), max(forecast_month) "
        "from main.forecast_monthly"
    ).fetchone()
    if year and year[0] is not None:
        orders, revenue, first, last = year
        lines.append(
            f"forecast {first:%Y-%m} to {last:%Y-%m}: {orders:,.0f} orders, revenue {revenue:,.2f}"
        )
    return lines
