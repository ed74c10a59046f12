"""The customer summary the CLV models read, from valid orders, in Polars.

Per customer, as of a calibration end date: frequency x (repeat purchase days: purchases on
the same day count once, and the first day is not a repeat), recency t_x (first purchase
day to the last one), age T (first purchase day to the calibration end) and the mean spend
of the repeat days; optionally the purchase days and spend in a holdout after it.
"""

from __future__ import annotations

from datetime import date

import polars as pl

DAYS_PER_UNIT = {"day": 1.0, "week": 7.0}

SUMMARY_SCHEMA = {
    "customer_id": pl.String,
    "first_purchase_date": pl.Date,
    "frequency": pl.Float64,
    "recency": pl.Float64,
    "age": pl.Float64,
    "monetary_value": pl.Float64,
    "first_day_spend": pl.Float64,
    "total_spend": pl.Float64,
}


def purchase_days(orders: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """One row per customer and local order date with the day's spend and order count,
    from rows of (customer_id, order_date, net_amount)."""
    return (
        orders.lazy()
        .group_by("customer_id", "order_date")
        .agg(spend=pl.col("net_amount").cast(pl.Float64).sum(), orders=pl.len())
    )


def customer_summary(
    orders: pl.LazyFrame | pl.DataFrame,
    calibration_end: date,
    time_unit: str,
    holdout_end: date | None = None,
) -> pl.DataFrame:
    """The summary of every customer whose first valid order is on or before
    `calibration_end`, in `time_unit` (day, or week = days / 7).

    With `holdout_end`, also `holdout_purchases` (purchase days in (calibration_end,
    holdout_end]) and `holdout_spend`.
    """
    unit = DAYS_PER_UNIT[time_unit]
    days = purchase_days(orders)
    calibration = days.filter(pl.col("order_date") <= calibration_end)
    first = pl.col("order_date").min()
    summary = (
        calibration.sort("customer_id", "order_date")
        .group_by("customer_id")
        .agg(
            first_purchase_date=first,
            last_purchase_date=pl.col("order_date").max(),
            purchase_days=pl.len(),
            total_spend=pl.col("spend").sum(),
            first_day_spend=pl.col("spend").first(),
        )
        .with_columns(
            frequency=(pl.col("purchase_days") - 1).cast(pl.Float64),
            recency=(pl.col("last_purchase_date") - pl.col("first_purchase_date")).dt.total_days()
            / unit,
            age=(pl.lit(calibration_end) - pl.col("first_purchase_date")).dt.total_days() / unit,
        )
        .with_columns(
            monetary_value=pl.when(pl.col("frequency") > 0).then(
                (pl.col("total_spend") - pl.col("first_day_spend")) / pl.col("frequency")
            )
        )
        .select(list(SUMMARY_SCHEMA))
    )
    if holdout_end is not None:
        holdout = (
            days.filter(
                (pl.col("order_date") > calibration_end) & (pl.col("order_date") <= holdout_end)
            )
            .group_by("customer_id")
            .agg(holdout_purchases=pl.len().cast(pl.Float64), holdout_spend=pl.col("spend").sum())
        )
        summary = summary.join(holdout, on="customer_id", how="left").with_columns(
            pl.col("holdout_purchases", "holdout_spend").fill_null(0.0)
        )
    return summary.sort("customer_id").collect()


def monthly_activity(orders: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Per calendar month: orders, purchase days, revenue and new customers (by the month
    of their first valid order), every month from the first to the last present."""
    lazy = orders.lazy()
    first = lazy.group_by("customer_id").agg(first=pl.col("order_date").min())
    months = (
        lazy.group_by(month=pl.col("order_date").dt.truncate("1mo"))
        .agg(orders=pl.len(), revenue=pl.col("net_amount").cast(pl.Float64).sum())
        .join(
            purchase_days(lazy)
            .group_by(month=pl.col("order_date").dt.truncate("1mo"))
            .agg(purchase_days=pl.len()),
            on="month",
            how="left",
        )
        .join(
            first.group_by(month=pl.col("first").dt.truncate("1mo")).agg(new_customers=pl.len()),
            on="month",
            how="left",
        )
        .collect()
    )
    if months.is_empty():
        return months.with_columns(pl.col("new_customers").fill_null(0))
    calendar = pl.DataFrame(
        {"month": pl.date_range(months["month"].min(), months["month"].max(), "1mo", eager=True)}
    )
    return (
        calendar.join(months, on="month", how="left")
        .with_columns(
            pl.col("orders", "purchase_days", "new_customers").fill_null(0).cast(pl.Int64),
            pl.col("revenue").fill_null(0.0),
        )
        .sort("month")
    )
