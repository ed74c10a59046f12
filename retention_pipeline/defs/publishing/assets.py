import dagster as dg

from retention_pipeline.defs.transformation.assets import retention_dbt_models
from retention_pipeline.lib.publish import publish
from retention_pipeline.lib.report import render_report, report_path
from retention_pipeline.lib.settings import (
    WAREHOUSE_POOL,
    active_config,
    daily_partitions,
    warehouse_kind,
)
from retention_pipeline.lib.warehouse import marts_file, warehouse_label

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
    with marts_file(config) as marts:
        report = render_report(
            marts,
            report_path(config.warehouse_path),
            currency=config.reporting_currency,
            window_days=config.active_window_days,
            label=warehouse_label(config),
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


# Marts keep their bare names as asset keys; staging and intermediate models have a prefix.
# Python assets that write tables BI reads (the CLV tables) must join these deps, or the
# copy could be taken before they are written.
MART_KEYS = sorted(
    (key for key in retention_dbt_models.keys if len(key.path) == 1), key=lambda k: k.path
)


@dg.asset(
    deps=MART_KEYS,
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    group_name="publishing",
    kinds={"duckdb", "parquet"} if warehouse_kind() == "duckdb" else {"postgres"},
)
def published_marts(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The copy of the marts BI reads, swapped in whole once every mart is built and its
    checks passed (a failed check stops the run before this step, so the previous copy
    stays): on DuckDB a read-only snapshot file and a folder of Parquet files per table in
    warehouse.publish_dir, where only the parts (months of the large tables) whose rows
    changed are written again; on PostgreSQL the published schema, readable by the reader role."""
    config = active_config()
    published = publish(config)
    context.log.info(f"published {len(published.tables)} tables to {published.location}")
    metadata = {
        "version": published.version,
        "location": published.location,
        "tables": dg.MetadataValue.json(published.tables),
    }
    if published.parquet is not None:
        metadata["parquet"] = dg.MetadataValue.path(str(published.parquet))
        metadata["parts_written"] = published.parts_written
        metadata["parts_kept"] = published.parts_kept
    return dg.MaterializeResult(metadata=metadata)
