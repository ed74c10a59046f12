"""Types and checks the source rows: every row ends loaded, deduplicated or rejected.

A load covers a window of order dates. Rows that cannot be placed in any window (no
readable timestamp, or one far in the future) are read by every load and rejected by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

from retention_pipeline.lib.config import PipelineConfig

# Tried in order when the config names no timestamp_format; the first that parses wins.
NAIVE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y%m%d",
)
AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.fZ")
REJECTED_COLUMNS = ("source_row", "raw_record", "reason_code", "reason", "order_id", "order_date")


@dataclass(frozen=True)
class LoadWindow:
    """Order dates a load covers; `first` None means everything up to `last`."""

    first: date | None
    last: date


@dataclass
class LoadBatch:
    orders: pl.DataFrame
    rejected: pl.DataFrame
    rows_read: int
    rows_deduplicated: int


def _text(name: str) -> pl.Expr:
    value = pl.col(name).str.strip_chars()
    return pl.when(value == "").then(None).otherwise(value)


def _localize(naive: pl.Expr, timezone: str) -> pl.Expr:
    """Naive local wall time to naive UTC; a time skipped by a DST change moves one hour on."""
    if timezone == "UTC":
        return naive
    as_utc = [
        expr.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.replace_time_zone(None)
        for expr in (naive, naive + pl.duration(hours=1))
    ]
    return pl.coalesce(as_utc)


def timestamp_formats(rows: pl.LazyFrame, column: str, config: PipelineConfig) -> list[str]:
    """The configured format, else the default formats that read any of the first values:
    trying every format on every row would triple the cost of a load."""
    if config.source.timestamp_format:
        return [config.source.timestamp_format]
    sample = rows.select(_text(column).alias("value")).drop_nulls().head(1000).collect()
    fitting = [
        fmt
        for fmt in (*NAIVE_FORMATS, *AWARE_FORMATS)
        if sample.select(
            pl.col("value").str.to_datetime(fmt, strict=False, time_unit="us").is_not_null().any()
        ).item()
    ]
    return fitting or [*NAIVE_FORMATS, *AWARE_FORMATS]


def _parse_timestamp(name: str, formats: list[str], timezone: str) -> pl.Expr:
    value = _text(name)
    naive = [f for f in formats if "%z" not in f and not f.endswith("Z")]
    aware = [f for f in formats if f not in naive]
    candidates = []
    if naive:
        parsed = [value.str.to_datetime(f, strict=False, time_unit="us") for f in naive]
        candidates.append(_localize(pl.coalesce(parsed), timezone))
    candidates += [
        value.str.to_datetime(
            f, strict=False, time_unit="us", time_zone="UTC"
        ).dt.replace_time_zone(None)
        for f in aware
    ]
    return pl.coalesce(candidates)


def _number(name: str) -> pl.Expr:
    number = _text(name).cast(pl.Float64, strict=False)
    # 'NaN' and 'inf' cast to floats but are no amounts.
    return pl.when(number.is_finite()).then(number)


def _local_date(utc: pl.Expr, timezone: str) -> pl.Expr:
    return utc.dt.replace_time_zone("UTC").dt.convert_time_zone(timezone).dt.date()


def _first_failure(checks: list[tuple[pl.Expr, str, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    """(reason_code, reason) of the first failing check, null when all pass."""
    code = pl.lit(None, dtype=pl.String)
    text = pl.lit(None, dtype=pl.String)
    for failed, reason_code, reason in reversed(checks):
        code = pl.when(failed).then(pl.lit(reason_code)).otherwise(code)
        text = pl.when(failed).then(reason).otherwise(text)
    return code, text


def _typed_rows(rows: pl.LazyFrame, config: PipelineConfig) -> pl.LazyFrame:
    columns = config.source.columns
    present = set(rows.collect_schema().names())
    optional_text = {
        c: _text(c) if c in present else pl.lit(None, dtype=pl.String)
        for c in ("status", "currency", "channel", "customer_email", "updated_at")
    }
    if config.source.line_items:
        if "line_amount" in columns:
            amount = _number("line_amount")
        else:
            amount = _number("quantity") * _number("unit_price")
    else:
        amount = _number("amount")
    refunded = _number("refunded_amount") if "refunded_amount" in present else pl.lit(None)
    order_id = pl.col("source_row") if config.source.generate_order_id else _text("order_id")
    return rows.with_row_index("_seq").select(
        "_seq",
        "source_row",
        "raw_record",
        order_id.alias("order_id"),
        _text("customer_id").alias("customer_id"),
        _parse_timestamp(
            "ordered_at", timestamp_formats(rows, "ordered_at", config), config.source_timezone
        ).alias("ordered_at"),
        (
            _parse_timestamp(
                "updated_at", timestamp_formats(rows, "updated_at", config), config.source_timezone
            )
            if "updated_at" in present
            else pl.lit(None, dtype=pl.Datetime("us"))
        ).alias("updated_at"),
        amount.alias("amount"),
        refunded.cast(pl.Float64).alias("refunded_amount"),
        optional_text["status"].str.to_lowercase().alias("status"),
        optional_text["currency"]
        .str.to_uppercase()
        .fill_null(config.reporting_currency)
        .alias("currency"),
        optional_text["channel"].alias("channel"),
        optional_text["customer_email"].str.to_lowercase().alias("customer_email"),
        # Raw text kept to tell an empty value from an unreadable one.
        *[
            _text(c).alias(f"_raw_{c}")
            for c in (
                "ordered_at",
                "updated_at",
                "amount",
                "refunded_amount",
                "quantity",
                "unit_price",
                "line_amount",
            )
            if c in present
        ],
    )


def _parse_checks(config: PipelineConfig, present: set[str]) -> list[tuple[pl.Expr, str, pl.Expr]]:
    columns = config.source.columns
    amount_fields = (
        [f for f in ("line_amount", "quantity", "unit_price") if f in columns]
        if config.source.line_items
        else ["amount"]
    )
    checks = []
    if not config.source.generate_order_id:
        checks.append(
            (
                pl.col("order_id").is_null(),
                "missing_order_id",
                pl.lit(f"order_id is empty (source column '{columns.get('order_id')}')"),
            )
        )
    checks += [
        (
            pl.col("customer_id").is_null(),
            "missing_customer_id",
            pl.lit(f"customer_id is empty (source column '{columns['customer_id']}')"),
        ),
        (
            pl.col("ordered_at").is_null(),
            "unparseable_ordered_at",
            pl.format(
                "ordered_at '{}' (source column '{}') is not a timestamp; set "
                "source.timestamp_format if the file uses another format",
                pl.col("_raw_ordered_at").fill_null(""),
                pl.lit(columns["ordered_at"]),
            ),
        ),
    ]
    if "updated_at" in present:
        checks.append(
            (
                pl.col("updated_at").is_null() & pl.col("_raw_updated_at").is_not_null(),
                "unparseable_updated_at",
                pl.format(
                    "updated_at '{}' (source column '{}') is not a timestamp",
                    pl.col("_raw_updated_at"),
                    pl.lit(columns.get("updated_at")),
                ),
            )
        )
    checks.append(
        (
            pl.col("amount").is_null(),
            "unparseable_amount",
            pl.format(
                "{} is not a number (source columns: {})",
                pl.concat_str(
                    [pl.col(f"_raw_{f}").fill_null("''") for f in amount_fields], separator=" / "
                ),
                pl.lit(", ".join(f"{f}='{columns[f]}'" for f in amount_fields)),
            ),
        )
    )
    if "refunded_amount" in present:
        checks.append(
            (
                pl.col("refunded_amount").is_null() & pl.col("_raw_refunded_amount").is_not_null(),
                "unparseable_amount",
                pl.format("refunded_amount '{}' is not a number", pl.col("_raw_refunded_amount")),
            )
        )
    return checks


def _value_checks(config: PipelineConfig, now: datetime) -> list[tuple[pl.Expr, str, pl.Expr]]:
    horizon = _future_horizon(config, now)
    refunded = pl.col("refunded_amount").fill_null(0)
    return [
        (
            (pl.col("amount") < 0) | (refunded < 0),
            "negative_amount",
            pl.format("amount {} or refunded_amount {} is negative", pl.col("amount"), refunded),
        ),
        (
            refunded > pl.col("amount"),
            "refund_exceeds_amount",
            pl.format("refunded_amount {} exceeds amount {}", refunded, pl.col("amount")),
        ),
        (
            pl.col("currency") != config.reporting_currency,
            "unknown_currency",
            pl.format(
                "currency {} has no FX rate to the reporting currency {}",
                pl.col("currency"),
                pl.lit(config.reporting_currency),
            ),
        ),
        (
            pl.col("ordered_at") > horizon,
            "future_ordered_at",
            pl.format(
                "ordered_at {} is more than {} hours in the future; fix the timestamp or raise "
                "future_tolerance_hours",
                pl.col("ordered_at"),
                pl.lit(config.future_tolerance_hours),
            ),
        ),
    ]


def _future_horizon(config: PipelineConfig, now: datetime) -> datetime:
    return (now.astimezone(UTC) + timedelta(hours=config.future_tolerance_hours)).replace(
        tzinfo=None
    )


def _unplaceable(horizon: datetime) -> pl.Expr:
    """Rows no daily window can hold: no readable ordered_at, or one far in the future."""
    return pl.col("ordered_at").is_null() | (pl.col("ordered_at") > horizon)


def _in_window(window: LoadWindow, reporting_timezone: str, horizon: datetime) -> pl.Expr:
    order_date = _local_date(pl.col("ordered_at"), reporting_timezone)
    updated_date = _local_date(pl.col("updated_at"), reporting_timezone)
    after_first = pl.lit(True) if window.first is None else order_date >= window.first
    changed_in_window = (
        pl.lit(False)
        if window.first is None
        else (updated_date >= window.first) & (updated_date <= window.last)
    )
    return _unplaceable(horizon) | (
        (order_date <= window.last) & (after_first | changed_in_window.fill_null(False))
    )


ORDER_FIELDS = (
    "order_id",
    "customer_id",
    "ordered_at",
    "updated_at",
    "amount",
    "refunded_amount",
    "currency",
    "status",
    "channel",
    "customer_email",
)


def _aggregate_lines(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Order lines to orders: amounts add up, the earliest line's timestamp is the order's."""
    return lines.group_by("order_id").agg(
        pl.col("_seq").min(),
        pl.col("source_row").first(),
        pl.col("raw_record").first(),
        pl.col("customer_id").first(),
        pl.col("ordered_at").min(),
        pl.col("updated_at").max(),
        pl.col("amount").sum(),
        pl.col("refunded_amount").sum(),
        *[pl.col(c).first() for c in ("currency", "status", "channel", "customer_email")],
        pl.len().alias("line_count"),
    )


def _resolve_versions(orders: pl.DataFrame) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """Newest version of each order_id wins; returns (winners, deduplicated, conflicts)."""
    ranked = (
        orders.sort(["order_id", "updated_at", "_seq"], nulls_last=False)
        .with_columns(pl.struct(list(ORDER_FIELDS)).hash().alias("_content"))
        .with_columns(
            (pl.col("_seq") == pl.col("_seq").last().over("order_id")).alias("_newest"),
            pl.col("_content").last().over("order_id").alias("_newest_content"),
            pl.col("updated_at").last().over("order_id").alias("_newest_updated_at"),
        )
    )
    older = ranked.filter(~pl.col("_newest"))
    same_time = (pl.col("updated_at") == pl.col("_newest_updated_at")) | (
        pl.col("updated_at").is_null() & pl.col("_newest_updated_at").is_null()
    )
    conflict = older.filter(same_time & (pl.col("_content") != pl.col("_newest_content")))
    winners = ranked.filter(pl.col("_newest"))
    return winners, older.height - conflict.height, conflict


def validate(
    rows: pl.LazyFrame, config: PipelineConfig, window: LoadWindow, now: datetime
) -> LoadBatch:
    present = set(rows.collect_schema().names())
    typed = _typed_rows(rows, config)
    line_mode = config.source.line_items
    parse_code, parse_reason = _first_failure(_parse_checks(config, present))
    value_code, value_reason = _first_failure(_value_checks(config, now))
    typed = typed.with_columns(parse_code.alias("reason_code"), parse_reason.alias("reason"))
    if not line_mode:
        typed = typed.with_columns(
            pl.coalesce("reason_code", value_code).alias("reason_code"),
            pl.coalesce("reason", value_reason).alias("reason"),
        )
    rows_in_window = typed.filter(
        _in_window(window, config.reporting_timezone, _future_horizon(config, now))
    ).collect()
    # Line mode places an order by its earliest line, so the window applies to whole orders.
    if line_mode:
        good_lines = rows_in_window.filter(pl.col("reason_code").is_null())
        orders = (
            _aggregate_lines(good_lines.lazy())
            .with_columns(value_code.alias("reason_code"), value_reason.alias("reason"))
            .collect()
        )
        bad_orders = orders.filter(pl.col("reason_code").is_not_null())
        line_rejects = good_lines.drop("reason_code", "reason").join(
            bad_orders.select("order_id", "reason_code", "reason"), on="order_id"
        )
        rejected = pl.concat(
            [rows_in_window.filter(pl.col("reason_code").is_not_null()), line_rejects],
            how="diagonal_relaxed",
        )
        loaded = orders.filter(pl.col("reason_code").is_null())
        deduplicated = 0
    else:
        loaded, deduplicated, conflicts = _resolve_versions(
            rows_in_window.filter(pl.col("reason_code").is_null())
        )
        conflicts = conflicts.with_columns(
            pl.lit("duplicate_conflict").alias("reason_code"),
            pl.format(
                "order_id {} appears again with the same updated_at but different content; "
                "the row read last was kept",
                pl.col("order_id"),
            ).alias("reason"),
        )
        rejected = pl.concat(
            [rows_in_window.filter(pl.col("reason_code").is_not_null()), conflicts],
            how="diagonal_relaxed",
        )
        loaded = loaded.with_columns(pl.lit(1, dtype=pl.UInt32).alias("line_count"))
    placeable = ~_unplaceable(_future_horizon(config, now))
    rejected = rejected.with_columns(
        pl.when(placeable)
        .then(_local_date(pl.col("ordered_at"), config.reporting_timezone))
        .alias("order_date")
    ).select(REJECTED_COLUMNS)
    loaded = loaded.with_columns(
        _local_date(pl.col("ordered_at"), config.reporting_timezone).alias("order_date")
    ).select(*ORDER_FIELDS, "order_date", "line_count", "source_row")
    return LoadBatch(
        orders=loaded,
        rejected=rejected,
        rows_read=rows_in_window.height,
        rows_deduplicated=deduplicated,
    )
