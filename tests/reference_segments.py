"""Independent reference of the customer segments (SPEC.md section 3: RFM, tier, churn type;
docs/metrics.md: lifecycle state, win-back), written from the definitions in plain Polars,
one snapshot day at a time. Like tests/reference.py it must not import retention_pipeline.

Inputs: valid orders (customer_id, order_date, net_amount), as in tests/reference.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import polars as pl
import reference as ref

SEGMENT_HISTORY_SCHEMA = {
    "snapshot_month": pl.Date,
    "snapshot_date": pl.Date,
    "customer_id": pl.Utf8,
    "days_since_last_order": pl.Int64,
    "valid_orders": pl.Int64,
    "net_revenue": pl.Float64,
    "recency_score": pl.Int64,
    "frequency_score": pl.Int64,
    "monetary_score": pl.Int64,
    "rfm_segment": pl.Utf8,
    "tier": pl.Utf8,
    "lifecycle_state": pl.Utf8,
    "churn_type": pl.Utf8,
    "is_complete": pl.Boolean,
    "previous_rfm_segment": pl.Utf8,
    "previous_tier": pl.Utf8,
    "previous_lifecycle_state": pl.Utf8,
}
SEGMENT_HISTORY_KEYS = ["snapshot_month", "customer_id"]
SEGMENT_MOVEMENTS_KEYS = ["snapshot_month", "dimension", "from_state", "to_state"]

# SPEC's segment map: (segment, recency scores, frequency scores).
SEGMENT_MAP = (
    ("champions", (5,), (4, 5)),
    ("loyal", (3, 4), (4, 5)),
    ("potential_loyalists", (4, 5), (2, 3)),
    ("new", (5,), (1,)),
    ("promising", (4,), (1,)),
    ("need_attention", (3,), (3,)),
    ("about_to_sleep", (3,), (1, 2)),
    ("at_risk", (1, 2), (3, 4)),
    ("cant_lose", (1, 2), (5,)),
    ("hibernating", (1, 2), (1, 2)),
)
SEGMENT_OF_SCORES = {
    (r, f): name for name, recency, frequency in SEGMENT_MAP for r in recency for f in frequency
}
assert len(SEGMENT_OF_SCORES) == 25, "the segment map must cover every R x F cell once"


@dataclass(frozen=True)
class SegmentSettings:
    window_days: int = 90
    at_risk_days: int | None = None
    vip_share: float = 0.05
    pre_vip_share: float = 0.15
    quick_churn_max_orders: int = 1

    @property
    def at_risk_after(self) -> int:
        return self.at_risk_days or self.window_days // 2


def _quintile_score(rank: int, customers: int) -> int:
    """1..5: the quintile of the customers the rank falls in (rank 1 = worst)."""
    return 1 + (5 * (rank - 1)) // customers


def _top_count(customers: int, share: float) -> int:
    """The number of customers in the top `share`, rounded to the nearest (halves up)."""
    return math.floor(Decimal(customers) * Decimal(str(share)) + Decimal("0.5"))


def _lifecycle(days_since_last: int, gap_before_last: int | None, s: SegmentSettings) -> str:
    if days_since_last >= s.window_days:
        return "churned"
    if days_since_last >= s.at_risk_after:
        return "at_risk"
    if gap_before_last is None:
        return "new"
    return "reactivated" if gap_before_last > s.window_days else "returning"


def segments_on(orders: pl.DataFrame, day: date, settings: SegmentSettings) -> pl.DataFrame:
    """Every customer with a valid order on or before `day`, scored and classified on `day`."""
    upto = orders.filter(pl.col("order_date") <= day)
    # Money to 4 places, as the warehouse's decimals: float noise must not break revenue ties.
    customers = upto.group_by("customer_id").agg(
        valid_orders=pl.len().cast(pl.Int64),
        net_revenue=pl.col("net_amount").cast(pl.Float64).sum().round(4),
        last_order_date=pl.col("order_date").max(),
        previous_order_day=pl.col("order_date")
        .unique()
        .sort(descending=True)
        .get(1, null_on_oob=True),
    )
    n = customers.height
    customers = customers.with_columns(
        days_since_last_order=(pl.lit(day) - pl.col("last_order_date")).dt.total_days(),
        gap_before_last=(pl.col("last_order_date") - pl.col("previous_order_day")).dt.total_days(),
    ).with_columns(
        recency_rank=pl.col("days_since_last_order").rank("min", descending=True),
        frequency_rank=pl.col("valid_orders").rank("min"),
        monetary_rank=pl.col("net_revenue").rank("min"),
    )
    by_revenue = customers.sort(["net_revenue", "customer_id"], descending=[True, False])
    vip = _top_count(n, settings.vip_share)
    vip_and_pre = _top_count(n, settings.vip_share + settings.pre_vip_share)
    tier_of = {
        customer: "vip" if i < vip else "pre_vip" if i < vip_and_pre else "standard"
        for i, customer in enumerate(by_revenue["customer_id"])
    }
    rows = []
    for c in customers.iter_rows(named=True):
        r = _quintile_score(c["recency_rank"], n)
        f = _quintile_score(c["frequency_rank"], n)
        state = _lifecycle(c["days_since_last_order"], c["gap_before_last"], settings)
        churn_type = None
        if state == "churned":
            quick = c["valid_orders"] <= settings.quick_churn_max_orders
            churn_type = "quick" if quick else "late"
        rows.append(
            {
                "customer_id": c["customer_id"],
                "days_since_last_order": c["days_since_last_order"],
                "valid_orders": c["valid_orders"],
                "net_revenue": c["net_revenue"],
                "recency_score": r,
                "frequency_score": f,
                "monetary_score": _quintile_score(c["monetary_rank"], n),
                "rfm_segment": SEGMENT_OF_SCORES[(r, f)],
                "tier": tier_of[c["customer_id"]],
                "lifecycle_state": state,
                "churn_type": churn_type,
            }
        )
    return pl.DataFrame(rows, schema={k: SEGMENT_HISTORY_SCHEMA[k] for k in rows[0]})


def customer_segment_history(
    orders: pl.DataFrame, as_of: date, settings: SegmentSettings
) -> pl.DataFrame:
    """One row per customer and month from its first month to as_of's, on the month's last
    day (as_of in the open month), with the previous month's segment, tier and state."""
    orders = orders.filter(pl.col("order_date") <= as_of)
    months = ref.period_starts(orders["order_date"].min(), as_of, "month")
    frames = []
    previous = None
    for month in months:
        end = ref.period_end(month, "month")
        snapshot = segments_on(orders, min(end, as_of), settings).with_columns(
            snapshot_month=pl.lit(month),
            snapshot_date=pl.lit(min(end, as_of)),
            is_complete=pl.lit(end <= as_of),
        )
        last_month = (
            previous.select(
                "customer_id",
                previous_rfm_segment="rfm_segment",
                previous_tier="tier",
                previous_lifecycle_state="lifecycle_state",
            )
            if previous is not None
            else pl.DataFrame(
                schema={"customer_id": pl.Utf8}
                | {f"previous_{k}": pl.Utf8 for k in ("rfm_segment", "tier", "lifecycle_state")}
            )
        )
        snapshot = snapshot.join(last_month, on="customer_id", how="left")
        frames.append(snapshot.select(list(SEGMENT_HISTORY_SCHEMA)).cast(SEGMENT_HISTORY_SCHEMA))
        previous = snapshot
    return pl.concat(frames).sort(SEGMENT_HISTORY_KEYS)


def segment_movements(history: pl.DataFrame) -> pl.DataFrame:
    """Customers per month, dimension and (last month's state -> this month's); in the tier
    dimension a churned customer's state is 'churned'; a first month comes from 'none'."""

    def tier_state(tier: str, state: str) -> pl.Expr:
        return pl.when(pl.col(state) == "churned").then(pl.lit("churned")).otherwise(pl.col(tier))

    moves = pl.concat(
        [
            history.select(
                "snapshot_month",
                "is_complete",
                dimension=pl.lit(dimension),
                from_state=from_state,
                to_state=to_state,
            )
            for dimension, from_state, to_state in (
                (
                    "tier",
                    tier_state("previous_tier", "previous_lifecycle_state"),
                    tier_state("tier", "lifecycle_state"),
                ),
                ("rfm_segment", pl.col("previous_rfm_segment"), pl.col("rfm_segment")),
                ("lifecycle_state", pl.col("previous_lifecycle_state"), pl.col("lifecycle_state")),
            )
        ]
    )
    return (
        moves.with_columns(pl.col("from_state").fill_null("none"))
        .group_by("snapshot_month", "dimension", "from_state", "to_state", "is_complete")
        .agg(customers=pl.len().cast(pl.Int64))
        .sort(SEGMENT_MOVEMENTS_KEYS)
    )


def winback_candidates(
    segments: pl.DataFrame,
    gross_margin: float = 1.0,
    ltv: pl.DataFrame | None = None,
    low_p_alive: float = 0.5,
) -> pl.DataFrame:
    """Win-back candidates of one snapshot: churned and at-risk customers, and the others
    whose P(alive) is below low_p_alive. Value: (1 - P(alive)) x predicted LTV if alive
    where `ltv` (customer_id, p_alive, predicted_ltv_if_alive) has a prediction, else net
    revenue x gross margin. Ranked by value, then fewer days since the last order, then
    customer_id."""
    if ltv is None:
        ltv = pl.DataFrame(
            schema={
                "customer_id": pl.String,
                "p_alive": pl.Float64,
                "predicted_ltv_if_alive": pl.Float64,
            }
        )
    lapsed = pl.col("lifecycle_state").is_in(["churned", "at_risk"])
    return (
        segments.join(
            ltv.select("customer_id", "p_alive", "predicted_ltv_if_alive"),
            on="customer_id",
            how="left",
        )
        .filter(lapsed | (pl.col("p_alive") < low_p_alive))
        .with_columns(
            winback_value=pl.when(pl.col("predicted_ltv_if_alive").is_null())
            .then(pl.col("net_revenue") * gross_margin)
            .otherwise((1 - pl.col("p_alive")) * pl.col("predicted_ltv_if_alive")),
            winback_reason_code=pl.when(lapsed)
            .then(pl.col("lifecycle_state"))
            .otherwise(pl.lit("low_p_alive")),
        )
        .sort(
            ["winback_value", "days_since_last_order", "customer_id"],
            descending=[True, False, False],
        )
        .with_columns(winback_rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int64))
        .select("winback_rank", "customer_id", "winback_value", "winback_reason_code")
    )
