import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from retention_pipeline.lib.config import PipelineConfig
from retention_pipeline.lib.database import (
    extract_to_parquet,
    scan_database_rows,
    watermark_since,
)
from retention_pipeline.lib.disk import check_free_disk
from retention_pipeline.lib.extract import scan_source_rows
from retention_pipeline.lib.quarantine import LoadWindow, newest_update, validate_in_parts
from retention_pipeline.lib.settings import (
    WAREHOUSE_POOL,
    active_config,
    daily_partitions,
    warehouse_kind,
)
from retention_pipeline.lib.warehouse import (
    LoadResult,
    open_warehouse,
    read_watermark,
    record_failed_load,
    write_load,
)

RAW_ORDERS = dg.AssetKey(["raw", "orders"])
RAW_REJECTED = dg.AssetKey(["raw", "rejected_orders"])
RAW_LOAD_AUDIT = dg.AssetKey(["raw", "load_audit"])
RAW_FX_RATES = dg.AssetKey(["raw", "fx_rates"])
ROW_ACCOUNTING_CHECK = "row_accounting_balances"


class RawLoadConfig(dg.Config):
    full_history: bool = False
    """Load every order up to the run's last day, not only the run's days."""
    lookback_days: int = 0
    """Also reload this many days before the run's first day, for late-arriving orders."""
    full_resync: bool = False
    """Database sources: read the whole source again, ignoring the updated_at watermark."""


def load_window(context: dg.AssetExecutionContext, config: RawLoadConfig) -> LoadWindow:
    """The order dates this load covers: the run's partitions, widened by the run config.
    A range that starts at the first partition also takes every earlier order."""
    window = context.partition_time_window
    first = window.start.date() - timedelta(days=config.lookback_days)
    last = window.end.date() - timedelta(days=1)
    from_beginning = config.full_history or first <= active_config().schedule.partitions_start
    return LoadWindow(first=None if from_beginning else first, last=last)


def _day_end(day: date, timezone: str) -> datetime:
    """The instant (naive UTC) the local `day` ends."""
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=ZoneInfo(timezone))
    return end.astimezone(UTC).replace(tzinfo=None)


def _load_database(
    context: dg.AssetExecutionContext,
    pipeline: PipelineConfig,
    window: LoadWindow,
    config: RawLoadConfig,
    started_at: datetime,
) -> LoadResult:
    """Reads the rows changed since the source's watermark (every row on the first run, on a
    full re-sync, or without a mapped updated_at) and replaces the orders read, whatever
    their order date; `window` holds every order date up to the run's last day."""
    source = pipeline.source
    incremental = "updated_at" in source.columns and not config.full_resync
    with open_warehouse(pipeline) as con:
        previous = read_watermark(con, source.name) if incremental else None
    since = None if previous is None else watermark_since(pipeline, previous)
    with tempfile.TemporaryDirectory(prefix="retention-extract-") as folder:
        spill = Path(folder) / "rows.parquet"
        extracted = extract_to_parquet(pipeline, since, spill)
        context.log.info(
            f"read {extracted} rows from the {source.type} source "
            + (f"updated since {since} ({pipeline.source_timezone})" if since else "in full")
        )
        rows = scan_database_rows(pipeline, spill)
        watermark = None
        if "updated_at" in source.columns:
            # Rows of later days are not loaded by this run: the watermark stays before them.
            newest = newest_update(
                rows, pipeline, _day_end(window.last, pipeline.reporting_timezone)
            )
            watermark = max((w for w in (previous, newest) if w is not None), default=None)
        with open_warehouse(pipeline) as con:
            return write_load(
                con,
                source.name,
                window,
                validate_in_parts(rows, pipeline, window, started_at),
                started_at,
                hash_emails="customer_email" in source.columns,
                replace="source" if previous is None else "orders",
                watermark=watermark,
            )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_ORDERS,
            description="Orders landed from the source, newest version per load.",
            group_name="extraction",
            kinds={"polars", warehouse_kind()},
        ),
        dg.AssetSpec(
            RAW_REJECTED,
            description="Quarantined source rows with their reason.",
            group_name="extraction",
            kinds={warehouse_kind()},
        ),
        dg.AssetSpec(
            RAW_LOAD_AUDIT,
            description="One row per load with its row accounting.",
            group_name="extraction",
            kinds={warehouse_kind()},
        ),
        dg.AssetSpec(
            RAW_FX_RATES,
            description="The FX rates of the config's fx_rates input (empty without one).",
            group_name="extraction",
            kinds={"polars", warehouse_kind()},
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            ROW_ACCOUNTING_CHECK,
            asset=RAW_LOAD_AUDIT,
            blocking=True,
            description="rows read = rows loaded + rows rejected + rows deduplicated",
        )
    ],
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def raw_orders(context: dg.AssetExecutionContext, config: RawLoadConfig):
    """Reads the configured source for the run's days and replaces them in the raw layer."""
    pipeline = active_config()
    window = load_window(context, config)
    started_at = datetime.now(UTC)
    source = pipeline.source.name
    hash_emails = "customer_email" in pipeline.source.columns
    try:
        check_free_disk(pipeline)
        if pipeline.source.is_database:
            window = LoadWindow(first=None, last=window.last)
            result = _load_database(context, pipeline, window, config, started_at)
        else:
            batches = validate_in_parts(scan_source_rows(pipeline), pipeline, window, started_at)
            with open_warehouse(pipeline) as con:
                result = write_load(con, source, window, batches, started_at, hash_emails)
    except Exception as exc:
        with open_warehouse(pipeline) as con:
            record_failed_load(con, source, window, started_at, str(exc))
        raise
    context.log.info(
        f"load {result.load_id}: read {result.rows_read}, loaded {result.rows_loaded}, "
        f"rejected {result.rows_rejected}, deduplicated {result.rows_deduplicated}"
    )
    window_text = f"{window.first or 'beginning'} .. {window.last}"
    yield dg.MaterializeResult(
        asset_key=RAW_ORDERS,
        metadata={
            "load_id": result.load_id,
            "rows_loaded": result.rows_loaded,
            "window": window_text,
        },
    )
    yield dg.MaterializeResult(
        asset_key=RAW_REJECTED,
        metadata={"load_id": result.load_id, "rows_rejected": result.rows_rejected},
    )
    yield dg.MaterializeResult(
        asset_key=RAW_LOAD_AUDIT,
        metadata={
            "load_id": result.load_id,
            "rows_read": result.rows_read,
            "rows_deduplicated": result.rows_deduplicated,
        },
    )
    yield dg.MaterializeResult(
        asset_key=RAW_FX_RATES,
        metadata={
            "load_id": result.load_id,
            "rates": result.fx_rates,
        },
    )
    yield dg.AssetCheckResult(
        asset_key=RAW_LOAD_AUDIT,
        check_name=ROW_ACCOUNTING_CHECK,
        passed=result.balanced,
        metadata={
            "rows_read": result.rows_read,
            "rows_loaded": result.rows_loaded,
            "rows_rejected": result.rows_rejected,
            "rows_deduplicated": result.rows_deduplicated,
        },
    )
