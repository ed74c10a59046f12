"""Types and checks the source rows: every row ends loaded, deduplicated or rejected.

A load covers a window of order dates, and reads each order it touches whole: every version
(or line) of it, wherever placed. Rows that cannot be placed in any window (no readable
timestamp, or one far in the future) are read by every load and rejected by it.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from retention_pipeline.lib.config import PipelineConfig
from retention_pipeline.lib.extract import encode_raw_records
from retention_pipeline.lib.fx import read_fx_rates

# Tried in order when the config names no timestamp_format; the first that parses wins.
# Whole seconds come before the same format with a fraction: Polars reads a fixed-width
# format several times faster, and leaves the general one only the rows it could not read.
NAIVE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y%m%d",
)
AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.fZ")
SAMPLE_SIZE = 1000  # first values of a column that choose its formats
REJECTED_COLUMNS = ("source_row", "raw_record", "reason_code", "reason", "order_id", "order_date")
# Source rows validated at a time: Polars holds about 1 KiB per row while it checks them.
ROWS_PER_PART = 4_000_000
# Up to this many parts, each part reads the source again; past it, the source is split once
# into a file per part. Here a split costs as much as about 11 more reads (benchmarks.md).
SPLIT_PAST_PARTS = 12
TIMESTAMP_COLUMNS = ("ordered_at", "updated_at")
# The formats that read each timestamp column, chosen once for the whole source.
TimestampFormats = dict[str, list[str]]


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
    fx_rates: pl.DataFrame | None = None


def _text(name: str) -> pl.Expr:
    stripped = pl.col(name).str.strip_chars()
    # Not replace("", None): that takes a query off Polars' streaming engine, which then holds
    # every row (8 GiB instead of 1.3 to read 30M source rows).
    return pl.when(stripped != "").then(stripped)


def _first_non_null(exprs: list[pl.Expr]) -> pl.Expr:
    """Like pl.coalesce, but as a when-chain: Polars then spends next to nothing on a later
    expression where an earlier one is set, while coalesce computes each in full."""
    first = exprs[-1]
    for expr in reversed(exprs[:-1]):
        first = pl.when(expr.is_not_null()).then(expr).otherwise(first)
    return first


def _localize(naive: pl.Expr, timezone: str) -> pl.Expr:
    """Naive local wall time to naive UTC. An ambiguous time is the earlier instant; a time
    skipped by a clock change reads with the offset in force before the change, as Python's
    zoneinfo does (fold=0): the offset a day earlier, whatever the size of the change."""
    if timezone == "UTC":
        return naive

    def to_utc(expr: pl.Expr) -> pl.Expr:
        return (
            expr.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
            .dt.replace_time_zone(None)
        )

    day = pl.duration(days=1)
    return _first_non_null([to_utc(naive), to_utc(naive - day) + day])


def timestamp_formats(rows: pl.LazyFrame, column: str, config: PipelineConfig) -> list[str]:
    """The configured format, else the default formats that read any of the first values:
    trying every format on every row would triple the cost of a load."""
    if config.source.timestamp_format:
        return [config.source.timestamp_format]
    values = rows.select(_text(column).alias("value"))
    # A head() after two filters (blank lines, then nulls) makes Polars read a whole CSV
    # file; after one it stops early. So look at the first rows, and further only if needed.
    sample = values.head(10 * SAMPLE_SIZE).drop_nulls().head(SAMPLE_SIZE).collect()
    if sample.height < SAMPLE_SIZE:
        sample = values.drop_nulls().head(SAMPLE_SIZE).collect()
    fitting = [
        fmt
        for fmt in (*NAIVE_FORMATS, *AWARE_FORMATS)
        if sample.select(
            pl.col("value").str.to_datetime(fmt, strict=False, time_unit="us").is_not_null().any()
        ).item()
    ]
    return fitting or [*NAIVE_FORMATS, *AWARE_FORMATS]


def _source_timestamp_formats(rows: pl.LazyFrame, config: PipelineConfig) -> TimestampFormats:
    present = rows.collect_schema().names()
    return {c: timestamp_formats(rows, c, config) for c in TIMESTAMP_COLUMNS if c in present}


def _parse_timestamp(name: str, formats: list[str], timezone: str) -> pl.Expr:
    """The stripped text in column `name` as naive UTC, by the first format that reads it."""
    value = pl.col(name)
    naive = [f for f in formats if "%z" not in f and not f.endswith("Z")]
    aware = [f for f in formats if f not in naive]
    candidates = []
    if naive:
        parsed = [value.str.to_datetime(f, strict=False, time_unit="us") for f in naive]
        candidates.append(_localize(_first_non_null(parsed), timezone))
    candidates += [
        value.str.to_datetime(
            f, strict=False, time_unit="us", time_zone="UTC"
        ).dt.replace_time_zone(None)
        for f in aware
    ]
    return _first_non_null(candidates).alias(name)


def _number(name: str) -> pl.Expr:
    number = _text(name).cast(pl.Float64, strict=False)
    # 'NaN' and 'inf' cast to floats but are no amounts.
    return pl.when(number.is_finite()).then(number)


def _local_date(utc: pl.Expr, timezone: str) -> pl.Expr:
    return utc.dt.replace_time_zone("UTC").dt.convert_time_zone(timezone).dt.date()


Check = tuple[pl.Expr, str, pl.Expr]  # (failed, reason_code, reason)


def _reason_code(checks: list[Check]) -> pl.Expr:
    """The code of the first failing check, null when all pass."""
    return pl.coalesce([pl.when(failed).then(pl.lit(code)) for failed, code, _ in checks])


def _reason(checks: list[Check]) -> pl.Expr:
    """The text of the first failing check. Formatting is costly, so it is made for the
    rejected rows only."""
    return pl.coalesce([pl.when(failed).then(reason) for failed, _, reason in checks])


def _order_id_columns(config: PipelineConfig, present: set[str]) -> tuple[pl.Expr, pl.Expr]:
    """A row's order_id and refund_of, as read from the source."""
    order_id = pl.col("source_row") if config.source.generate_order_id else _text("order_id")
    refund_of = _text("refund_of") if "refund_of" in present else pl.lit(None, dtype=pl.String)
    return order_id, refund_of


def _order_key_as_read(config: PipelineConfig, present: set[str]) -> pl.Expr:
    """`_order_key` (see `_dated_rows`) from the source's text, before any typing."""
    order_id, refund_of = _order_id_columns(config, present)
    return pl.coalesce(refund_of, order_id)


def _dated_rows(
    rows: pl.LazyFrame, config: PipelineConfig, formats: TimestampFormats | None = None
) -> pl.LazyFrame:
    """`rows` with order_id and the timestamps typed: what a load window needs. The other
    columns stay as read. `formats` default to those that read `rows`."""
    if formats is None:
        formats = _source_timestamp_formats(rows, config)
    present = set(rows.collect_schema().names())
    order_id, refund_of = _order_id_columns(config, present)
    timestamps = [c for c in TIMESTAMP_COLUMNS if c in present]
    parsed = [_parse_timestamp(c, formats[c], config.source_timezone) for c in timestamps]
    dated = (
        rows
        # Raw text kept to tell an empty value from an unreadable one. The stripped text gets
        # a column of its own: only then do later formats skip the rows earlier ones read.
        .with_columns(
            *[pl.col(c).alias(f"_raw_{c}") for c in timestamps],
            *[_text(c).alias(c) for c in timestamps],
        ).with_columns(
            order_id.alias("order_id"),
            refund_of.alias("refund_of"),
            *parsed,
        )
    )
    if "updated_at" not in present:
        dated = dated.with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("updated_at"))
    # The order a row belongs to: a refund row's original, else its own order_id. A load
    # reads orders whole by this key, refund rows included.
    return dated.with_columns(pl.coalesce("refund_of", "order_id").alias("_order_key"))


def _typed_rows(dated: pl.LazyFrame, config: PipelineConfig) -> pl.LazyFrame:
    """`_dated_rows` with the other fields typed."""
    columns = config.source.columns
    present = set(dated.collect_schema().names())

    def optional_text(name: str) -> pl.Expr:
        return _text(name) if name in present else pl.lit(None, dtype=pl.String)

    if config.source.line_items:
        if "line_amount" in columns:
            amount = _number("line_amount")
        else:
            amount = _number("quantity") * _number("unit_price")
    else:
        amount = _number("amount")
    refunded = _number("refunded_amount") if "refunded_amount" in present else pl.lit(None)
    is_refund = pl.col("refund_of").is_not_null()
    if config.source.negative_amounts_are_refunds:
        is_refund = is_refund | (amount < 0).fill_null(False)
    currency = optional_text("currency").str.to_uppercase()
    return dated.with_columns(
        is_refund.alias("_is_refund"),
    ).with_columns(
        _text("customer_id").alias("customer_id"),
        # A refund row's amount is what it refunds, however the source signs it.
        pl.when(pl.col("_is_refund")).then(amount.abs()).otherwise(amount).alias("amount"),
        refunded.cast(pl.Float64).alias("refunded_amount"),
        optional_text("status").str.to_lowercase().alias("status"),
        # A refund row without a currency is in its original's.
        pl.when(pl.col("_is_refund"))
        .then(currency)
        .otherwise(currency.fill_null(config.reporting_currency))
        .alias("currency"),
        optional_text("channel").alias("channel"),
        optional_text("customer_email").str.to_lowercase().alias("customer_email"),
        # Raw text kept, as for the timestamps.
        *[
            pl.col(c).alias(f"_raw_{c}")
            for c in ("amount", "refunded_amount", "quantity", "unit_price", "line_amount")
            if c in present
        ],
    )


def _parse_checks(config: PipelineConfig, present: set[str]) -> list[Check]:
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
                # A refund row may lack an id of its own: it has its original's.
                pl.col("_order_key").is_null(),
                "missing_order_id",
                pl.lit(f"order_id is empty (source column '{columns.get('order_id')}')"),
            )
        )
    checks += [
        (
            pl.col("customer_id").is_null() & _not_refund(config),
            "missing_customer_id",
            pl.lit(f"customer_id is empty (source column '{columns['customer_id']}')"),
        ),
        (
            pl.col("ordered_at").is_null(),
            "unparseable_ordered_at",
            pl.format(
                "ordered_at '{}' (source column '{}') is not a timestamp; set "
                "source.timestamp_format if the file uses another format",
                _text("_raw_ordered_at").fill_null(""),
                pl.lit(columns["ordered_at"]),
            ),
        ),
    ]
    if "updated_at" in present:
        checks.append(
            (
                pl.col("updated_at").is_null() & _text("_raw_updated_at").is_not_null(),
                "unparseable_updated_at",
                pl.format(
                    "updated_at '{}' (source column '{}') is not a timestamp",
                    _text("_raw_updated_at"),
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
                    [_text(f"_raw_{f}").fill_null("''") for f in amount_fields], separator=" / "
                ),
                pl.lit(", ".join(f"{f}='{columns[f]}'" for f in amount_fields)),
            ),
        )
    )
    if "refunded_amount" in present:
        checks.append(
            (
                pl.col("refunded_amount").is_null() & _text("_raw_refunded_amount").is_not_null(),
                "unparseable_amount",
                pl.format("refunded_amount '{}' is not a number", _text("_raw_refunded_amount")),
            )
        )
    return checks


def _not_refund(config: PipelineConfig) -> pl.Expr:
    """Not a refund row: the money checks of orders do not apply to refund rows, which are
    checked against their original when netted (`_net_refunds`)."""
    return ~pl.col("_is_refund") if config.source.has_refund_rows else pl.lit(True)


def _currency_checks(config: PipelineConfig) -> list[Check]:
    """A currency other than the reporting one needs a rate on or before the order's local
    date (`_with_fx_rate`); without an FX input, it is unknown."""
    foreign = (pl.col("currency") != config.reporting_currency) & _not_refund(config)
    if config.fx_rates is None:
        return [
            (
                foreign,
                "unknown_currency",
                pl.format(
                    "currency {} has no FX rate to the reporting currency {}",
                    pl.col("currency"),
                    pl.lit(config.reporting_currency),
                ),
            )
        ]
    return [
        (
            foreign & ~pl.col("_fx_known"),
            "unknown_currency",
            pl.format(
                "currency {} has no rate to the reporting currency {} in fx_rates ({}); add "
                "its rates or fix the code",
                pl.col("currency"),
                pl.lit(config.reporting_currency),
                pl.lit(config.fx_rates.path),
            ),
        ),
        (
            foreign & pl.col("fx_rate").is_null(),
            "missing_fx_rate",
            pl.format(
                "fx_rates has no {} rate on or before {} (the order's local date); its rates "
                "start later, so add an earlier one",
                pl.col("currency"),
                pl.col("_rate_date"),
            ),
        ),
    ]


def _value_checks(config: PipelineConfig, now: datetime) -> list[Check]:
    horizon = _future_horizon(config, now)
    refunded = pl.col("refunded_amount").fill_null(0)
    order = _not_refund(config)
    return [
        (
            ((pl.col("amount") < 0) | (refunded < 0)) & order,
            "negative_amount",
            pl.format("amount {} or refunded_amount {} is negative", pl.col("amount"), refunded),
        ),
        (
            (refunded > pl.col("amount")) & order,
            "refund_exceeds_amount",
            pl.format("refunded_amount {} exceeds amount {}", refunded, pl.col("amount")),
        ),
        *_currency_checks(config),
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


Frame = pl.DataFrame | pl.LazyFrame


def _with_fx_rate(frame: Frame, config: PipelineConfig, rates: pl.DataFrame | None) -> Frame:
    """`frame` with `fx_rate`: 1 for the reporting currency, else the latest rate on or
    before `_rate_date` (the order's local date in the reporting timezone), null when there
    is none; and `_fx_known`: whether the FX input has the currency at all."""
    reporting = pl.col("currency") == config.reporting_currency
    if rates is None:
        return frame.with_columns(pl.when(reporting).then(pl.lit(1.0)).alias("fx_rate"))
    lookup = rates.select(
        "currency", pl.col("rate_date").alias("_rate_date"), pl.col("rate").alias("_rate")
    )
    if isinstance(frame, pl.LazyFrame):
        lookup = lookup.lazy()
    local_date = _local_date(pl.col("ordered_at"), config.reporting_timezone)
    return (
        frame.with_columns(local_date.alias("_rate_date"))
        .sort("_rate_date")
        .join_asof(
            lookup, on="_rate_date", by="currency", strategy="backward", check_sortedness=False
        )
        .sort("_seq")
        .with_columns(
            pl.when(reporting).then(pl.lit(1.0)).otherwise(pl.col("_rate")).alias("fx_rate"),
            pl.col("currency").is_in(rates["currency"].unique().implode()).alias("_fx_known"),
        )
        .drop("_rate")
    )


def _future_horizon(config: PipelineConfig, now: datetime) -> datetime:
    return (now.astimezone(UTC) + timedelta(hours=config.future_tolerance_hours)).replace(
        tzinfo=None
    )


def _unplaceable(placed_at: pl.Expr, horizon: datetime) -> pl.Expr:
    """Rows no daily window can hold: no readable timestamp, or one far in the future."""
    return placed_at.is_null() | (placed_at > horizon)


def _in_window(window: LoadWindow, reporting_timezone: str, horizon: datetime) -> pl.Expr:
    """Rows placed in the window (or nowhere), and versions of an order changed in it. A row
    without order_id is no version: it stays with its day, the only key that replaces it.
    An order's key (`_order_key`) is its order_id, and for a refund row its original's."""
    placed_at = pl.col("_placed_at")
    order_date = _local_date(placed_at, reporting_timezone)
    updated_date = _local_date(pl.col("updated_at"), reporting_timezone)
    after_first = pl.lit(True) if window.first is None else order_date >= window.first
    changed_in_window = (
        pl.lit(False)
        if window.first is None
        else (updated_date >= window.first)
        & (updated_date <= window.last)
        & pl.col("_order_key").is_not_null()
    )
    return _unplaceable(placed_at, horizon) | (
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


def _touched_rows(
    rows: pl.LazyFrame, window: LoadWindow, reporting_timezone: str, horizon: datetime
) -> pl.LazyFrame:
    """The window's rows and every other version (or line) of their orders: a load replaces
    an order whole, so the result does not depend on which loads ran, or in which order."""
    in_window = pl.col("_in_window")
    # As a number: max over groups is several times faster than any() on booleans.
    order_in_window = in_window.cast(pl.UInt8).max().over("_order_key") == 1
    return rows.with_columns(
        _in_window(window, reporting_timezone, horizon).alias("_in_window")
    ).filter(pl.when(pl.col("_order_key").is_null()).then(in_window).otherwise(order_in_window))


def _read_rows(
    rows: pl.LazyFrame,
    config: PipelineConfig,
    window: LoadWindow,
    horizon: datetime,
    row_checks: list[Check],
    rates: pl.DataFrame | None,
    formats: TimestampFormats | None,
) -> pl.LazyFrame:
    """The rows the window's load reads, typed, with `reason_code` of the first failing row
    check (null when all pass) and `_placed_at`, the timestamp that places the row."""
    timezone = config.reporting_timezone
    dated = _dated_rows(rows, config, formats)
    ordered_at = pl.col("ordered_at")
    if config.source.line_items:
        # An order lies where its earliest good line does, so the window takes it whole.
        good = pl.col("reason_code").is_null()
        earliest_good = ordered_at.filter(good).min().over("order_id")
        checked = _typed_rows(dated, config).with_columns(
            _reason_code(row_checks).alias("reason_code")
        )
        placed = checked.with_columns(
            pl.when(good).then(earliest_good).otherwise(ordered_at).alias("_placed_at")
        )
        return _touched_rows(placed, window, timezone, horizon)
    # A row lies where its own ordered_at does, so the window is cut before the typing.
    placed = dated.with_columns(ordered_at.alias("_placed_at"))
    touched = _touched_rows(placed, window, timezone, horizon)
    typed = _with_fx_rate(_typed_rows(touched, config), config, rates)
    return typed.with_columns(_reason_code(row_checks).alias("reason_code"))


def _aggregate_lines(lines: pl.DataFrame) -> pl.DataFrame:
    """Order lines to orders: amounts add up, the earliest line's timestamp is the order's."""
    return lines.group_by("order_id").agg(
        pl.col("_seq").min(),
        pl.col("source_row").first(),
        pl.col("customer_id").first(),
        pl.col("ordered_at").min(),
        pl.col("updated_at").max(),
        pl.col("amount").sum(),
        pl.col("refunded_amount").sum(),
        *[pl.col(c).first() for c in ("currency", "status", "channel", "customer_email")],
        pl.len().alias("line_count"),
    )


def _orders_of_lines(
    lines: pl.DataFrame,
    value_checks: list[Check],
    config: PipelineConfig,
    rates: pl.DataFrame | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Good lines to orders, checked: (loaded orders, verdicts on the lines of the rest)."""
    orders = _with_fx_rate(_aggregate_lines(lines), config, rates).with_columns(
        _reason_code(value_checks).alias("reason_code")
    )
    good = pl.col("reason_code").is_null()
    rejected = orders.filter(~good).select(
        "order_id", "reason_code", _reason(value_checks).alias("reason")
    )
    verdicts = lines.join(rejected, on="order_id").select("_seq", "reason_code", "reason")
    return orders.filter(good), verdicts


def _shares_order_id(order_id: pl.Series) -> pl.Series:
    """Whether another row has the row's order_id, or at least its hash: a collision only
    sends an order through the exact ranking. Sorting hashes is much faster than grouping
    the strings, and most orders have one row."""
    hashes = order_id.hash()
    ordered = hashes.sort()
    return hashes.is_in(ordered.filter(ordered == ordered.shift(1)).implode())


def _resolve_versions(
    orders: pl.DataFrame, is_good: pl.Series, key: str = "order_id"
) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """Newest good version of each `key` (order_id, or a refund row's `_refund_key`) wins:
    (winners, deduplicated, verdicts on conflicts). Only repeated keys are ranked: sorting
    every row would cost."""
    repeated = _shares_order_id(orders[key])
    ranked = (
        orders.filter(is_good & repeated)
        .sort([key, "updated_at", "_seq"], nulls_last=False)
        .with_columns(pl.struct(list(ORDER_FIELDS)).hash().alias("_content"))
        .with_columns(
            (pl.col("_seq") == pl.col("_seq").last().over(key)).alias("_newest"),
            pl.col("_content").last().over(key).alias("_newest_content"),
            pl.col("updated_at").last().over(key).alias("_newest_updated_at"),
        )
    )
    older = ranked.filter(~pl.col("_newest"))
    same_time = (pl.col("updated_at") == pl.col("_newest_updated_at")) | (
        pl.col("updated_at").is_null() & pl.col("_newest_updated_at").is_null()
    )
    conflicts = older.filter(same_time & (pl.col("_content") != pl.col("_newest_content")))
    winners = pl.concat(
        [
            orders.filter(is_good & ~repeated),
            ranked.filter(pl.col("_newest")).select(orders.columns),
        ]
    )
    verdicts = conflicts.select(
        "_seq",
        pl.lit("duplicate_conflict").alias("reason_code"),
        pl.format(
            "{} {} appears again with the same updated_at but different content; "
            "the row read last was kept",
            pl.lit("order_id" if key == "order_id" else "refund row"),
            pl.col("order_id"),
        ).alias("reason"),
    )
    return winners, older.height - conflicts.height, verdicts


def _refund_key() -> pl.Expr:
    """A refund row's identity among refund rows: its own order_id when it has one apart
    from its original's (a credit note number), else its whole content, so that only an
    exact copy counts as the same refund."""
    own_id = pl.col("order_id").is_not_null() & (pl.col("order_id") != pl.col("_order_key"))
    content = pl.struct([*ORDER_FIELDS, "_order_key"]).hash().cast(pl.String)
    return (
        pl.when(own_id)
        .then(pl.format("id:{}", pl.col("order_id")))
        .otherwise(pl.format("content:{}", content))
        .alias("_refund_key")
    )


def _net_refunds(orders: pl.DataFrame, refunds: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Refund rows netted into their originals: (orders with refunded_amount raised by their
    refund rows and `refund_rows` counting them, verdicts on the refund rows that cannot be
    netted). Refunds apply in time order (ordered_at, then reading order); the first that
    takes the refunds past the amount, and every later one, is quarantined."""
    originals = orders.select(
        pl.col("order_id").alias("_order_key"),
        pl.col("amount").alias("_original_amount"),
        pl.col("refunded_amount").fill_null(0).alias("_original_refunded"),
        pl.col("currency").alias("_original_currency"),
        pl.lit(True).alias("_has_original"),
    )
    unknown = pl.col("_has_original").is_null()
    mismatch = (
        ~unknown
        & pl.col("currency").is_not_null()
        & (pl.col("currency") != pl.col("_original_currency"))
    )
    nettable = ~unknown & ~mismatch
    refunded_so_far = pl.col("_original_refunded") + pl.when(nettable).then(
        pl.col("amount")
    ).otherwise(0.0).cum_sum().over("_order_key")
    # Compared at the warehouse's precision, so that 30.1 + 69.9 refunds 100 exactly.
    over = nettable & (refunded_so_far.round(4) > pl.col("_original_amount").round(4))
    checks: list[Check] = [
        (
            unknown,
            "refund_unknown_order",
            pl.format(
                "refund row for order {}: the source holds no loaded order with that id "
                "(missing, or itself quarantined); check the refund_of column",
                pl.col("_order_key"),
            ),
        ),
        (
            mismatch,
            "refund_currency_mismatch",
            pl.format(
                "refund row in {} for order {}, which is in {}",
                pl.col("currency"),
                pl.col("_order_key"),
                pl.col("_original_currency"),
            ),
        ),
        (
            over,
            "refund_exceeds_amount",
            pl.format(
                "refund row of {} takes the refunds of order {} to {}, more than its amount {}",
                pl.col("amount"),
                pl.col("_order_key"),
                refunded_so_far,
                pl.col("_original_amount"),
            ),
        ),
    ]
    matched = (
        refunds.join(originals, on="_order_key", how="left")
        .sort("_order_key", "ordered_at", "_seq")
        # Reasons formatted before any filter: the running totals need every refund row.
        .with_columns(_reason_code(checks).alias("reason_code"), _reason(checks).alias("reason"))
    )
    good = pl.col("reason_code").is_null()
    netted = (
        matched.filter(good)
        .group_by("_order_key")
        .agg(pl.col("amount").sum().alias("_refund_total"), pl.len().alias("refund_rows"))
        .rename({"_order_key": "order_id"})
    )
    orders = (
        orders.join(netted, on="order_id", how="left")
        .with_columns(
            pl.when(pl.col("refund_rows").is_not_null())
            .then(pl.col("refunded_amount").fill_null(0) + pl.col("_refund_total"))
            .otherwise(pl.col("refunded_amount"))
            .alias("refunded_amount"),
            pl.col("refund_rows").fill_null(0).cast(pl.UInt32),
        )
        .drop("_refund_total")
    )
    verdicts = matched.filter(~good).select("_seq", "reason_code", "reason")
    return orders, verdicts


def validate(
    rows: pl.LazyFrame,
    config: PipelineConfig,
    window: LoadWindow,
    now: datetime,
    fx_rates: pl.DataFrame | None = None,
    formats: TimestampFormats | None = None,
) -> LoadBatch:
    """Types and checks the rows that the window's load reads (see `_touched_rows`): each
    ends in `orders` (newest version per order_id), in `rejected`, or deduplicated. A netted
    refund row ends inside its original order (`refund_rows`), so it counts as loaded.
    `fx_rates` defaults to the configured FX input (`read_fx_rates`), `formats` to the
    timestamp formats that read `rows`."""
    if fx_rates is None:
        fx_rates = read_fx_rates(config)
    horizon = _future_horizon(config, now)
    timezone = config.reporting_timezone
    parse_checks = _parse_checks(config, set(rows.collect_schema().names()))
    value_checks = _value_checks(config, now)
    # A line's values are checked once its order is whole; a row's at once.
    line_mode = config.source.line_items
    row_checks = parse_checks if line_mode else parse_checks + value_checks
    read = _read_rows(rows, config, window, horizon, row_checks, fx_rates, formats).collect(
        engine="streaming"
    )

    is_good = read["reason_code"].is_null()
    fields = read.select("_seq", "source_row", *ORDER_FIELDS, "_order_key")
    if line_mode:
        loaded, verdicts = _orders_of_lines(fields.filter(is_good), value_checks, config, fx_rates)
        deduplicated = 0
    else:
        fields = fields.with_columns(read["fx_rate"])
        is_refund = read["_is_refund"]
        loaded, deduplicated, verdicts = _resolve_versions(
            fields.filter(~is_refund), is_good.filter(~is_refund)
        )
        if config.source.has_refund_rows:
            refund_rows = fields.filter(is_refund).with_columns(_refund_key())
            refunds, refunds_deduplicated, conflicts = _resolve_versions(
                refund_rows, is_good.filter(is_refund), key="_refund_key"
            )
            loaded, refund_verdicts = _net_refunds(loaded, refunds)
            deduplicated += refunds_deduplicated
            verdicts = pl.concat([verdicts, conflicts, refund_verdicts])
        loaded = loaded.with_columns(pl.lit(1, dtype=pl.UInt32).alias("line_count"))
    if "refund_rows" not in loaded.columns:
        loaded = loaded.with_columns(pl.lit(0, dtype=pl.UInt32).alias("refund_rows"))
    # Reasons are formatted, and raw records encoded, for the rejected rows only.
    rows_of_verdicts = read.filter(pl.col("_seq").is_in(verdicts["_seq"].implode()))
    placed_at = pl.col("_placed_at")
    rejected = (
        pl.concat(
            [
                read.filter(~is_good).with_columns(_reason(row_checks).alias("reason")),
                rows_of_verdicts.drop("reason_code").join(verdicts, on="_seq"),
            ],
            how="diagonal",
        )
        .sort("_seq")
        .with_columns(
            pl.when(~_unplaceable(placed_at, horizon))
            .then(_local_date(placed_at, timezone))
            .alias("order_date"),
            # A refund row stays with its original's id, which replaces it in later loads.
            pl.col("_order_key").alias("order_id"),
        )
        .select(REJECTED_COLUMNS)
    )
    return LoadBatch(
        orders=loaded.with_columns(
            _local_date(pl.col("ordered_at"), timezone).alias("order_date")
        ).select(*ORDER_FIELDS, "order_date", "fx_rate", "line_count", "refund_rows", "source_row"),
        rejected=encode_raw_records(rejected),
        rows_read=read.height,
        rows_deduplicated=deduplicated,
        fx_rates=fx_rates,
    )


def validate_in_parts(
    rows: pl.LazyFrame, config: PipelineConfig, window: LoadWindow, now: datetime
) -> Iterator[LoadBatch]:
    """`validate`, one part of the orders at a time (`ROWS_PER_PART` source rows each), so
    that a source of any size is checked in bounded memory. A bounded window's parts hold
    only the orders it can touch (`_orders_a_window_can_touch`)."""
    fx_rates = read_fx_rates(config)
    # Chosen on the whole source, so that every part reads its timestamps alike.
    formats = _source_timestamp_formats(rows, config)
    order_key = _order_key_as_read(config, set(rows.collect_schema().names()))
    if window.first is not None:
        horizon = _future_horizon(config, now)
        order_keys = _orders_a_window_can_touch(rows, config, window, horizon, formats)
        rows = rows.filter(order_key.is_null() | order_key.is_in(order_keys.implode()))
    count = math.ceil(rows.select(pl.len()).collect().item() / ROWS_PER_PART)
    for part_rows in _parts(rows, order_key, count):
        yield validate(part_rows, config, window, now, fx_rates, formats)


def _parts(rows: pl.LazyFrame, order_key: pl.Expr, count: int) -> Iterator[pl.LazyFrame]:
    """`rows` in `count` disjoint parts by a hash of the order key, so that a part holds every
    row (version, line, refund row) of its orders. Each part filters the source, or, past
    `SPLIT_PAST_PARTS`, reads its own temporary file: re-reading the whole source for every
    part grows with the square of its size."""
    if count <= 1:
        yield rows
        return
    part = order_key.fill_null("").hash(seed=0) % count
    if count <= SPLIT_PAST_PARTS:
        for index in range(count):
            yield rows.filter(part == index)
        return
    with tempfile.TemporaryDirectory(prefix="retention-parts-") as folder:
        # lz4 writes faster than the default zstd, and the files last only this load.
        rows.with_columns(part.alias("_part")).sink_parquet(
            pl.PartitionBy(folder, key="_part", include_key=False), mkdir=True, compression="lz4"
        )
        # A folder per part that has rows; each keeps the reading order.
        for part_folder in sorted(Path(folder).iterdir()):
            yield pl.scan_parquet(part_folder / "*.parquet")


def _orders_a_window_can_touch(
    rows: pl.LazyFrame,
    config: PipelineConfig,
    window: LoadWindow,
    horizon: datetime,
    formats: TimestampFormats,
) -> pl.Series:
    """The keys of the orders a bounded window's load can take: those with a row ordered or
    updated in the window, or placed nowhere. One pass over the source, after which the parts
    read only these orders: a night reads a day's orders, not the history `ROWS_PER_PART`
    rows at a time. It holds every order `_touched_rows` takes (a line is placed at some line's
    ordered_at, a row at its own), and may hold more, which `_touched_rows` then leaves out.
    """
    timezone = config.reporting_timezone

    def dated_in_window(column: str) -> pl.Expr:
        day = _local_date(pl.col(column), timezone)
        return (day >= window.first) & (day <= window.last)

    can_touch = (
        _unplaceable(pl.col("ordered_at"), horizon)
        | dated_in_window("ordered_at")
        | dated_in_window("updated_at").fill_null(False)
    )
    return (
        _dated_rows(rows, config, formats)
        .filter(pl.col("_order_key").is_not_null() & can_touch)
        .select(pl.col("_order_key").unique())
        .collect(engine="streaming")
        .to_series()
    )


def newest_update(rows: pl.LazyFrame, config: PipelineConfig, until: datetime) -> datetime | None:
    """The latest readable updated_at (naive UTC) of `rows` not after `until`: what a
    watermark may advance to."""
    updated_at = pl.col("updated_at")
    return (
        _dated_rows(rows, config)
        .select(updated_at.filter(updated_at <= until).max())
        .collect()
        .item()
    )
