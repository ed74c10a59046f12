import dagster as dg

from retention_pipeline.lib.report import render_report, report_path
from retention_pipeline.lib.settings import WAREHOUSE_POOL, active_config, daily_partitions

# The marts the report reads (the charts' tables are in lib/report.py, CHARTS).
REPORT_SOURCES = (
    "cohort_retention",
    "retention_rates",
    "kpi_periodic",
    "customer_base_daily",
    "customer_segments",
)


@dg.asset(
    deps=REPORT_SOURCES,
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    # It only reads, but DuckDB lets no reader in while another run writes the file.
    pool=WAREHOUSE_POOL,
    group_name="publishing",
    kinds={"html", "matplotlib"},
)
def retention_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The retention report for people: retention_report.html beside the warehouse (the
    charts inline, the last complete month's numbers), its charts as PNG files in
    retention_report_images/, and the charts in this asset's metadata for the Dagster UI."""
    config = active_config()
    report = render_report(
        config.warehouse_path,
        report_path(config.warehouse_path),
        currency=config.reporting_currency,
        window_days=config.active_window_days,
    )
    # The charts describe the whole warehouse, not a day: a backfill of many days carries
    # them on its last day's materialization only, not a copy per partition.
    context.add_asset_metadata(
        {name: dg.MetadataValue.md(report.image_markdown(name)) for name in report.images},
        partition_key=context.partition_key_range.end,
    )
    headline = report.headline
    metadata = {
        "report": dg.MetadataValue.path(str(report.path)),
        "as_of": str(report.as_of),
        "charts_missing": dg.MetadataValue.json(report.missing),
    }
    if headline is not None:
        numbers = {
            "month": f"{headline.month:%Y-%m}",
            "crr": headline.crr,
            "churn_rate": headline.churn_rate,
            "buying_customers": headline.buying_customers,
            "repeat_purchase_rate": headline.repeat_purchase_rate,
            "net_revenue": headline.net_revenue,
        }
        metadata |= {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in numbers.items()
            if value is not None
        }
    return dg.MaterializeResult(metadata=metadata)
