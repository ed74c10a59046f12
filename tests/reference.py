"""Independent reference implementation of the retention metrics (SPEC.md sections 3 and 4).

Written from the definitions alone, in plain Polars, to check the SQL models cell by cell. It
shares no code with `retention_pipeline` and must not import it. Clarity comes before speed;
the only Python loops are over the handful of grains.

Inputs of the metric functions: a frame of VALID orders with `customer_id` (str),
`order_date` (pl.Date, local date in the reporting timezone) and `net_amount` (float), the
`as_of` date (orders after it are ignored) and, for the window base, `window_days`.

Public API
----------
- `valid_orders_from_raw(raw, *, reporting_timezone, source_timezone, excluded_statuses,
  reporting_currency, as_of)` -> customer_id, order_id, order_date, net_amount
- `cohort_retention(orders, as_of)` -> grain, cohort_start, period_number, period_start,
  cohort_customers, active_customers, retention_rate, net_revenue, cumulative_net_revenue,
  cumulative_revenue_per_customer, is_complete
- `retention_rates(orders, as_of, window_days)` -> grain, period_start, base,
  customers_start, customers_end, new_customers, retained_customers, reactivated_customers,
  churned_customers, crr, retention_rate, churn_rate, is_complete
- `customer_base_daily(orders, as_of, window_days)` -> activity_date, active_start,
  new_customers, reactivated_customers, churned_customers, active_end
- `marketing_spend_from_raw(raw)` -> spend_date, channel, spend; and
  `unit_economics(orders, spend, as_of, gross_margin)` -> the columns of
  `UNIT_ECONOMICS_SCHEMA` (orders need order_id, ordered_at and channel as well)
- period helpers on Python dates: `period_start`, `next_period_start`, `period_end`,
  `period_number`; and on Polars expressions: `period_start_expr`,
  `next_period_start_expr`, `period_end_expr`, `period_number_expr`.

Every frame comes back sorted by its key columns (plain `DataFrame.sort`, so grains sort
alphabetically: day, month, quarter, week, year); dates are pl.Date, counts Int64, rates and
money Float64.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import polars as pl

COHORT_GRAINS = ("day", "week", "month", "quarter")
RATE_GRAINS = ("week", "month", "quarter", "year")
ALL_GRAINS = ("day", "week", "month", "quarter", "year")
BASES = ("activity", "window")
DEFAULT_EXCLUDED_STATUSES = ("cancelled", "canceled", "failed", "voided", "fraud", "test")

# Length of one period of each grain, as a Polars duration string (offset_by / date_range).
_STEP = {"day": "1d", "week": "1w", "month": "1mo", "quarter": "3mo", "year": "1y"}

RAW_COLUMNS = (
    "order_id",
    "customer_id",
    "ordered_at",
    "amount",
    "status",
    "refunded_amount",
    "currency",
    "updated_at",
    "customer_email",
    "channel",
)
RAW_REQUIRED = ("order_id", "customer_id", "ordered_at", "amount")
RAW_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

ORDERS_SCHEMA = {"customer_id": pl.Utf8, "order_date": pl.Date, "net_amount": pl.Float64}
VALID_ORDERS_SCHEMA = {
    "customer_id": pl.Utf8,
    "order_id": pl.Utf8,
    "order_date": pl.Date,
    "net_amount": pl.Float64,
}
COHORT_RETENTION_SCHEMA = {
    "grain": pl.Utf8,
    "cohort_start": pl.Date,
    "period_number": pl.Int64,
    "period_start": pl.Date,
    "cohort_customers": pl.Int64,
    "active_customers": pl.Int64,
    "retention_rate": pl.Float64,
    "net_revenue": pl.Float64,
    "cumulative_net_revenue": pl.Float64,
    "cumulative_revenue_per_customer": pl.Float64,
    "repeat_customers": pl.Int64,
    "repeat_purchase_rate": pl.Float64,
    "is_complete": pl.Boolean,
}
RETENTION_RATES_SCHEMA = {
    "grain": pl.Utf8,
    "period_start": pl.Date,
    "base": pl.Utf8,
    "customers_start": pl.Int64,
    "customers_end": pl.Int64,
    "new_customers": pl.Int64,
    "retained_customers": pl.Int64,
    "reactivated_customers": pl.Int64,
    "churned_customers": pl.Int64,
    "crr": pl.Float64,
    "retention_rate": pl.Float64,
    "churn_rate": pl.Float64,
    "is_complete": pl.Boolean,
}
CUSTOMER_BASE_DAILY_SCHEMA = {
    "activity_date": pl.Date,
    "active_start": pl.Int64,
    "new_customers": pl.Int64,
    "reactivated_customers": pl.Int64,
    "churned_customers": pl.Int64,
    "active_end": pl.Int64,
}

KPI_SCHEMA = {
    "grain": pl.Utf8,
    "period_start": pl.Date,
    "orders": pl.Int64,
    "net_revenue": pl.Float64,
    "buying_customers": pl.Int64,
    "new_customers": pl.Int64,
    "returning_customers": pl.Int64,
    "new_orders": pl.Int64,
    "returning_orders": pl.Int64,
    "new_revenue": pl.Float64,
    "returning_revenue": pl.Float64,
    "returning_revenue_share": pl.Float64,
    "aov": pl.Float64,
    "purchase_frequency": pl.Float64,
    "active_customers": pl.Int64,
    "arpu": pl.Float64,
    "arppu": pl.Float64,
    "repeat_purchase_rate": pl.Float64,
    "simple_ltv": pl.Float64,
    "is_complete": pl.Boolean,
}
COHORT_RETENTION_KEYS = ["grain", "cohort_start", "period_number"]
KPI_KEYS = ["grain", "period_start"]
RETENTION_RATES_KEYS = ["grain", "period_start", "base"]
CUSTOMER_BASE_DAILY_KEYS = ["activity_date"]


# --------------------------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------------------------


def _check_grain(grain: str) -> None:
    if grain not in ALL_GRAINS:
        raise ValueError(f"unknown grain {grain!r}; expected one of {ALL_GRAINS}")


def period_start(d: date, grain: str) -> date:
    """First day of the period of `grain` that contains `d` (weeks start on Monday)."""
    _check_grain(grain)
    if grain == "day":
        return d
    if grain == "week":
        return d - timedelta(days=d.weekday())  # Python: Monday = 0
    if grain == "month":
        return date(d.year, d.month, 1)
    if grain == "quarter":
        return date(d.year, (d.month - 1) // 3 * 3 + 1, 1)
    return date(d.year, 1, 1)


def next_period_start(d: date, grain: str) -> date:
    """First day of the period after the one that contains `d`."""
    start = period_start(d, grain)
    if grain == "day":
        return start + timedelta(days=1)
    if grain == "week":
        return start + timedelta(days=7)
    if grain == "year":
        return date(start.year + 1, 1, 1)
    months = 1 if grain == "month" else 3
    index = start.year * 12 + (start.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def period_end(d: date, grain: str) -> date:
    """Last day of the period that contains `d`: the next period's start minus one day."""
    return next_period_start(d, grain) - timedelta(days=1)


def period_number(cohort_start: date, start: date, grain: str) -> int:
    """Whole periods of `grain` from the period of `cohort_start` to the period of `start`."""
    c, p = period_start(cohort_start, grain), period_start(start, grain)
    if grain == "day":
        return (p - c).days
    if grain == "week":
        return (p - c).days // 7
    if grain == "month":
        return 12 * (p.year - c.year) + (p.month - c.month)
    if grain == "quarter":
        return 4 * (p.year - c.year) + ((p.month - 1) // 3 - (c.month - 1) // 3)
    return p.year - c.year


def period_start_expr(d: pl.Expr, grain: str) -> pl.Expr:
    """`period_start` as a Polars expression on a Date column."""
    _check_grain(grain)
    if grain == "day":
        return d
    if grain == "week":
        # Polars: Monday = 1 ... Sunday = 7
        return d - pl.duration(days=d.dt.weekday().cast(pl.Int64) - 1)
    year, month = d.dt.year(), d.dt.month().cast(pl.Int64)
    if grain == "month":
        return pl.date(year, month, 1)
    if grain == "quarter":
        return pl.date(year, (month - 1) // 3 * 3 + 1, 1)
    return pl.date(year, 1, 1)


def next_period_start_expr(d: pl.Expr, grain: str) -> pl.Expr:
    """`next_period_start` as a Polars expression on a Date column."""
    return period_start_expr(d, grain).dt.offset_by(_STEP[grain])


def period_end_expr(d: pl.Expr, grain: str) -> pl.Expr:
    """`period_end` as a Polars expression on a Date column."""
    return next_period_start_expr(d, grain).dt.offset_by("-1d")


def period_number_expr(cohort_start: pl.Expr, start: pl.Expr, grain: str) -> pl.Expr:
    """`period_number` as a Polars expression (both arguments are Date columns)."""
    c, p = period_start_expr(cohort_start, grain), period_start_expr(start, grain)
    days = (p - c).dt.total_days().cast(pl.Int64)
    dy = p.dt.year().cast(pl.Int64) - c.dt.year().cast(pl.Int64)
    if grain == "day":
        return days
    if grain == "week":
        return days // 7
    if grain == "month":
        return 12 * dy + (p.dt.month().cast(pl.Int64) - c.dt.month().cast(pl.Int64))
    if grain == "quarter":
        return 4 * dy + (p.dt.quarter().cast(pl.Int64) - c.dt.quarter().cast(pl.Int64))
    return dy


def period_starts(first: date, last: date, grain: str) -> pl.Series:
    """Start of every period of `grain` from the one containing `first` to the one with `last`."""
    return pl.date_range(
        period_start(first, grain), period_start(last, grain), _STEP[grain], eager=True
    ).alias("period_start")


# --------------------------------------------------------------------------------------------
# Valid orders from the raw rows
# --------------------------------------------------------------------------------------------


def _text(name: str) -> pl.Expr:
    """A raw column trimmed, with an empty string read as missing."""
    value = pl.col(name).cast(pl.Utf8).str.strip_chars()
    return pl.when(value == "").then(None).otherwise(value)


def _number(name: str) -> pl.Expr:
    """A raw column as a finite float; null when missing or unparseable."""
    value = _text(name).cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value).otherwise(None)


def _timestamp(name: str) -> pl.Expr:
    """A raw "YYYY-MM-DD HH:MM:SS" column (fractional seconds allowed) as a naive datetime;
    null when missing or garbage."""
    value = _text(name)
    return pl.coalesce(
        value.str.to_datetime(RAW_TIMESTAMP_FORMAT, time_unit="us", strict=False),
        value.str.to_datetime(RAW_TIMESTAMP_FORMAT + "%.f", time_unit="us", strict=False),
    )


def _localize(naive: pl.Expr, time_zone: str) -> pl.Expr:
    """Naive wall-clock times read in `time_zone`, as zone-aware instants.

    Like Python's zoneinfo with fold=0: an ambiguous time (the repeated hour when clocks go
    back) is the earlier instant; a time in the gap when clocks go forward is read with the
    offset in force before the gap (02:30 in New York on the spring-forward day = 07:30 UTC).
    """
    hour = pl.duration(hours=1)
    plain = naive.dt.replace_time_zone(time_zone, ambiguous="earliest", non_existent="null")
    in_gap = (naive - hour).dt.replace_time_zone(
        time_zone, ambiguous="earliest", non_existent="null"
    ) + hour
    return pl.coalesce(plain, in_gap)


def valid_orders_from_raw(
    raw: pl.DataFrame,
    *,
    reporting_timezone: str = "UTC",
    source_timezone: str | None = None,
    excluded_statuses: Iterable[str] = DEFAULT_EXCLUDED_STATUSES,
    reporting_currency: str = "USD",
    as_of: date | None = None,
    keep_ordered_at: bool = False,
    status_map: dict[str, str] | None = None,
    fx_rates: pl.DataFrame | None = None,
    negative_amounts_are_refunds: bool = False,
    keep_channel: bool = False,
) -> pl.DataFrame:
    """The valid orders (customer_id, order_id, order_date, net_amount, and with
    `keep_ordered_at` the naive source `ordered_at`, with `keep_channel` the trimmed
    `channel` of the newest version) of raw order rows.

    1. Drop bad rows: empty order_id or customer_id (null or blank), unparseable ordered_at,
       unparseable amount, unparseable non-empty refunded_amount, negative amount, refund
       larger than amount, currency given and not the reporting currency (compared trimmed,
       case-insensitively).
    2. Newest version wins per order_id among the remaining rows: latest updated_at (a
       missing or unparseable updated_at is the oldest); on a tie the row later in `raw`.
    3. Valid: lower(trim(status)) not in `excluded_statuses` (a missing status is valid) and
       net_amount = amount - coalesce(refunded_amount, 0) > 0.
    4. order_date = local date in `reporting_timezone` of ordered_at, whose naive values are
       wall-clock times in `source_timezone` (default: the reporting timezone).
    5. With `as_of`, only orders with order_date <= as_of.

    Money (see docs/metrics.md):
    - `status_map` (source status: canonical status, matched trimmed and lower-cased) maps
      the status before the exclusion.
    - `fx_rates` (currency, rate_date, rate): a currency other than the reporting one needs
      a rate dated on or before the order date (step 4); net_amount is then
      round(amount × rate, 4) − round(refund × rate, 4). Without it, such rows are bad.
    - Refund rows: a row whose `refund_of` column is set (or, with
      `negative_amounts_are_refunds`, whose amount is negative) refunds |amount| of the order
      `refund_of` (else its own order_id). Copies of one refund (same own id, or the same
      row) count once, the newest. Refunds in another currency than their order's, or of
      orders that are not among the newest good versions, are dropped; the rest apply in
      (ordered_at, row) order while the refunds stay within the amount.
    """
    missing = [c for c in RAW_REQUIRED if c not in raw.columns]
    if missing:
        raise ValueError(f"raw orders lack required column(s): {missing}")
    source_timezone = source_timezone or reporting_timezone
    excluded = sorted({s.strip().lower() for s in excluded_statuses})
    absent = [pl.lit(None, pl.Utf8).alias(c) for c in RAW_COLUMNS if c not in raw.columns]
    if "refund_of" not in raw.columns:
        absent.append(pl.lit(None, pl.Utf8).alias("refund_of"))
    rows = raw.with_columns(absent).with_row_index("row_number")

    parsed = rows.select(
        "row_number",
        order_id=_text("order_id"),
        customer_id=_text("customer_id"),
        ordered_at=_timestamp("ordered_at"),
        updated_at=_timestamp("updated_at"),
        amount=_number("amount"),
        refund=_number("refunded_amount"),
        refund_given=_text("refunded_amount").is_not_null(),
        currency=_text("currency").str.to_uppercase(),
        status=_text("status").str.to_lowercase(),
        refund_of=_text("refund_of"),
        channel=_text("channel"),
    )
    parsed = parsed.with_columns(
        order_date=_localize(pl.col("ordered_at"), source_timezone)
        .dt.convert_time_zone(reporting_timezone)
        .dt.date(),
        is_refund=pl.col("refund_of").is_not_null()
        | (pl.lit(negative_amounts_are_refunds) & (pl.col("amount") < 0)).fill_null(False),
    )
    reporting = reporting_currency.upper()
    if fx_rates is None:
        parsed = parsed.with_columns(
            rate=pl.when(pl.col("currency").fill_null(reporting) == reporting).then(1.0)
        )
    else:
        lookup = fx_rates.select(
            currency=pl.col("currency").str.to_uppercase(),
            order_date=pl.col("rate_date").cast(pl.Date),
            fx=pl.col("rate").cast(pl.Float64),
        ).sort("order_date")
        parsed = (
            parsed.sort("order_date")
            .join_asof(lookup, on="order_date", by="currency", check_sortedness=False)
            .sort("row_number")
            .with_columns(
                rate=pl.when(pl.col("currency").fill_null(reporting) == reporting)
                .then(1.0)
                .otherwise(pl.col("fx"))
            )
        )
    refund_rows = parsed.filter(
        pl.col("is_refund"), pl.col("amount").is_not_null(), pl.col("ordered_at").is_not_null()
    )
    parsed = parsed.filter(~pl.col("is_refund"))
    clean = parsed.filter(
        pl.col("order_id").is_not_null(),
        pl.col("customer_id").is_not_null(),
        pl.col("ordered_at").is_not_null(),
        pl.col("amount").is_not_null(),
        pl.col("refund").is_not_null() | ~pl.col("refund_given"),
        pl.col("amount") >= 0,
        pl.col("refund").is_null() | (pl.col("refund") <= pl.col("amount")),
        pl.col("rate").is_not_null(),
    )
    # Oldest first (null updated_at first), input order within a tie; the last row wins.
    newest = (
        clean.sort(["updated_at", "row_number"], nulls_last=False)
        .group_by("order_id", maintain_order=True)
        .last()
    )
    # Refund rows: one per refund (newest copy), netted in time order within the amount.
    target = pl.coalesce("refund_of", "order_id")
    own_id = pl.col("order_id").is_not_null() & (pl.col("order_id") != target)
    refunds = (
        refund_rows.with_columns(
            target=target,
            refund_key=pl.when(own_id)
            .then(pl.col("order_id"))
            .otherwise(
                pl.concat_str(
                    pl.all().exclude("row_number").cast(pl.Utf8), ignore_nulls=True, separator="|"
                )
            ),
        )
        .sort(["updated_at", "row_number"], nulls_last=False)
        .group_by("refund_key", maintain_order=True)
        .last()
        .join(
            newest.select(
                target="order_id",
                original_amount="amount",
                original_refund=pl.col("refund").fill_null(0.0),
                original_currency=pl.col("currency").fill_null(reporting),
            ),
            on="target",
        )
        .filter(pl.col("currency").is_null() | (pl.col("currency") == pl.col("original_currency")))
        .sort(["target", "ordered_at", "row_number"])
        .with_columns(
            refunded_so_far=pl.col("original_refund")
            + pl.col("amount").abs().cum_sum().over("target")
        )
        .filter(pl.col("refunded_so_far").round(4) <= pl.col("original_amount").round(4))
        .group_by("target")
        .agg(refund_total=pl.col("amount").abs().sum())
    )
    newest = newest.join(refunds, left_on="order_id", right_on="target", how="left").with_columns(
        refund=pl.when(pl.col("refund_total").is_not_null())
        .then(pl.col("refund").fill_null(0.0) + pl.col("refund_total"))
        .otherwise(pl.col("refund"))
    )
    if status_map:
        mapping = {k.strip().lower(): v.strip().lower() for k, v in status_map.items()}
        newest = newest.with_columns(
            status=pl.col("status").replace_strict(mapping, default=pl.col("status"))
        )
    orders = newest.with_columns(
        net_amount=(pl.col("amount") * pl.col("rate")).round(4)
        - (pl.col("refund").fill_null(0.0) * pl.col("rate")).round(4),
    ).filter(
        pl.col("status").is_null() | ~pl.col("status").is_in(excluded),
        pl.col("net_amount") > 0,
    )
    if as_of is not None:
        orders = orders.filter(pl.col("order_date") <= as_of)
    schema = {**VALID_ORDERS_SCHEMA, **({"ordered_at": pl.Datetime} if keep_ordered_at else {})}
    schema |= {"channel": pl.Utf8} if keep_channel else {}
    return orders.select(list(schema)).cast(schema).sort("order_id", "customer_id")


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _orders_up_to(orders: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """The three input columns with their types, orders after `as_of` left out."""
    return (
        orders.select(list(ORDERS_SCHEMA)).cast(ORDERS_SCHEMA).filter(pl.col("order_date") <= as_of)
    )


def _first_orders(orders: pl.DataFrame) -> pl.DataFrame:
    """customer_id, first_date: every customer's first valid order date."""
    return orders.group_by("customer_id").agg(first_date=pl.col("order_date").min())


def _count(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Int64)


def _ratio(numerator: str | pl.Expr, denominator: str) -> pl.Expr:
    """numerator / denominator as Float64, null when the denominator is 0."""
    num = pl.col(numerator) if isinstance(numerator, str) else numerator
    den = pl.col(denominator)
    return pl.when(den > 0).then(num.cast(pl.Float64) / den.cast(pl.Float64)).otherwise(None)


def cohort_retention(orders: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """Long-form cohort table: grain x cohort x period number, zero-filled, up to `as_of`.

    A customer's cohort at a grain is the period of its first valid order. There is a row for
    every (grain, cohort, period_number >= 0) whose period starts on or before `as_of`.
    """
    orders = _orders_up_to(orders, as_of)
    if orders.is_empty():
        return pl.DataFrame(schema=COHORT_RETENTION_SCHEMA)
    first = _first_orders(orders)
    first_day = first["first_date"].min()
    # A customer repeats on the date of its second valid order (null: not yet).
    second = orders.group_by("customer_id").agg(
        second_date=pl.col("order_date").sort().get(1, null_on_oob=True)
    )

    tables = []
    for grain in COHORT_GRAINS:
        cohort_of = first.select(
            "customer_id", cohort_start=period_start_expr(pl.col("first_date"), grain)
        )
        sizes = cohort_of.group_by("cohort_start").agg(cohort_customers=_count(pl.len()))
        repeat_since = cohort_of.join(second, on="customer_id").select(
            "cohort_start", repeat_start=period_start_expr(pl.col("second_date"), grain)
        )
        bought = (
            orders.join(cohort_of, on="customer_id", how="inner")
            .with_columns(period_start=period_start_expr(pl.col("order_date"), grain))
            .group_by("cohort_start", "period_start")
            .agg(
                active_customers=_count(pl.col("customer_id").n_unique()),
                net_revenue=pl.col("net_amount").sum(),
            )
        )
        calendar = period_starts(first_day, as_of, grain).to_frame()
        cells = (
            sizes.join(calendar, how="cross")
            .filter(pl.col("period_start") >= pl.col("cohort_start"))
            .join(bought, on=["cohort_start", "period_start"], how="left")
            .with_columns(
                pl.col("active_customers").fill_null(0),
                pl.col("net_revenue").fill_null(0.0),
                period_number=period_number_expr(
                    pl.col("cohort_start"), pl.col("period_start"), grain
                ),
            )
            .with_columns(
                cumulative_net_revenue=pl.col("net_revenue")
                .cum_sum()
                .over("cohort_start", order_by="period_number"),
            )
            .with_columns(
                grain=pl.lit(grain),
                retention_rate=_ratio("active_customers", "cohort_customers"),
                cumulative_revenue_per_customer=_ratio(
                    "cumulative_net_revenue", "cohort_customers"
                ),
                is_complete=period_end_expr(pl.col("period_start"), grain) <= as_of,
            )
        )
        repeaters = (
            cells.select("cohort_start", "period_start")
            .join(repeat_since, on="cohort_start")
            .group_by("cohort_start", "period_start")
            .agg(repeat_customers=_count((pl.col("repeat_start") <= pl.col("period_start")).sum()))
        )
        cells = cells.join(repeaters, on=["cohort_start", "period_start"], how="left").with_columns(
            repeat_purchase_rate=_ratio("repeat_customers", "cohort_customers"),
        )
        tables.append(cells.select(list(COHORT_RETENTION_SCHEMA)).cast(COHORT_RETENTION_SCHEMA))
    return pl.concat(tables).sort(COHORT_RETENTION_KEYS)


def _rate_periods(first_day: date, as_of: date, grain: str) -> pl.DataFrame:
    """period_start, period_end, effective_end = min(period_end, as_of) of every period."""
    return (
        period_starts(first_day, as_of, grain)
        .to_frame()
        .with_columns(period_end=period_end_expr(pl.col("period_start"), grain))
        .with_columns(effective_end=pl.min_horizontal("period_end", pl.lit(as_of)))
    )


def _transitions(
    periods: pl.DataFrame, members: pl.DataFrame, grain: str, base: str, as_of: date
) -> pl.DataFrame:
    """Counts and rates per period from one row per (period_start, customer_id) with flags.

    `members` has boolean columns in_start (in S), in_end (in E) and first_in_period (first
    valid order date in [period start, effective end]); a missing flag is False.
    """
    s, e = pl.col("in_start"), pl.col("in_end")
    new = pl.col("first_in_period") & e
    counts = (
        members.with_columns(pl.col("in_start", "in_end", "first_in_period").fill_null(False))
        .group_by("period_start")
        .agg(
            customers_start=_count(s.sum()),
            customers_end=_count(e.sum()),
            new_customers=_count(new.sum()),
            retained_customers=_count((s & e).sum()),
            reactivated_customers=_count((e & ~s & ~new).sum()),
            churned_customers=_count((s & ~e).sum()),
        )
    )
    count_columns = [c for c in counts.columns if c != "period_start"]
    return (
        periods.join(counts, on="period_start", how="left")
        .with_columns(pl.col(count_columns).fill_null(0))
        .with_columns(
            grain=pl.lit(grain),
            base=pl.lit(base),
            crr=_ratio(pl.col("customers_end") - pl.col("new_customers"), "customers_start"),
            retention_rate=_ratio("retained_customers", "customers_start"),
            churn_rate=_ratio("churned_customers", "customers_start"),
            is_complete=pl.col("period_end") <= as_of,
        )
        .select(list(RETENTION_RATES_SCHEMA))
        .cast(RETENTION_RATES_SCHEMA)
    )


def _activity_members(orders: pl.DataFrame, first: pl.DataFrame, grain: str) -> pl.DataFrame:
    """Activity base: S = buyers of the previous period, E = buyers of this period."""
    bought = orders.select(
        "customer_id", period_start=period_start_expr(pl.col("order_date"), grain)
    ).unique()
    in_end = bought.with_columns(in_end=pl.lit(True))
    # Who bought in period P is S of the period after P.
    in_start = bought.with_columns(
        period_start=next_period_start_expr(pl.col("period_start"), grain),
        in_start=pl.lit(True),
    )
    # Orders are already cut at as_of, so a first order in P is within [P.start, e].
    new = first.select(
        "customer_id",
        period_start=period_start_expr(pl.col("first_date"), grain),
        first_in_period=pl.lit(True),
    )
    keys = ["period_start", "customer_id"]
    return in_end.join(in_start, on=keys, how="full", coalesce=True).join(
        new, on=keys, how="full", coalesce=True
    )


def _active_on(orders: pl.DataFrame, days: pl.Series, window_days: int) -> pl.DataFrame:
    """day, customer_id: customers with a valid order dated in (day - window_days, day]."""
    checkpoints = (
        days.unique()
        .alias("day")
        .to_frame()
        .with_columns(window_first=pl.col("day") - pl.duration(days=window_days - 1))
    )
    order_days = orders.select("customer_id", "order_date").unique()
    return (
        order_days.join_where(
            checkpoints,
            pl.col("order_date") >= pl.col("window_first"),
            pl.col("order_date") <= pl.col("day"),
        )
        .select("day", "customer_id")
        .unique()
    )


def _window_members(
    orders: pl.DataFrame,
    first: pl.DataFrame,
    periods: pl.DataFrame,
    grain: str,
    window_days: int,
) -> pl.DataFrame:
    """Window base: S = active at the end of the day before P, E = active at the end of e."""
    periods = periods.with_columns(day_before=pl.col("period_start").dt.offset_by("-1d"))
    active = _active_on(
        orders, pl.concat([periods["day_before"], periods["effective_end"]]), window_days
    )
    in_start = periods.join(active, left_on="day_before", right_on="day", how="inner").select(
        "period_start", "customer_id", in_start=pl.lit(True)
    )
    in_end = periods.join(active, left_on="effective_end", right_on="day", how="inner").select(
        "period_start", "customer_id", in_end=pl.lit(True)
    )
    # First valid order date in [P.start, e]: in the period of P and not after e.
    new = (
        first.with_columns(period_start=period_start_expr(pl.col("first_date"), grain))
        .join(periods, on="period_start", how="inner")
        .filter(pl.col("first_date") <= pl.col("effective_end"))
        .select("period_start", "customer_id", first_in_period=pl.lit(True))
    )
    keys = ["period_start", "customer_id"]
    return in_end.join(in_start, on=keys, how="full", coalesce=True).join(
        new, on=keys, how="full", coalesce=True
    )


def retention_rates(orders: pl.DataFrame, as_of: date, window_days: int) -> pl.DataFrame:
    """S, E, N, retained, reactivated, churned, CRR and rates per grain x period x base.

    Periods run from the one holding the first valid order to the one holding `as_of`.
    """
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    orders = _orders_up_to(orders, as_of)
    if orders.is_empty():
        return pl.DataFrame(schema=RETENTION_RATES_SCHEMA)
    first = _first_orders(orders)
    first_day = first["first_date"].min()
    tables = []
    for grain in RATE_GRAINS:
        periods = _rate_periods(first_day, as_of, grain)
        activity = _activity_members(orders, first, grain)
        window = _window_members(orders, first, periods, grain, window_days)
        tables.append(_transitions(periods, activity, grain, "activity", as_of))
        tables.append(_transitions(periods, window, grain, "window", as_of))
    return pl.concat(tables).sort(RETENTION_RATES_KEYS)


def customer_base_daily(orders: pl.DataFrame, as_of: date, window_days: int) -> pl.DataFrame:
    """Window-base customer counts and transitions for every day from the first order to as_of.

    Each valid order on day o makes its customer active at the end of days o .. o+W-1; the set
    of (customer, day) pairs "active at the end of day" is built by listing those days, and
    every count is read off it (churned: active the day before and not this day; reactivated:
    ordered this day, not the first order, not active at the end of the day before).
    """
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    orders = _orders_up_to(orders, as_of)
    if orders.is_empty():
        return pl.DataFrame(schema=CUSTOMER_BASE_DAILY_SCHEMA)
    first = _first_orders(orders)
    order_days = orders.select("customer_id", "order_date").unique()

    # (customer_id, day): active at the end of `day`, days after as_of left out. An order on o
    # covers o .. o+W-1; cutting that at the customer's next order date (which covers the rest
    # itself) makes the listed days of one customer disjoint, so no pair is listed twice.
    next_order = pl.col("order_date").shift(-1).over("customer_id", order_by="order_date")
    covered_until = pl.min_horizontal(
        pl.col("order_date") + pl.duration(days=window_days - 1),
        next_order - pl.duration(days=1),
        pl.lit(as_of),
    )
    active = order_days.select(
        "customer_id", day=pl.date_ranges(pl.col("order_date"), covered_until)
    ).explode("day")
    # (customer_id, day): active at the end of the day before `day`.
    active_before = active.with_columns(pl.col("day") + pl.duration(days=1)).filter(
        pl.col("day") <= as_of
    )
    keys = ["customer_id", "day"]
    churned = active_before.join(active, on=keys, how="anti")
    returning_buyers = order_days.join(first, on="customer_id").filter(
        pl.col("order_date") > pl.col("first_date")
    )
    reactivated = returning_buyers.select("customer_id", day=pl.col("order_date")).join(
        active_before, on=keys, how="anti"
    )
    new = first.select("customer_id", day=pl.col("first_date"))

    def per_day(pairs: pl.DataFrame, name: str) -> pl.DataFrame:
        return pairs.group_by("day").agg(_count(pl.len()).alias(name))

    calendar = pl.date_range(first["first_date"].min(), as_of, "1d", eager=True).alias("day")
    table = calendar.to_frame()
    for pairs, name in (
        (active_before, "active_start"),
        (new, "new_customers"),
        (reactivated, "reactivated_customers"),
        (churned, "churned_customers"),
        (active, "active_end"),
    ):
        table = table.join(per_day(pairs, name), on="day", how="left")
    return (
        table.rename({"day": "activity_date"})
        .fill_null(0)
        .select(list(CUSTOMER_BASE_DAILY_SCHEMA))
        .cast(CUSTOMER_BASE_DAILY_SCHEMA)
        .sort(CUSTOMER_BASE_DAILY_KEYS)
    )


def kpis(
    orders: pl.DataFrame, as_of: date, window_days: int, gross_margin: float = 1.0
) -> pl.DataFrame:
    """The KPI measures per grain (day to year) and period, from the first order's period to
    the one holding `as_of` (kpi_daily is the day grain, kpi_periodic the others).

    `orders` also needs `order_id` and `ordered_at`: a customer's first order is the earliest
    by ordered_at, then order_id. New customers: first order date in the period; new orders
    and revenue: first orders; the rest is returning. Measured at the effective end (period
    end, or as_of while open): active customers (window base), for ARPU, and the repeat
    purchase rate (customers with 2+ orders to date / customers to date). Simple LTV = ARPU x
    gross_margin / the window-base churn rate of the same period (day: churned/active_start).
    """
    orders = orders.filter(pl.col("order_date") <= as_of).with_columns(
        pl.col("net_amount").cast(pl.Float64)
    )
    ranked = orders.sort("ordered_at", "order_id").with_columns(
        rank=pl.int_range(pl.len()).over("customer_id")
    )
    orders = ranked.with_columns(is_first=pl.col("rank") == 0)
    first_dates = ranked.filter(pl.col("rank") == 0)["order_date"].sort()
    second_dates = ranked.filter(pl.col("rank") == 1)["order_date"].sort()
    daily = customer_base_daily(orders, as_of, window_days)
    active = daily.select(effective_end="activity_date", active_customers="active_end")
    churn = retention_rates(orders, as_of, window_days).filter(pl.col("base") == "window")
    day_churn = daily.select(
        period_start="activity_date", churn_rate=_ratio("churned_customers", "active_start")
    )
    frames = []
    for grain in ALL_GRAINS:
        periods = _rate_periods(first_dates.min(), as_of, grain)
        ends = periods["effective_end"]
        periods = periods.with_columns(
            customers_to_date=pl.Series(first_dates.search_sorted(ends, side="right")),
            repeat_to_date=pl.Series(second_dates.search_sorted(ends, side="right")),
        )
        measures = (
            orders.with_columns(period_start=period_start_expr(pl.col("order_date"), grain))
            .group_by("period_start")
            .agg(
                orders=_count(pl.len()),
                net_revenue=pl.col("net_amount").sum(),
                buying_customers=_count(pl.col("customer_id").n_unique()),
                new_orders=_count(pl.col("is_first").sum()),
                new_revenue=pl.col("net_amount").filter(pl.col("is_first")).sum(),
            )
        )
        new_customers = (
            first_dates.to_frame("first_date")
            .group_by(period_start=period_start_expr(pl.col("first_date"), grain))
            .agg(new_customers=_count(pl.len()))
        )
        churn_rates = (
            day_churn
            if grain == "day"
            else churn.filter(pl.col("grain") == grain).select("period_start", "churn_rate")
        )
        table = (
            periods.join(measures, on="period_start", how="left")
            .join(new_customers, on="period_start", how="left")
            .join(active, on="effective_end", how="left")
            .join(churn_rates, on="period_start", how="left")
            .with_columns(
                pl.col(
                    "orders",
                    "net_revenue",
                    "buying_customers",
                    "new_orders",
                    "new_revenue",
                    "new_customers",
                    "active_customers",
                ).fill_null(0)
            )  # fmt: skip
            .with_columns(
                returning_customers=pl.col("buying_customers") - pl.col("new_customers"),
                returning_orders=pl.col("orders") - pl.col("new_orders"),
                returning_revenue=pl.col("net_revenue") - pl.col("new_revenue"),
                aov=_ratio("net_revenue", "orders"),
                purchase_frequency=_ratio("orders", "buying_customers"),
                arpu=_ratio("net_revenue", "active_customers"),
                arppu=_ratio("net_revenue", "buying_customers"),
                repeat_purchase_rate=_ratio("repeat_to_date", "customers_to_date"),
            )
            .with_columns(
                returning_revenue_share=_ratio("returning_revenue", "net_revenue"),
                simple_ltv=pl.when(pl.col("churn_rate") > 0).then(
                    pl.col("arpu") * gross_margin / pl.col("churn_rate")
                ),
                grain=pl.lit(grain),
                is_complete=pl.col("period_end") <= as_of,
            )
        )
        frames.append(table.select(list(KPI_SCHEMA)).cast(KPI_SCHEMA))
    return pl.concat(frames).sort(KPI_KEYS)


# --------------------------------------------------------------------------------------------
# Unit economics: CAC, LTV:CAC and payback per acquisition channel and cohort month
# --------------------------------------------------------------------------------------------

UNIT_ECONOMICS_SCHEMA = {
    "acquisition_channel": pl.Utf8,
    "cohort_month": pl.Date,
    "months_since_acquisition": pl.Int64,
    "period_start": pl.Date,
    "marketing_spend": pl.Float64,
    "new_customers": pl.Int64,
    "cac": pl.Float64,
    "net_revenue": pl.Float64,
    "cumulative_net_revenue": pl.Float64,
    "cumulative_margin": pl.Float64,
    "cumulative_margin_per_customer": pl.Float64,
    "ltv_to_cac": pl.Float64,
    "is_paid_back": pl.Boolean,
    "payback_months": pl.Int64,
    "is_complete": pl.Boolean,
}
UNIT_ECONOMICS_KEYS = ["acquisition_channel", "cohort_month", "months_since_acquisition"]
ALL_CHANNELS = "all"


def marketing_spend_from_raw(raw: pl.DataFrame) -> pl.DataFrame:
    """The readable rows of a raw spend file (text columns date, channel, spend): spend_date,
    channel (trimmed, lower-cased) and spend. Rows with no parseable "YYYY-MM-DD" date, an
    empty channel, or a spend that is missing, not a finite number or negative are dropped."""
    spend = raw.select(
        spend_date=_text("date").str.to_date("%Y-%m-%d", strict=False),
        channel=_text("channel").str.to_lowercase(),
        spend=_number("spend"),
    )
    return spend.drop_nulls().filter(pl.col("spend") >= 0)


def unit_economics(
    orders: pl.DataFrame, spend: pl.DataFrame, as_of: date, gross_margin: float = 1.0
) -> pl.DataFrame:
    """Per acquisition channel (and "all"), cohort month and months since acquisition.

    `orders`: valid orders with customer_id, order_id, ordered_at, order_date, net_amount and
    channel; `spend`: spend_date, channel, spend (as `marketing_spend_from_raw` gives them).
    A customer is acquired in the month of its first valid order (earliest ordered_at, then
    order_id) through that order's channel (lower-cased; "unknown" when missing). Cohort
    months run from the first to the last month with spend dated up to `as_of`; every channel
    seen in that spend or among those months' customers gets every cohort month, each
    followed from age 0 to the month holding `as_of`, zero-filled. "all" repeats every
    customer and every spend row once more. Spend, customers and revenue are those of the
    channel and cohort; CAC = spend / customers; cumulative margin = cumulative revenue x
    gross_margin; LTV:CAC = margin per customer / CAC; paid back when there was spend and the
    cumulative margin reached it; payback = the first such age.
    """
    spend = spend.filter(pl.col("spend_date") <= as_of)
    if spend.is_empty():
        return pl.DataFrame(schema=UNIT_ECONOMICS_SCHEMA)
    month = pl.col("spend_date").dt.truncate("1mo")
    spend = spend.with_columns(cohort_month=month)
    cohort_months = pl.date_range(
        spend["cohort_month"].min(), spend["cohort_month"].max(), "1mo", eager=True
    )
    as_of_month = period_start(as_of, "month")

    orders = orders.filter(pl.col("order_date") <= as_of).with_columns(
        pl.col("net_amount").cast(pl.Float64)
    )
    customers = (
        orders.sort("ordered_at", "order_id")
        .group_by("customer_id", maintain_order=True)
        .first()
        .select(
            "customer_id",
            cohort_month=pl.col("order_date").dt.truncate("1mo"),
            acquisition_channel=pl.col("channel").str.to_lowercase().fill_null("unknown"),
        )
        .filter(pl.col("cohort_month").is_in(cohort_months.implode()))
    )
    spend = spend.select("cohort_month", "spend", acquisition_channel="channel")

    def with_all(frame: pl.DataFrame) -> pl.DataFrame:
        return pl.concat([frame, frame.with_columns(acquisition_channel=pl.lit(ALL_CHANNELS))])

    customers, spend = with_all(customers), with_all(spend)
    channels = pl.concat([customers["acquisition_channel"], spend["acquisition_channel"]]).unique()
    cells = (
        channels.to_frame()
        .join(cohort_months.to_frame("cohort_month"), how="cross")
        .with_columns(period_start=pl.date_ranges("cohort_month", as_of_month, "1mo"))
        .explode("period_start")
        .with_columns(
            months_since_acquisition=period_number_expr(
                pl.col("cohort_month"), pl.col("period_start"), "month"
            )
        )
    )
    keys = ["acquisition_channel", "cohort_month"]
    spent = spend.group_by(keys).agg(marketing_spend=pl.col("spend").sum())
    sizes = customers.group_by(keys).agg(new_customers=_count(pl.len()))
    revenue = (
        orders.join(customers, on="customer_id")
        .group_by(*keys, period_start=pl.col("order_date").dt.truncate("1mo"))
        .agg(net_revenue=pl.col("net_amount").sum())
    )
    table = (
        cells.join(spent, on=keys, how="left")
        .join(sizes, on=keys, how="left")
        .join(revenue, on=[*keys, "period_start"], how="left")
        .with_columns(pl.col("marketing_spend", "new_customers", "net_revenue").fill_null(0))
        .sort(*keys, "months_since_acquisition")
        .with_columns(cumulative_net_revenue=pl.col("net_revenue").cum_sum().over(keys))
        .with_columns(cumulative_margin=pl.col("cumulative_net_revenue") * gross_margin)
        .with_columns(
            cac=_ratio("marketing_spend", "new_customers"),
            cumulative_margin_per_customer=_ratio("cumulative_margin", "new_customers"),
            ltv_to_cac=pl.when(pl.col("new_customers") > 0).then(
                _ratio("cumulative_margin", "marketing_spend")
            ),
            is_paid_back=(pl.col("marketing_spend") > 0)
            & (pl.col("cumulative_margin") >= pl.col("marketing_spend")),
            is_complete=period_end_expr(pl.col("period_start"), "month") <= as_of,
        )
        .with_columns(
            payback_months=pl.col("months_since_acquisition")
            .filter(pl.col("is_paid_back"))
            .min()
            .over(keys)
        )
    )
    return (
        table.select(list(UNIT_ECONOMICS_SCHEMA))
        .cast(UNIT_ECONOMICS_SCHEMA)
        .sort(UNIT_ECONOMICS_KEYS)
    )
