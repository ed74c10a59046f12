"""What the fitted models say: each customer's P(alive), expected purchases and discounted
predicted value; predicted against actual purchases in a holdout; and the monthly forecast
of active customers, orders and revenue, with new customers from the acquisition trend.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from retention_pipeline.lib.clv.mle import Rows, compress
from retention_pipeline.lib.clv.models import BgNbd, GammaGamma, ParetoNbd
from retention_pipeline.lib.clv.summary import DAYS_PER_UNIT

DAYS_PER_MONTH = 365.25 / 12
FREQUENCY_BUCKETS = ("0", "1", "2", "3", "4", "5", "6", "7+")
SEASONAL_MONTHS = 24  # seasonality and growth need two years of history

CountModel = BgNbd | ParetoNbd


def month_length(time_unit: str) -> float:
    """One month in the summary's time unit."""
    return DAYS_PER_MONTH / DAYS_PER_UNIT[time_unit]


def monthly_discount_rate(annual_discount_rate: float) -> float:
    return (1 + annual_discount_rate) ** (1 / 12) - 1


def customer_predictions(
    summary: pl.DataFrame,
    rows: Rows,
    counts: CountModel,
    spend: GammaGamma | None,
    *,
    time_unit: str,
    horizon_months: int,
    annual_discount_rate: float,
    gross_margin: float = 1.0,
) -> pl.DataFrame:
    """Per customer of the summary: p_alive, expected_purchases over the horizon,
    expected_spend per purchase (Gamma-Gamma) and predicted_ltv: the expected margin of
    each future month's purchases, discounted monthly at the annual rate, summed over the
    horizon; predicted_ltv_if_alive is the same for the customer if it is still alive
    (predicted_ltv = p_alive × predicted_ltv_if_alive). Without a spend model the value
    columns are null. `rows`: the summary's `rows_of_summary`."""
    month = month_length(time_unit)
    discount = monthly_discount_rate(annual_discount_rate)
    # Purchases if alive now, month by month; × P(alive) gives the expectation.
    pairs = _distinct_x_and_age(rows)
    previous = np.zeros_like(pairs["x"])
    discounted = np.zeros_like(pairs["x"])
    for m in range(1, horizon_months + 1):
        cumulative = counts.expected_purchases_if_alive(m * month, pairs["x"], pairs["T"])
        discounted += (cumulative - previous) / (1 + discount) ** m
        previous = cumulative
    discounted, previous = discounted[pairs.inverse], previous[pairs.inverse]
    p_alive = counts.p_alive(rows["x"], rows["t_x"], rows["T"])
    out = summary.select("customer_id").with_columns(
        p_alive=pl.Series(p_alive[rows.inverse]),
        expected_purchases=pl.Series((previous * p_alive)[rows.inverse]),
    )
    if spend is None:
        return out.with_columns(
            expected_spend=pl.lit(None, pl.Float64),
            predicted_ltv=pl.lit(None, pl.Float64),
            predicted_ltv_if_alive=pl.lit(None, pl.Float64),
        )
    expected_spend = spend.expected_spend(
        summary["frequency"].to_numpy(), summary["monetary_value"].fill_null(0.0).to_numpy()
    )
    if_alive = discounted[rows.inverse] * expected_spend * gross_margin
    return out.with_columns(
        expected_spend=pl.Series(expected_spend),
        predicted_ltv=pl.Series(if_alive * p_alive[rows.inverse]),
        predicted_ltv_if_alive=pl.Series(if_alive),
    )


def holdout_evaluation(
    summary: pl.DataFrame,
    rows: Rows,
    counts: CountModel,
    spend: GammaGamma | None,
    holdout_length: float,
) -> pl.DataFrame:
    """Predicted against actual repeat purchase days (and spend) in the holdout, by the
    customers' calibration frequency (0 to 6, 7+), with a total row `all`. `summary` has
    the holdout columns, `rows` its `rows_of_summary`; `holdout_length` is in the summary's
    time unit."""
    predicted = counts.expected_purchases(holdout_length, rows["x"], rows["t_x"], rows["T"])
    frame = summary.with_columns(predicted_purchases=pl.Series(predicted[rows.inverse]))
    if spend is not None:
        per_purchase = spend.expected_spend(
            summary["frequency"].to_numpy(), summary["monetary_value"].fill_null(0.0).to_numpy()
        )
        frame = frame.with_columns(
            predicted_spend=pl.col("predicted_purchases") * pl.Series(per_purchase)
        )
    else:
        frame = frame.with_columns(predicted_spend=pl.lit(None, pl.Float64))
    bucket = (
        pl.when(pl.col("frequency") >= 7)
        .then(pl.lit("7+"))
        .otherwise(pl.col("frequency").cast(pl.Int64).cast(pl.String))
    )
    measures = [
        pl.len().alias("customers"),
        pl.col("holdout_purchases").sum().alias("actual_purchases"),
        pl.col("predicted_purchases").sum().alias("predicted_purchases"),
        pl.col("holdout_spend").sum().alias("actual_spend"),
        pl.col("predicted_spend").sum().alias("predicted_spend"),
        (pl.col("predicted_purchases") - pl.col("holdout_purchases"))
        .abs()
        .mean()
        .alias("mean_absolute_error"),
    ]
    by_bucket = frame.group_by(frequency_bucket=bucket).agg(measures)
    total = frame.select(measures).with_columns(frequency_bucket=pl.lit("all"))
    order = {name: i for i, name in enumerate((*FREQUENCY_BUCKETS, "all"))}
    result = pl.concat([by_bucket, total.select(by_bucket.columns)])
    buckets = pl.DataFrame({"frequency_bucket": [*FREQUENCY_BUCKETS, "all"]})
    # Without a spend model the predicted spend stays null, in every bucket.
    filled = ["actual_purchases", "predicted_purchases", "actual_spend"]
    if spend is not None:
        filled.append("predicted_spend")
    result = buckets.join(result, on="frequency_bucket", how="left").with_columns(
        pl.col("customers").fill_null(0).cast(pl.Int64), pl.col(filled).fill_null(0.0)
    )
    return (
        result.with_columns(
            bucket_order=pl.col("frequency_bucket").replace_strict(order, return_dtype=pl.Int64),
            purchases_error=pl.col("predicted_purchases") - pl.col("actual_purchases"),
        )
        .with_columns(
            purchases_relative_error=pl.when(pl.col("actual_purchases") > 0).then(
                pl.col("purchases_error") / pl.col("actual_purchases")
            ),
            mean_actual_purchases=pl.when(pl.col("customers") > 0).then(
                pl.col("actual_purchases") / pl.col("customers")
            ),
            mean_predicted_purchases=pl.when(pl.col("customers") > 0).then(
                pl.col("predicted_purchases") / pl.col("customers")
            ),
        )
        .sort("bucket_order")
    )


# ------------------------------------------------------------------------------------------
# Monthly forecast
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    month: date  # first day of the calendar month
    first: date  # first day forecast (the day after the origin in a partial first month)
    last: date  # last day forecast (the month's end)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def is_partial(self) -> bool:
        return self.first != self.month


def forecast_periods(origin: date, months: int) -> list[Period]:
    """The `months` calendar months after `origin` (the last day with data): the first is
    the rest of origin's month unless origin is its last day."""
    periods = []
    start = origin + timedelta(days=1)
    for _ in range(months):
        month = start.replace(day=1)
        last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
        periods.append(Period(month, start, last))
        start = last + timedelta(days=1)
    return periods


def acquisition_forecast(history: pl.DataFrame, periods: list[Period]) -> np.ndarray:
    """New customers per period from the monthly history (columns month, new_customers;
    complete months only).

    The level is the mean of the last three months, seasonally adjusted; with two years of
    history, month-of-year factors (each month's mean over the last 24 months / the overall
    mean) and a growth rate (the last 12 months over the 12 before, capped at doubling or
    halving a year) carry it forward. A partial period gets its share of the month's days.
    """
    history = history.sort("month").tail(SEASONAL_MONTHS)
    if history.is_empty():
        return np.zeros(len(periods))
    counts = history["new_customers"].to_numpy().astype(np.float64)
    months = history["month"].to_list()
    factors = np.ones(13)
    growth = 1.0
    if history.height >= SEASONAL_MONTHS and counts.mean() > 0:
        for moy in range(1, 13):
            same = [c for c, m in zip(counts, months, strict=True) if m.month == moy]
            factors[moy] = max(np.mean(same) / counts.mean(), 1e-3)
        before, last_year = counts[:12].sum(), counts[12:].sum()
        if before > 0 and last_year > 0:
            yearly = float(np.clip(last_year / before, 0.5, 2.0))
            growth = yearly ** (1 / 12)
    recent = counts[-3:] / np.array([factors[m.month] for m in months[-3:]])
    level = float(recent.mean())
    centre = _month_number(months[-1]) - (len(recent) - 1) / 2
    forecast = []
    for period in periods:
        per_month = level * growth ** (_month_number(period.month) - centre)
        per_month *= factors[period.month.month]
        days_in_month = calendar.monthrange(period.month.year, period.month.month)[1]
        forecast.append(per_month * period.days / days_in_month)
    return np.array(forecast)


def _month_number(month: date) -> int:
    return month.year * 12 + month.month - 1


def _distinct_x_and_age(rows: Rows) -> Rows:
    """The distinct (x, T) of `rows`, which is all that a customer's purchases and survival
    if alive depend on: about 20 times fewer than the rows at 10M orders, so the special
    functions run that much less often (docs/benchmarks.md, seventh run)."""
    return compress(x=rows["x"], T=rows["T"])


def monthly_forecast(
    summary: pl.DataFrame,
    rows: Rows,
    activity: pl.DataFrame,
    counts: CountModel,
    spend: GammaGamma,
    *,
    origin: date,
    time_unit: str,
    months: int = 12,
) -> pl.DataFrame:
    """Active customers, orders and revenue per month after `origin`, from the customers of
    `summary` (calibrated at `origin`) through the models, and from new customers forecast
    by `acquisition_forecast` over `activity` (monthly_activity of the orders up to origin).
    `rows`: the summary's `rows_of_summary`.

    The models count purchase days; orders are purchase days × the orders per purchase day
    of the last twelve months. A new customer's first purchase is worth the mean first-day
    spend of the last twelve months, its repeat purchases the Gamma-Gamma mean.
    """
    unit = DAYS_PER_UNIT[time_unit]
    periods = forecast_periods(origin, months)
    weight = rows.weight
    per_purchase = spend.expected_spend(
        summary["frequency"].to_numpy(), summary["monetary_value"].fill_null(0.0).to_numpy()
    )
    spend_by_row = np.bincount(rows.inverse, weights=per_purchase, minlength=weight.size)
    ends = np.array([(p.last - origin).days + 1 for p in periods], dtype=np.float64) / unit
    recent = activity.filter(pl.col("month") > _shift_months(origin.replace(day=1), -12))
    orders_per_day = _ratio(recent["orders"].sum(), recent["purchase_days"].sum(), 1.0)
    first_days = summary.filter(pl.col("first_purchase_date") > origin - timedelta(days=365))
    first_spend = (
        float(first_days["first_day_spend"].mean())
        if first_days.height
        else float(summary["first_day_spend"].mean() or 0.0)
    )
    complete = activity.filter(pl.col("month") < _complete_month_end(origin))
    new = acquisition_forecast(complete.select("month", "new_customers"), periods)
    starts = np.array([(p.first - origin).days - 1 for p in periods], dtype=np.float64) / unit
    middles = (starts + ends) / 2

    p_alive = counts.p_alive(rows["x"], rows["t_x"], rows["T"])
    pairs = _distinct_x_and_age(rows)
    records = []
    previous = np.zeros_like(weight)
    previous_new = 0.0
    for k, period in enumerate(periods):
        if_alive = counts.expected_purchases_if_alive(ends[k], pairs["x"], pairs["T"])
        cumulative = if_alive[pairs.inverse] * p_alive
        existing_days = float(weight @ (cumulative - previous))
        existing_revenue = float(spend_by_row @ (cumulative - previous))
        previous = cumulative
        survival = counts.survival(ends[k], pairs["x"], pairs["T"])
        existing_alive = float(weight @ (p_alive * survival[pairs.inverse]))
        # New customers of periods j ≤ k, acquired at their period's middle.
        ages = np.clip(ends[k] - middles[: k + 1], 0.0, None)
        repeat_to_date = float(new[: k + 1] @ counts.expected_purchases_new(ages))
        repeat_days = repeat_to_date - previous_new
        previous_new = repeat_to_date
        new_alive = float(new[: k + 1] @ counts.p_alive_new(ages))
        new_days = float(new[k]) + repeat_days
        new_revenue = float(new[k]) * first_spend + repeat_days * spend.mean_spend
        records.append(
            {
                "forecast_month": period.month,
                "forecast_from": period.first,
                "forecast_to": period.last,
                "is_partial_month": period.is_partial,
                "months_ahead": k + 1,
                "existing_active_customers": existing_alive,
                "new_customers": float(new[k]),
                "new_active_customers": new_alive,
                "active_customers": existing_alive + new_alive,
                "existing_orders": existing_days * orders_per_day,
                "new_customer_orders": new_days * orders_per_day,
                "orders": (existing_days + new_days) * orders_per_day,
                "existing_revenue": existing_revenue,
                "new_customer_revenue": new_revenue,
                "revenue": existing_revenue + new_revenue,
            }
        )
    return pl.DataFrame(records)


def backtest_errors(forecast: pl.DataFrame, activity: pl.DataFrame, last_day: date) -> pl.DataFrame:
    """Per forecast step whose period ended by `last_day`: actual orders and revenue of the
    period (from daily activity: columns order_date, orders, revenue) against the forecast,
    and the relative errors (forecast − actual) / actual."""
    rows = []
    for record in forecast.iter_rows(named=True):
        if record["forecast_to"] > last_day:
            break
        window = activity.filter(
            (pl.col("order_date") >= record["forecast_from"])
            & (pl.col("order_date") <= record["forecast_to"])
        )
        actual_orders = float(window["orders"].sum())
        actual_revenue = float(window["revenue"].sum())
        rows.append(
            {
                "months_ahead": record["months_ahead"],
                "backtest_month": record["forecast_month"],
                "backtest_actual_orders": actual_orders,
                "backtest_forecast_orders": record["orders"],
                "backtest_orders_error": _relative(record["orders"], actual_orders),
                "backtest_actual_revenue": actual_revenue,
                "backtest_forecast_revenue": record["revenue"],
                "backtest_revenue_error": _relative(record["revenue"], actual_revenue),
            }
        )
    schema = {
        "months_ahead": pl.Int64,
        "backtest_month": pl.Date,
        "backtest_actual_orders": pl.Float64,
        "backtest_forecast_orders": pl.Float64,
        "backtest_orders_error": pl.Float64,
        "backtest_actual_revenue": pl.Float64,
        "backtest_forecast_revenue": pl.Float64,
        "backtest_revenue_error": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def _relative(forecast: float, actual: float) -> float | None:
    return None if actual == 0 else (forecast - actual) / actual


def _ratio(numerator: float, denominator: float, default: float) -> float:
    return float(numerator) / float(denominator) if denominator else default


def _shift_months(month: date, delta: int) -> date:
    number = _month_number(month) + delta
    return date(number // 12, number % 12 + 1, 1)


def _complete_month_end(origin: date) -> date:
    """The first day of the first month not complete on origin: months before it count."""
    month = origin.replace(day=1)
    last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
    return _shift_months(month, 1) if origin == last else month
