import dagster as dg

from retention_pipeline.lib.clv.pipeline import run_clv
from retention_pipeline.lib.clv.summary import OrderHistory
from retention_pipeline.lib.settings import WAREHOUSE_POOL, active_config, daily_partitions
from retention_pipeline.lib.warehouse import (
    model_schemas,
    open_warehouse,
    read_frame,
    replace_tables,
    table_exists,
)

CLV_SCHEMA = "clv"  # the asset keys' prefix
# The tables live in the raw layer's schema (raw, or <schema>_raw on PostgreSQL) as clv_*.
TABLE_PREFIX = "clv_"
CUSTOMER_PREDICTIONS = dg.AssetKey([CLV_SCHEMA, "customer_predictions"])
MODEL_PARAMS = dg.AssetKey([CLV_SCHEMA, "model_params"])
FIT_ATTEMPTS = dg.AssetKey([CLV_SCHEMA, "fit_attempts"])
HOLDOUT_EVAL = dg.AssetKey([CLV_SCHEMA, "holdout_eval"])
FORECAST_MONTHLY = dg.AssetKey([CLV_SCHEMA, "forecast_monthly"])
FITS_ACCEPTED_CHECK = "clv_fits_accepted"
# What the models read: the valid orders and the build's as-of date.
UPSTREAM = [dg.AssetKey("fct_orders"), dg.AssetKey(["intermediate", "int_run__as_of"])]


def _spec(key: dg.AssetKey, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key, description=description, group_name="clv", kinds={"scipy", "duckdb"}, deps=UPSTREAM
    )


@dg.multi_asset(
    specs=[
        _spec(
            CUSTOMER_PREDICTIONS,
            "Per customer: the summary (frequency, recency, age, mean repeat spend), P(alive), "
            "expected purchases and discounted predicted LTV over the horizon.",
        ),
        _spec(
            MODEL_PARAMS,
            "The published parameters of the count model and Gamma-Gamma; a rejected fit "
            "leaves the previous ones.",
        ),
        _spec(FIT_ATTEMPTS, "Every fit of the last run, accepted or not, and why."),
        _spec(
            HOLDOUT_EVAL,
            "Fit before a calibration date, predicted against actual repeat purchases after "
            "it, by calibration frequency.",
        ),
        _spec(
            FORECAST_MONTHLY,
            "The next 12 months: active customers, orders and revenue from existing and new "
            "customers, with the backtest error per month ahead.",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            FITS_ACCEPTED_CHECK,
            asset=MODEL_PARAMS,
            blocking=False,
            description=(
                "Every fit of this run converged with plausible parameters; otherwise the "
                "previous parameters stay published."
            ),
        )
    ],
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def clv_models(context: dg.AssetExecutionContext):
    """Fits the configured count model and Gamma-Gamma on the valid orders up to the
    as-of date, and a second time before the holdout split; writes the raw layer's clv_*
    tables in one transaction."""
    config = active_config()
    clv = config.clv
    marts, intermediate = model_schemas(config)
    with open_warehouse(config) as session:
        raw = session.raw_schema
        as_of = read_frame(session, f"select as_of_date from {intermediate}.int_run__as_of").item()
        orders = OrderHistory(session, f"{marts}.fct_orders")
        previous = None
        if table_exists(session, config.raw_schema, f"{TABLE_PREFIX}model_params"):
            previous = read_frame(session, f"select * from {raw}.{TABLE_PREFIX}model_params")
        run = run_clv(
            orders,
            as_of,
            clv,
            gross_margin=config.gross_margin,
            previous_params=previous,
        )
        replace_tables(
            session,
            {
                f"{raw}.{TABLE_PREFIX}customer_predictions": run.customer_predictions,
                f"{raw}.{TABLE_PREFIX}model_params": run.model_params,
                f"{raw}.{TABLE_PREFIX}fit_attempts": run.fit_attempts,
                f"{raw}.{TABLE_PREFIX}holdout_eval": run.holdout_eval,
                f"{raw}.{TABLE_PREFIX}forecast_monthly": run.forecast_monthly,
            },
        )
    for result in run.rejected:
        context.log.error(
            f"CLV fit rejected, not published: {result.describe()}"
            + (
                "; the previous parameters stay published"
                if result.model in run.kept_previous
                else "; no previous parameters: predictions from it are empty"
            )
        )
    params = {
        f"{row['model']}.{row['parameter']}": row["value"]
        for row in run.model_params.iter_rows(named=True)
    }
    context.log.info(f"CLV as of {as_of} ({clv.model}, {clv.time_unit}s): {params}")
    total = run.holdout_eval.filter(frequency_bucket="all")
    holdout_meta = (
        {
            "holdout_actual_purchases": float(total["actual_purchases"][0]),
            "holdout_predicted_purchases": float(total["predicted_purchases"][0]),
        }
        if total.height
        else {}
    )
    yield dg.MaterializeResult(
        asset_key=CUSTOMER_PREDICTIONS,
        metadata={
            "as_of": str(as_of),
            "customers": run.customer_predictions.height,
            "model": clv.model,
            "time_unit": clv.time_unit,
        },
    )
    yield dg.MaterializeResult(
        asset_key=MODEL_PARAMS,
        metadata={"parameters": dg.MetadataValue.json(params), "fits_accepted": run.fits_accepted},
    )
    yield dg.MaterializeResult(
        asset_key=FIT_ATTEMPTS, metadata={"attempts": run.fit_attempts.height}
    )
    yield dg.MaterializeResult(asset_key=HOLDOUT_EVAL, metadata=holdout_meta)
    yield dg.MaterializeResult(
        asset_key=FORECAST_MONTHLY, metadata={"months": run.forecast_monthly.height}
    )
    yield dg.AssetCheckResult(
        asset_key=MODEL_PARAMS,
        check_name=FITS_ACCEPTED_CHECK,
        passed=run.fits_accepted,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "every fit accepted"
            if run.fits_accepted
            else "; ".join(r.describe() for r in run.rejected)
        ),
        metadata={
            "rejected": dg.MetadataValue.json(
                {r.model: r.problems_and_convergence for r in run.rejected}
            ),
            "kept_previous_parameters": dg.MetadataValue.json(run.kept_previous),
        },
    )
