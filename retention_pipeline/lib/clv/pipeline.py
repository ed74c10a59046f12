"""One CLV run from valid orders to the tables the warehouse publishes, without any I/O:
the production fit as of the as-of date, the holdout fit before it, the predictions, the
evaluation and the forecast.

A rejected fit (not converged, or parameters outside the plausible range) is never
published: the previous parameters of that model, when there are any for the same time
unit, stay in `model_params` and score the customers instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from retention_pipeline.lib.clv.mle import FitResult, Rows
from retention_pipeline.lib.clv.models import COUNT_MODELS, GammaGamma, rows_of_summary
from retention_pipeline.lib.clv.predict import (
    backtest_errors,
    customer_predictions,
    forecast_periods,
    holdout_evaluation,
    month_length,
    monthly_forecast,
)
from retention_pipeline.lib.clv.summary import DAYS_PER_UNIT, SUMMARY_SCHEMA, OrderHistory
from retention_pipeline.lib.config import ClvConfig

FORECAST_MONTHS = 12
# A holdout shorter than this is no test of anything: the evaluation is left out.
MIN_HOLDOUT_DAYS = 28

PARAMS_SCHEMA = {
    "model": pl.String,
    "parameter": pl.String,
    "value": pl.Float64,
    "time_unit": pl.String,
    "log_likelihood": pl.Float64,
    "n_customers": pl.Int64,
    "calibration_end": pl.Date,
    "fitted_at": pl.Datetime("us"),
}
ATTEMPTS_SCHEMA = {
    "model": pl.String,
    "purpose": pl.String,
    "time_unit": pl.String,
    "calibration_end": pl.Date,
    "fitted_at": pl.Datetime("us"),
    "is_accepted": pl.Boolean,
    "is_converged": pl.Boolean,
    "problems": pl.String,
    "log_likelihood": pl.Float64,
    "n_customers": pl.Int64,
    "parameters": pl.String,
}


@dataclass(frozen=True)
class ClvRun:
    """The tables of one run, and what happened to its fits."""

    customer_predictions: pl.DataFrame
    model_params: pl.DataFrame
    fit_attempts: pl.DataFrame
    holdout_eval: pl.DataFrame
    forecast_monthly: pl.DataFrame
    rejected: list[FitResult]
    kept_previous: list[str]  # models whose previous parameters stay published

    @property
    def fits_accepted(self) -> bool:
        return not self.rejected


@dataclass(frozen=True)
class _Holdout:
    """What the fit before the holdout split leaves: its attempts, the predicted against
    the actual purchases after the split, and the backtest of its forecast (None without
    one)."""

    split: date | None
    attempts: list
    evaluation: pl.DataFrame
    backtest: pl.DataFrame | None


def holdout_split(first_order: date, as_of: date, holdout_days: int | None) -> date | None:
    """The calibration end of the holdout evaluation: `holdout_days` before the as-of date,
    else the middle of the history (first order to as-of). None when the holdout or the
    calibration would be shorter than MIN_HOLDOUT_DAYS."""
    span = (as_of - first_order).days
    end = (
        as_of - timedelta(days=holdout_days)
        if holdout_days
        else first_order + timedelta(days=span // 2)
    )
    if (as_of - end).days < MIN_HOLDOUT_DAYS or (end - first_order).days < MIN_HOLDOUT_DAYS:
        return None
    return end


def run_clv(
    orders: OrderHistory,
    as_of: date | None,
    config: ClvConfig,
    *,
    gross_margin: float = 1.0,
    previous_params: pl.DataFrame | None = None,
    fitted_at: datetime | None = None,
) -> ClvRun:
    """`orders`: the valid orders; those after `as_of` are left out."""
    fitted_at = (fitted_at or datetime.now()).replace(microsecond=0, tzinfo=None)
    if as_of is None:  # no valid order yet
        return _no_customers(config, previous_params, date.today())
    with orders.with_purchase_days(as_of) as grouped:
        first_day = grouped.first_purchase_date(as_of)
        if first_day is None:
            return _no_customers(config, previous_params, as_of)
        # One summary in memory at a time: the holdout first, keeping only its small
        # tables; then the production's reads, so that its fit and predictions run after
        # the grouped purchase days are dropped (at 100M orders the step peaked at 11.5 GiB
        # with both summaries and the predictions held, 7.5 GiB so).
        split = holdout_split(first_day, as_of, config.holdout_days)
        holdout = _holdout(grouped, split, as_of, config)
        activity = grouped.monthly_activity(as_of)
        summary = grouped.summary(as_of, config.time_unit)
    return _production(
        summary, activity, holdout, as_of, config, gross_margin, previous_params, fitted_at
    )


def _production(
    summary: pl.DataFrame,
    activity: pl.DataFrame,
    holdout: _Holdout,
    as_of: date,
    config: ClvConfig,
    gross_margin: float,
    previous_params: pl.DataFrame | None,
    fitted_at: datetime,
) -> ClvRun:
    """The fit as of the as-of date on its `summary`, the predictions and the forecast from
    it (`activity`: the monthly activity up to the as-of date), with what the holdout left."""
    unit = config.time_unit
    count_cls = COUNT_MODELS[config.model]
    # Compressed once: the fit, its check, the predictions and the forecast share them.
    rows = rows_of_summary(summary)

    # The production fit, as of the as-of date.
    counts, count_fit = _checked(*count_cls.fit(rows), rows, config)
    spend, spend_fit = GammaGamma.fit(summary["frequency"], summary["monetary_value"])
    attempts = [(count_fit, "production", as_of), (spend_fit, "production", as_of)]
    rejected = [f for f in (count_fit, spend_fit) if not f.ok]
    published, kept = [], []
    previous = previous_params if previous_params is not None else _empty(PARAMS_SCHEMA)
    for result, name in ((count_fit, config.model), (spend_fit, GammaGamma.name)):
        if result.ok:
            published.append(_param_rows(result, unit, as_of, fitted_at))
            continue
        old = previous.filter((pl.col("model") == name) & (pl.col("time_unit") == unit))
        if old.height:
            published.append(old)
            kept.append(name)
    model_params = pl.concat([_empty(PARAMS_SCHEMA), *published], how="vertical_relaxed")
    if counts is None:
        counts = _from_params(model_params, config.model, count_cls)
    if spend is None:
        spend = _from_params(model_params, GammaGamma.name, GammaGamma)

    predictions = _predictions(summary, rows, counts, spend, config, gross_margin, as_of)
    if counts is not None and spend is not None:
        forecast = monthly_forecast(
            summary,
            rows,
            activity,
            counts,
            spend,
            origin=as_of,
            time_unit=unit,
            months=FORECAST_MONTHS,
        )
    else:
        forecast = _empty_forecast(as_of)
    backtest = holdout.backtest
    if backtest is None:
        backtest = backtest_errors(forecast.clear(), pl.DataFrame(), as_of)
    forecast = forecast.join(backtest, on="months_ahead", how="left").with_columns(
        model=pl.lit(config.model),
        time_unit=pl.lit(unit),
        forecast_origin=pl.lit(as_of),
        backtest_origin=pl.lit(holdout.split, dtype=pl.Date),
    )
    return ClvRun(
        customer_predictions=predictions,
        model_params=model_params.select(list(PARAMS_SCHEMA)),
        fit_attempts=_attempt_rows([*attempts, *holdout.attempts], unit, fitted_at),
        holdout_eval=holdout.evaluation,
        forecast_monthly=forecast,
        rejected=rejected,
        kept_previous=kept,
    )


def _holdout(orders: OrderHistory, split: date | None, as_of: date, config: ClvConfig) -> _Holdout:
    """Fits before `split` and predicts the purchases after it, to `as_of`."""
    if split is None:
        return _Holdout(split, [], _empty_holdout(), None)
    unit = config.time_unit
    count_cls = COUNT_MODELS[config.model]
    early = orders.summary(split, unit, holdout_end=as_of)
    early_rows = rows_of_summary(early)
    early_counts, early_count_fit = _checked(*count_cls.fit(early_rows), early_rows, config)
    early_spend, early_spend_fit = GammaGamma.fit(early["frequency"], early["monetary_value"])
    attempts = [(early_count_fit, "holdout", split), (early_spend_fit, "holdout", split)]
    if early_counts is None:
        return _Holdout(split, attempts, _empty_holdout(), None)
    length = (as_of - split).days / DAYS_PER_UNIT[unit]
    evaluation = holdout_evaluation(
        early, early_rows, early_counts, early_spend, length
    ).with_columns(
        model=pl.lit(config.model),
        time_unit=pl.lit(unit),
        calibration_end=pl.lit(split),
        holdout_end=pl.lit(as_of),
    )
    backtest = None
    if early_spend is not None:
        forecast = monthly_forecast(
            early,
            early_rows,
            orders.monthly_activity(split),
            early_counts,
            early_spend,
            origin=split,
            time_unit=unit,
            months=FORECAST_MONTHS,
        )
        backtest = backtest_errors(forecast, orders.daily_activity(as_of), as_of)
    return _Holdout(split, attempts, evaluation, backtest)


def _checked(model, result: FitResult, rows: Rows, config: ClvConfig):
    """The fit, rejected after all when its predictions for the customers of `rows` over
    the horizon are not finite numbers (parameters at the edge of what the special
    functions can take)."""
    if model is None:
        return model, result
    horizon = config.horizon_months * month_length(config.time_unit)
    with np.errstate(all="ignore"):
        values = np.concatenate(
            [
                model.p_alive(rows["x"], rows["t_x"], rows["T"]),
                model.expected_purchases(horizon, rows["x"], rows["t_x"], rows["T"]),
                model.p_alive_after(horizon, rows["x"], rows["t_x"], rows["T"]),
                np.atleast_1d(model.expected_purchases_new(horizon)),
                np.atleast_1d(model.p_alive_new(horizon)),
            ]
        )
    if np.all(np.isfinite(values)):
        return model, result
    problem = "its predictions are not finite numbers for some customers"
    return None, replace(result, problems=(*result.problems, problem))


def _no_customers(config: ClvConfig, previous: pl.DataFrame | None, as_of: date) -> ClvRun:
    """Nothing to fit: empty tables (the previous parameters stay), and no rejected fit."""
    empty_summary = pl.DataFrame(schema=SUMMARY_SCHEMA)
    params = previous if previous is not None else _empty(PARAMS_SCHEMA)
    forecast = _empty_forecast(as_of).clear()
    backtest = backtest_errors(forecast, pl.DataFrame(), as_of)
    return ClvRun(
        customer_predictions=_predictions(empty_summary, None, None, None, config, 1.0, as_of),
        model_params=params.select(list(PARAMS_SCHEMA)),
        fit_attempts=_empty(ATTEMPTS_SCHEMA),
        holdout_eval=_empty_holdout(),
        forecast_monthly=forecast.join(backtest, on="months_ahead", how="left").with_columns(
            model=pl.lit(config.model),
            time_unit=pl.lit(config.time_unit),
            forecast_origin=pl.lit(as_of),
            backtest_origin=pl.lit(None, dtype=pl.Date),
        ),
        rejected=[],
        kept_previous=[],
    )


def _predictions(summary, rows, counts, spend, config, gross_margin, as_of) -> pl.DataFrame:
    base = summary.select(
        "customer_id", "frequency", "recency", "age", "monetary_value", "first_purchase_date"
    )
    if counts is None:
        values = base.select("customer_id").with_columns(
            [
                pl.lit(None, pl.Float64).alias(c)
                for c in (
                    "p_alive",
                    "expected_purchases",
                    "expected_spend",
                    "predicted_ltv",
                    "predicted_ltv_if_alive",
                )
            ]
        )
    else:
        values = customer_predictions(
            summary,
            rows,
            counts,
            spend,
            time_unit=config.time_unit,
            horizon_months=config.horizon_months,
            annual_discount_rate=config.annual_discount_rate,
            gross_margin=gross_margin,
        )
    # `values` has the summary's rows in the summary's order: side by side, no join (a join
    # on 31M customer ids at 100M orders held gigabytes).
    return pl.concat([base, values.drop("customer_id")], how="horizontal").with_columns(
        model=pl.lit(config.model),
        time_unit=pl.lit(config.time_unit),
        horizon_months=pl.lit(config.horizon_months, dtype=pl.Int64),
        calibration_end=pl.lit(as_of),
    )


def _param_rows(result: FitResult, unit: str, calibration_end: date, fitted_at: datetime):
    return pl.DataFrame(
        {
            "model": result.model,
            "parameter": list(result.params),
            "value": list(result.params.values()),
            "time_unit": unit,
            "log_likelihood": result.log_likelihood,
            "n_customers": result.n_customers,
            "calibration_end": calibration_end,
            "fitted_at": fitted_at,
        },
        schema=PARAMS_SCHEMA,
    )


def _from_params(params: pl.DataFrame, name: str, cls):
    rows = params.filter(pl.col("model") == name)
    if rows.is_empty():
        return None
    values = dict(zip(rows["parameter"], rows["value"], strict=True))
    return cls(**{p: values[p] for p in cls.parameter_names})


def _attempt_rows(attempts, unit: str, fitted_at: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "model": result.model,
                "purpose": purpose,
                "time_unit": unit,
                "calibration_end": calibration_end,
                "fitted_at": fitted_at,
                "is_accepted": result.ok,
                "is_converged": result.converged,
                "problems": "; ".join(result.problems_and_convergence) or None,
                "log_likelihood": result.log_likelihood,
                "n_customers": result.n_customers,
                "parameters": json.dumps(result.params),
            }
            for result, purpose, calibration_end in attempts
        ],
        schema=ATTEMPTS_SCHEMA,
    )


def _empty(schema: dict) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def _empty_holdout() -> pl.DataFrame:
    schema = {
        "frequency_bucket": pl.String,
        "customers": pl.Int64,
        "actual_purchases": pl.Float64,
        "predicted_purchases": pl.Float64,
        "actual_spend": pl.Float64,
        "predicted_spend": pl.Float64,
        "mean_absolute_error": pl.Float64,
        "bucket_order": pl.Int64,
        "purchases_error": pl.Float64,
        "purchases_relative_error": pl.Float64,
        "mean_actual_purchases": pl.Float64,
        "mean_predicted_purchases": pl.Float64,
        "model": pl.String,
        "time_unit": pl.String,
        "calibration_end": pl.Date,
        "holdout_end": pl.Date,
    }
    return pl.DataFrame(schema=schema)


def _empty_forecast(as_of: date) -> pl.DataFrame:
    """The months with null figures: no model to forecast with."""
    periods = forecast_periods(as_of, FORECAST_MONTHS)
    figures = (
        "existing_active_customers",
        "new_customers",
        "new_active_customers",
        "active_customers",
        "existing_orders",
        "new_customer_orders",
        "orders",
        "existing_revenue",
        "new_customer_revenue",
        "revenue",
    )
    return pl.DataFrame(
        {
            "forecast_month": [p.month for p in periods],
            "forecast_from": [p.first for p in periods],
            "forecast_to": [p.last for p in periods],
            "is_partial_month": [p.is_partial for p in periods],
            "months_ahead": list(range(1, len(periods) + 1)),
            **{name: pl.Series([None] * len(periods), dtype=pl.Float64) for name in figures},
        }
    )
