"""Tests of the segments reference (tests/reference_segments.py): the hand-worked example
that the dbt unit test customer_segment_history_rfm_tiers_and_states also uses, and the
identities on random order sets."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import reference as ref
import reference_segments as seg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

D = date.fromisoformat
HAND = pl.DataFrame(
    [
        ("A", D("2024-01-05"), 100.0),
        ("A", D("2024-01-28"), 50.0),
        ("A", D("2024-02-18"), 30.0),
        ("B", D("2024-01-10"), 500.0),
        ("C", D("2024-01-02"), 20.0),
        ("C", D("2024-01-02"), 20.0),
        ("D", D("2024-01-20"), 40.0),
        ("D", D("2024-02-14"), 60.0),
        ("E", D("2024-02-19"), 10.0),
        ("F", D("2024-02-10"), 30.0),
        ("F", D("2024-02-17"), 30.0),
    ],
    schema=ref.ORDERS_SCHEMA,
    orient="row",
)
HAND_SETTINGS = seg.SegmentSettings(
    window_days=10, at_risk_days=5, vip_share=0.2, pre_vip_share=0.2
)


def test_segment_history_by_hand():
    history = seg.customer_segment_history(HAND, D("2024-02-20"), HAND_SETTINGS)
    jan, feb = D("2024-01-01"), D("2024-02-01")
    measures = ["days_since_last_order", "valid_orders", "net_revenue"]
    scores = ["recency_score", "frequency_score", "monetary_score", "rfm_segment", "tier"]
    states = ["lifecycle_state", "churn_type", "previous_tier", "previous_lifecycle_state"]
    keys = ["snapshot_month", "customer_id"]
    # January, 4 customers: score = 1 + floor(5 (rank - 1) / 4); C and D tie on revenue 40.
    # VIP: round(4 x 0.2) = 1 (B); pre-VIP: round(4 x 0.4) - 1 = 1 (A).
    # February, 6 customers: recency C 49, B 41, D 6, F 3, A 2, E 1 days -> 1 1 2 3 4 5.
    assert history.select(keys + measures + scores).rows() == [
        (jan, "A", 3, 2, 150.0, 4, 3, 3, "potential_loyalists", "pre_vip"),
        (jan, "B", 21, 1, 500.0, 2, 1, 4, "hibernating", "vip"),
        (jan, "C", 29, 2, 40.0, 1, 3, 1, "at_risk", "standard"),
        (jan, "D", 11, 1, 40.0, 3, 1, 1, "about_to_sleep", "standard"),
        (feb, "A", 2, 3, 180.0, 4, 5, 4, "loyal", "pre_vip"),
        (feb, "B", 41, 1, 500.0, 1, 1, 5, "hibernating", "vip"),
        (feb, "C", 49, 2, 40.0, 1, 2, 1, "hibernating", "standard"),
        (feb, "D", 6, 2, 100.0, 2, 2, 3, "hibernating", "standard"),
        (feb, "E", 1, 1, 10.0, 5, 1, 1, "new", "standard"),
        (feb, "F", 3, 2, 60.0, 3, 2, 2, "about_to_sleep", "standard"),
    ]
    # A's last order ended a 21-day lapse; B churned with one order, C with two on one day;
    # D is 6 days quiet (at risk after 5); E has one order day; F reordered after 7 days.
    assert history.select(keys + states).rows() == [
        (jan, "A", "reactivated", None, None, None),
        (jan, "B", "churned", "quick", None, None),
        (jan, "C", "churned", "late", None, None),
        (jan, "D", "churned", "quick", None, None),
        (feb, "A", "reactivated", None, "pre_vip", "reactivated"),
        (feb, "B", "churned", "quick", "vip", "churned"),
        (feb, "C", "churned", "late", "standard", "churned"),
        (feb, "D", "at_risk", None, "standard", "churned"),
        (feb, "E", "new", None, None, None),
        (feb, "F", "returning", None, None, None),
    ]
    assert history.filter(snapshot_month=jan)["snapshot_date"].to_list() == [D("2024-01-31")] * 4
    assert history.filter(snapshot_month=feb)["is_complete"].to_list() == [False] * 6

    moves = seg.segment_movements(history).filter(snapshot_month=feb, dimension="tier")
    assert sorted(moves.select("from_state", "to_state", "customers").rows()) == [
        ("churned", "churned", 2),  # B (a VIP, but churned) and C
        ("churned", "standard", 1),  # D came back
        ("none", "standard", 2),  # E and F are new this month
        ("pre_vip", "pre_vip", 1),
    ]

    winback = seg.winback_candidates(history.filter(snapshot_month=feb))
    assert winback.rows() == [
        (1, "B", 500.0, "churned"),
        (2, "D", 100.0, "at_risk"),
        (3, "C", 40.0, "churned"),
    ]


START = date(2023, 1, 1)
order_sets = st.lists(
    st.tuples(
        st.sampled_from([f"c{i:02d}" for i in range(40)]),
        st.integers(0, 200).map(lambda i: START + timedelta(days=i)),
        st.sampled_from([5.0, 10.0, 25.5, 80.0, 300.0]),
    ),
    min_size=1,
    max_size=80,
).map(lambda rows: pl.DataFrame(rows, schema=ref.ORDERS_SCHEMA, orient="row"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_sets, st.integers(0, 220), st.sampled_from([7, 30, 60]))
def test_segment_identities(orders, as_of_day, window):
    as_of = START + timedelta(days=as_of_day)
    if orders.filter(pl.col("order_date") <= as_of).is_empty():
        return
    settings_ = seg.SegmentSettings(window_days=window)
    history = seg.customer_segment_history(orders, as_of, settings_)
    assert history.select(seg.SEGMENT_HISTORY_KEYS).is_duplicated().sum() == 0
    for (month,), snapshot in history.group_by("snapshot_month"):
        n = snapshot.height
        kept = orders.filter(pl.col("order_date") <= snapshot["snapshot_date"][0])
        assert sorted(snapshot["customer_id"]) == sorted(kept["customer_id"].unique())
        tiers = dict(snapshot.group_by("tier").len().iter_rows())
        assert abs(tiers.get("vip", 0) - 0.05 * n) <= 1, (month, tiers)
        assert abs(tiers.get("pre_vip", 0) - 0.15 * n) <= 1, (month, tiers)
        # A better value never gets a lower score.
        for value, score in (
            (-pl.col("days_since_last_order"), "recency_score"),
            (pl.col("valid_orders"), "frequency_score"),
            (pl.col("net_revenue"), "monetary_score"),
        ):
            ordered = snapshot.sort(value)[score]
            assert (ordered.diff().drop_nulls() >= 0).all()
        # VIPs out-earn pre-VIPs, who out-earn the rest.
        revenue = snapshot.group_by("tier").agg(
            low=pl.col("net_revenue").min(), high=pl.col("net_revenue").max()
        )
        bounds = {t: (lo, hi) for t, lo, hi in revenue.iter_rows()}
        if "vip" in bounds and "pre_vip" in bounds:
            assert bounds["vip"][0] >= bounds["pre_vip"][1]
    churned = history["days_since_last_order"] >= window
    assert ((history["lifecycle_state"] == "churned") == churned).all()
    assert (history["churn_type"].is_null() == ~churned).all()
    at_risk = history.filter(lifecycle_state="at_risk")["days_since_last_order"]
    assert ((at_risk >= window // 2) & (at_risk < window)).all()
    moves = seg.segment_movements(history)
    for dimension in ("tier", "rfm_segment", "lifecycle_state"):
        per_month = (
            moves.filter(dimension=dimension)
            .group_by("snapshot_month")
            .agg(pl.col("customers").sum())
        )
        sizes = history.group_by("snapshot_month").len()
        joined = per_month.join(sizes, on="snapshot_month")
        assert (joined["customers"] == joined["len"]).all()


def test_winback_ranks_by_predicted_value_at_risk():
    """The hand-worked example of the dbt unit test winback_candidates_ranked_by_value_with_
    reasons: V (returning, P(alive) 0.3) 0.7 x 500 = 350; S 0.8 x 100 = 80 ties with U's
    historical 80 (no prediction) and goes first with fewer days; T 0.4 x 150 = 60."""
    segments = pl.DataFrame(
        {
            "customer_id": ["R", "S", "T", "U", "V"],
            "lifecycle_state": ["returning", "churned", "at_risk", "churned", "returning"],
            "days_since_last_order": [3, 120, 50, 200, 20],
            "net_revenue": [900.0, 300.0, 300.0, 80.0, 400.0],
        }
    )
    ltv = pl.DataFrame(
        {
            "customer_id": ["R", "S", "T", "U", "V"],
            "p_alive": [0.9, 0.2, 0.6, None, 0.3],
            "predicted_ltv_if_alive": [500.0, 100.0, 150.0, None, 500.0],
        }
    )
    ranked = seg.winback_candidates(segments, ltv=ltv, low_p_alive=0.5)
    assert [(r, c, round(v, 9), code) for r, c, v, code in ranked.rows()] == [
        (1, "V", 350.0, "low_p_alive"),
        (2, "S", 80.0, "churned"),
        (3, "U", 80.0, "churned"),
        (4, "T", 60.0, "at_risk"),
    ]
