"""The short report printed after a command-line run."""

from __future__ import annotations

from retention_pipeline.lib.publish import published_location
from retention_pipeline.lib.runner import RunOutcome
from retention_pipeline.lib.warehouse import connect, marts_file, warehouse_label

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
    print(f"warehouse: {warehouse_label(outcome.config)}")
    print(f"BI reads: {published_location(outcome.config)}")
