import dagster as dg

from retention_pipeline.lib.marketing import read_spend, write_spend
from retention_pipeline.lib.settings import (
    WAREHOUSE_POOL,
    active_config,
    daily_partitions,
    warehouse_kind,
)
from retention_pipeline.lib.warehouse import open_warehouse

RAW_MARKETING_SPEND = dg.AssetKey(["raw", "marketing_spend"])
RAW_REJECTED_SPEND = dg.AssetKey(["raw", "rejected_marketing_spend"])
SPEND_ROWS_CHECK = "marketing_spend_rows_valid"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_MARKETING_SPEND,
            description=(
                "Marketing spend (date, channel, spend) from the optional marketing_spend "
                "file, replaced whole every run; empty when none is configured."
            ),
            group_name="extraction",
            kinds={"polars", warehouse_kind()},
        ),
        dg.AssetSpec(
            RAW_REJECTED_SPEND,
            description="Marketing spend rows quarantined with their reason.",
            group_name="extraction",
            kinds={warehouse_kind()},
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            SPEND_ROWS_CHECK,
            asset=RAW_MARKETING_SPEND,
            blocking=False,
            description="Every marketing spend row was readable (none quarantined).",
        )
    ],
    # The spend is small and read whole, so a run of any partitions replaces all of it; the
    # partitions only keep it in the same runs as the orders.
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def raw_marketing_spend(context: dg.AssetExecutionContext):
    """Reads the configured marketing spend and replaces it in the raw layer."""
    pipeline = active_config()
    batch = read_spend(pipeline)
    with open_warehouse(pipeline) as con:
        load_id = write_spend(con, batch)
    configured = pipeline.marketing_spend is not None
    context.log.info(
        f"marketing spend load {load_id}: read {batch.rows_read}, loaded {batch.spend.height}, "
        f"rejected {batch.rejected.height}"
        + ("" if configured else " (no marketing_spend configured)")
    )
    total = float(batch.spend["spend"].sum()) if batch.spend.height else 0.0
    yield dg.MaterializeResult(
        asset_key=RAW_MARKETING_SPEND,
        metadata={
            "load_id": load_id,
            "configured": configured,
            "rows_loaded": batch.spend.height,
            "total_spend": total,
        },
    )
    yield dg.MaterializeResult(
        asset_key=RAW_REJECTED_SPEND,
        metadata={"load_id": load_id, "rows_rejected": batch.rejected.height},
    )
    reasons = batch.rejected["reason_code"].value_counts(sort=True).rows()
    yield dg.AssetCheckResult(
        asset_key=RAW_MARKETING_SPEND,
        check_name=SPEND_ROWS_CHECK,
        passed=batch.rejected.height == 0,
        # A bad spend row must not stop the retention tables: it warns, and waits in
        # raw.rejected_marketing_spend.
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows_read": batch.rows_read,
            "rows_rejected": batch.rejected.height,
            "reasons": dict(reasons) if reasons else {},
        },
    )
