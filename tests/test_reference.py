"""Tests of the independent reference implementation in `tests/reference.py`.

Hand-worked examples (the arithmetic is in the comments), a brute-force pure-Python version of
every metric compared on random small order sets, and the identities of SPEC.md section 3.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:  # tests/ on sys.path (pytest's default rootdir-less import) or tests as a package
    import reference as ref
except ImportError:  # pragma: no cover
    from tests import reference as ref

D = date.fromisoformat


def orders_frame(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    """Valid orders from (customer_id, "YYYY-MM-DD", net_amount) tuples."""
    return pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "order_date": [D(r[1]) for r in rows],
            "net_amount": [float(r[2]) for r in rows],
        },
        schema=ref.ORDERS_SCHEMA,
    )


def row(frame: pl.DataFrame, **keys) -> dict:
    """The one row of `frame` whose columns equal `keys` (dates as ISO strings)."""
    conditions = [
        pl.col(k) == (D(v) if k in ("cohort_start", "period_start", "activity_date") else v)
        for k, v in keys.items()
    ]
    found = frame.filter(conditions)
    assert found.height == 1, (keys, found)
    return found.row(0, named=True)


def counts(r: dict) -> tuple:
    """(S, E, N, retained, reactivated, churned) of a retention_rates row."""
    return (
        r["customers_start"],
        r["customers_end"],
        r["new_customers"],
        r["retained_customers"],
        r["reactivated_customers"],
        r["churned_customers"],
    )


def rates(r: dict) -> tuple:
    return (r["crr"], r["retention_rate"], r["churn_rate"])


# --------------------------------------------------------------------------------------------
# Period helpers
# --------------------------------------------------------------------------------------------


def test_period_helpers_by_hand():
    # 2025-01-01 is a Wednesday in ISO week 1 of 2025, which starts on Monday 2024-12-30;
    # Sunday 2024-12-29 still belongs to the week of Monday 2024-12-23.
    assert ref.period_start(D("2025-01-01"), "week") == D("2024-12-30")
    assert ref.period_start(D("2024-12-29"), "week") == D("2024-12-23")
    assert ref.period_end(D("2024-12-29"), "week") == D("2024-12-29")
    assert ref.period_start(D("2024-08-17"), "quarter") == D("2024-07-01")
    assert ref.period_end(D("2024-11-30"), "quarter") == D("2024-12-31")
    assert ref.period_end(D("2024-02-10"), "month") == D("2024-02-29")  # leap year
    assert ref.period_end(D("2024-02-10"), "year") == D("2024-12-31")
    assert ref.period_end(D("2024-02-10"), "day") == D("2024-02-10")
    # month: 12 * (2025 - 2024) + (1 - 12) = 1; quarter: 4 * 1 + (1 - 4) = 1; week: 7 days / 7
    assert ref.period_number(D("2024-12-31"), D("2025-01-01"), "month") == 1
    assert ref.period_number(D("2024-12-31"), D("2025-01-01"), "quarter") == 1
    assert ref.period_number(D("2024-12-28"), D("2025-01-01"), "week") == 1
    assert ref.period_number(D("2024-12-28"), D("2025-01-01"), "day") == 4
    assert ref.period_number(D("2023-03-31"), D("2024-01-01"), "quarter") == 4  # 4 * 1 + 0
    assert [str(d) for d in ref.period_starts(D("2024-11-15"), D("2025-04-01"), "quarter")] == [
        "2024-10-01",
        "2025-01-01",
        "2025-04-01",
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.dates(date(1999, 1, 1), date(2031, 12, 31)), min_size=1, max_size=30),
    st.dates(date(1999, 1, 1), date(2031, 12, 31)),
)
def test_period_expressions_match_python(days, cohort_day):
    frame = pl.DataFrame({"d": days, "c": [cohort_day] * len(days)})
    for grain in ref.ALL_GRAINS:
        got = frame.select(
            start=ref.period_start_expr(pl.col("d"), grain),
            next=ref.next_period_start_expr(pl.col("d"), grain),
            end=ref.period_end_expr(pl.col("d"), grain),
            number=ref.period_number_expr(pl.col("c"), pl.col("d"), grain),
        )
        for d, start, nxt, end, number in zip(days, *got.get_columns(), strict=True):
            assert start == ref.period_start(d, grain)
            assert nxt == ref.next_period_start(d, grain)
            assert end == ref.period_end(d, grain)
            assert number == ref.period_number(cohort_day, d, grain)
            assert start <= d <= end and ref.period_start(nxt, grain) == nxt
            if grain == "week":
                assert start.isoweekday() == 1


# --------------------------------------------------------------------------------------------
# Hand-worked examples
# --------------------------------------------------------------------------------------------

# A: 2024-01-15 10, 2024-02-03 20, 2024-03-20 5 (after as_of: ignored)
# B: 2024-01-31 7, 2024-03-01 3
# C: 2024-02-10 50
SMALL = orders_frame(
    [
        ("A", "2024-01-15", 10),
        ("A", "2024-02-03", 20),
        ("A", "2024-03-20", 5),
        ("B", "2024-01-31", 7),
        ("B", "2024-03-01", 3),
        ("C", "2024-02-10", 50),
    ]
)
SMALL_AS_OF = D("2024-03-15")


def test_cohort_retention_by_hand():
    table = ref.cohort_retention(SMALL, SMALL_AS_OF)
    assert table.schema == pl.Schema(ref.COHORT_RETENTION_SCHEMA)
    assert table.equals(table.sort(ref.COHORT_RETENTION_KEYS))
    # Rows per grain: day: A 2024-01-15..03-15 = 17 + 29 + 15 = 61, B 01-31..03-15 = 45,
    # C 02-10..03-15 = 35 -> 141. week (as_of Friday 03-15 is in the week of 03-11): cohort
    # 01-15 has weeks 01-15..03-11 = 9, cohort 01-29 has 7, cohort 02-05 has 6 -> 22.
    # month: Jan cohort Jan..Mar = 3, Feb cohort Feb..Mar = 2 -> 5. quarter: 1.
    assert dict(table.group_by("grain").len().iter_rows()) == {
        "day": 141,
        "week": 22,
        "month": 5,
        "quarter": 1,
    }

    month = table.filter(grain="month").sort("cohort_start", "period_number")
    assert month.select(
        "cohort_start",
        "period_number",
        "period_start",
        "cohort_customers",
        "active_customers",
        "retention_rate",
        "net_revenue",
        "cumulative_net_revenue",
        "cumulative_revenue_per_customer",
        "repeat_customers",
        "repeat_purchase_rate",
        "is_complete",
    ).rows() == [
        # January cohort {A, B}: Jan both bought (10 + 7 = 17); Feb only A (20); Mar only B (3,
        # A's 03-20 order is after as_of). Cumulative 17, 37, 40; per customer / 2. A's
        # second order is in Feb, B's in Mar: repeat rate 0, 1/2, 2/2.
        (D("2024-01-01"), 0, D("2024-01-01"), 2, 2, 1.0, 17.0, 17.0, 8.5, 0, 0.0, True),
        (D("2024-01-01"), 1, D("2024-02-01"), 2, 1, 0.5, 20.0, 37.0, 18.5, 1, 0.5, True),
        (D("2024-01-01"), 2, D("2024-03-01"), 2, 1, 0.5, 3.0, 40.0, 20.0, 2, 1.0, False),
        # February cohort {C}: 50 in Feb, nothing in Mar (zero-filled row, incomplete).
        (D("2024-02-01"), 0, D("2024-02-01"), 1, 1, 1.0, 50.0, 50.0, 50.0, 0, 0.0, True),
        (D("2024-02-01"), 1, D("2024-03-01"), 1, 0, 0.0, 0.0, 50.0, 50.0, 0, 0.0, False),
    ]

    # Quarter: one cohort Q1 {A, B, C}, revenue 17 + 20 + 3 + 50 = 90, Q1 not over on 03-15.
    q = row(table, grain="quarter", cohort_start="2024-01-01", period_number=0)
    assert (q["cohort_customers"], q["active_customers"], q["net_revenue"]) == (3, 3, 90.0)
    assert (q["cumulative_revenue_per_customer"], q["is_complete"]) == (30.0, False)

    # Week: A (cohort Monday 01-15) bought again Saturday 02-03, in the week of 01-29: k = 2.
    week_a = table.filter(grain="week", cohort_start=D("2024-01-15"))
    assert week_a["period_number"].to_list() == list(range(9))
    assert week_a["active_customers"].to_list() == [1, 0, 1, 0, 0, 0, 0, 0, 0]
    assert week_a["cumulative_net_revenue"].to_list() == [10.0, 10.0] + [30.0] * 7
    # The week of 03-04 ends 03-10 <= as_of; the week of 03-11 ends 03-17 > as_of.
    assert week_a["is_complete"].to_list() == [True] * 8 + [False]
    # B: cohort week 01-29 (Wednesday 01-31); Friday 03-01 is in the week of 02-26: k = 4.
    b = row(table, grain="week", cohort_start="2024-01-29", period_number=4)
    assert (b["period_start"], b["active_customers"], b["net_revenue"]) == (D("2024-02-26"), 1, 3.0)

    # Day: A's 02-03 order is 19 days after 01-15; every day up to as_of is complete.
    a = row(table, grain="day", cohort_start="2024-01-15", period_number=19)
    assert (a["period_start"], a["active_customers"], a["net_revenue"]) == (D("2024-02-03"), 1, 20)
    assert table.filter(grain="day")["is_complete"].all()


def test_crr_worked_example_s50_e65_n25():
    # r01..r50 buy first in January; r01..r40 buy again in February; n01..n25 buy first in
    # February. February, activity base: S = 50, E = 40 + 25 = 65, N = 25, retained 40,
    # reactivated 0, churned 10. CRR = (65 - 25) / 50 = 0.8, retention 40/50 = 0.8,
    # churn 10/50 = 0.2.
    rows = [(f"r{i:02d}", "2024-01-10", 10) for i in range(1, 51)]
    rows += [(f"r{i:02d}", "2024-02-10", 10) for i in range(1, 41)]
    rows += [(f"n{i:02d}", "2024-02-20", 10) for i in range(1, 26)]
    orders = orders_frame(rows)
    table = ref.retention_rates(orders, D("2024-02-29"), 90)
    assert table.schema == pl.Schema(ref.RETENTION_RATES_SCHEMA)

    feb = row(table, grain="month", period_start="2024-02-01", base="activity")
    assert counts(feb) == (50, 65, 25, 40, 0, 10)
    assert rates(feb) == pytest.approx((0.8, 0.8, 0.2))
    assert feb["is_complete"] is True  # February ends 02-29 = as_of

    jan = row(table, grain="month", period_start="2024-01-01", base="activity")
    assert counts(jan) == (0, 50, 50, 0, 0, 0)
    assert rates(jan) == (None, None, None)  # no S: null rates, not a division by zero

    # Window base, 90 days: all 50 January buyers are still active on 02-29 (01-10 + 89 days
    # = 04-08), so S = 50, E = 50 + 25 = 75, N = 25, retained 50, churned 0, CRR 1.0.
    feb_w = row(table, grain="month", period_start="2024-02-01", base="window")
    assert counts(feb_w) == (50, 75, 25, 50, 0, 0)
    assert rates(feb_w) == pytest.approx((1.0, 1.0, 0.0))

    # Window base, 30 days: on 02-29 the window is 01-31..02-29, so r41..r50 (last order 01-10)
    # have lapsed: the same 65 / 40 / 10 as the activity base.
    feb_30 = row(
        ref.retention_rates(orders, D("2024-02-29"), 30),
        grain="month",
        period_start="2024-02-01",
        base="window",
    )
    assert counts(feb_30) == (50, 65, 25, 40, 0, 10)
    assert rates(feb_30) == pytest.approx((0.8, 0.8, 0.2))


def test_weekly_and_yearly_across_the_year_boundary():
    # X: Saturday 2024-12-28 (week of Monday 12-23) and Thursday 2025-01-02 (ISO week 1 of
    # 2025, starting Monday 2024-12-30); Y: Monday 2024-12-30. as_of = Sunday 2025-01-05.
    orders = orders_frame([("X", "2024-12-28", 5), ("X", "2025-01-02", 6), ("Y", "2024-12-30", 7)])
    as_of = D("2025-01-05")
    table = ref.retention_rates(orders, as_of, 7)
    assert table.filter(grain="week")["period_start"].unique().to_list() == [
        D("2024-12-23"),
        D("2024-12-30"),
    ]
    # Activity base. Week 12-23: E = {X} new. Week 12-30: S = {X}, E = {X, Y}, N = {Y}:
    # retained 1, CRR (2 - 1) / 1 = 1.0. The week ends 2025-01-05 = as_of: complete.
    w1 = row(table, grain="week", period_start="2024-12-23", base="activity")
    w2 = row(table, grain="week", period_start="2024-12-30", base="activity")
    assert counts(w1) == (0, 1, 1, 0, 0, 0) and rates(w1) == (None, None, None)
    assert counts(w2) == (1, 2, 1, 1, 0, 0) and rates(w2) == (1.0, 1.0, 0.0)
    assert w1["is_complete"] and w2["is_complete"]
    # Year: 2024 = {X, Y} both new; 2025 (to 01-05) = {X}: S 2, E 1, N 0, retained 1,
    # churned 1 (Y), CRR 1/2, churn 1/2; 2025 is not over.
    y2025 = row(table, grain="year", period_start="2025-01-01", base="activity")
    assert counts(y2025) == (2, 1, 0, 1, 0, 1)
    assert rates(y2025) == (0.5, 0.5, 0.5) and y2025["is_complete"] is False
    # Window base, 7 days. Week 12-23: S = active at end of 12-22 = {}, E = active at end of
    # 12-29 (orders 12-23..12-29) = {X}, N = {X}. Week 12-30: S = active at end of 12-29 = {X},
    # E = active at end of 01-05 (orders 12-30..01-05) = {X, Y}, N = {Y}.
    assert counts(row(table, grain="week", period_start="2024-12-23", base="window")) == (
        (0, 1, 1, 0, 0, 0)
    )
    assert counts(row(table, grain="week", period_start="2024-12-30", base="window")) == (
        (1, 2, 1, 1, 0, 0)
    )
    # Year 2025, window: S = active at end of 2024-12-31 (orders 12-25..12-31) = {X, Y};
    # E = active at end of 01-05 = {X, Y}; nobody's first order is in 2025: retained 2.
    y2025_w = row(table, grain="year", period_start="2025-01-01", base="window")
    assert counts(y2025_w) == (2, 2, 0, 2, 0, 0) and rates(y2025_w) == (1.0, 1.0, 0.0)

    # Cohorts: X's cohort week 2024-12-23 is active again in period 1 (week 2024-12-30);
    # month 2024-12 -> 2025-01 and quarter 2024-Q4 -> 2025-Q1 are period 1 as well.
    cohorts = ref.cohort_retention(orders, as_of)
    for grain, cohort, nxt in (
        ("week", "2024-12-23", "2024-12-30"),
        ("month", "2024-12-01", "2025-01-01"),
        ("quarter", "2024-10-01", "2025-01-01"),
    ):
        r = row(cohorts, grain=grain, cohort_start=cohort, period_number=1)
        assert r["period_start"] == D(nxt)
    wk = row(cohorts, grain="week", cohort_start="2024-12-23", period_number=1)
    assert (wk["cohort_customers"], wk["active_customers"], wk["net_revenue"]) == (1, 1, 6.0)
    assert (
        row(cohorts, grain="week", cohort_start="2024-12-30", period_number=0)["cohort_customers"]
        == 1
    )


def test_customer_base_daily_window_3_by_hand():
    # Window 3 days. P orders on days 1 and 5 (2024-01-01, 2024-01-05): active at the end of
    # days 1..3, churned on day 4 = 1 + 3 (last order + window), reactivated on day 5 by
    # ordering, active 5..7, churned on day 8. Q orders on days 2 and 3: new on day 2; its
    # order on day 3 is while active (not a reactivation); active 2..5, churned on day 6.
    orders = orders_frame(
        [("P", "2024-01-01", 1), ("P", "2024-01-05", 1), ("Q", "2024-01-02", 1)]
        + [("Q", "2024-01-03", 1)]
    )
    table = ref.customer_base_daily(orders, D("2024-01-08"), 3)
    assert table.schema == pl.Schema(ref.CUSTOMER_BASE_DAILY_SCHEMA)
    assert table.rows() == [
        # date           start new react churn end
        (D("2024-01-01"), 0, 1, 0, 0, 1),  # P new
        (D("2024-01-02"), 1, 1, 0, 0, 2),  # Q new
        (D("2024-01-03"), 2, 0, 0, 0, 2),  # Q orders while active
        (D("2024-01-04"), 2, 0, 0, 1, 1),  # P churns (day 1 + 3)
        (D("2024-01-05"), 1, 0, 1, 0, 2),  # P reactivates; Q still active (3 + 2 = 5)
        (D("2024-01-06"), 2, 0, 0, 1, 1),  # Q churns (day 3 + 3)
        (D("2024-01-07"), 1, 0, 0, 0, 1),
        (D("2024-01-08"), 1, 0, 0, 1, 0),  # P churns (day 5 + 3)
    ]

    # Same orders, weekly window base (Monday 2024-01-01). Week 01-01: S = active at end of
    # 12-31 = {}, E = active at end of 01-07 = {P}, N = {P} (Q's first order is in the week but
    # Q is not in E). Week 01-08 (e = as_of = 01-08): S = {P}, E = {} -> churned 1, CRR 0.
    rr = ref.retention_rates(orders, D("2024-01-08"), 3)
    w1 = row(rr, grain="week", period_start="2024-01-01", base="window")
    w2 = row(rr, grain="week", period_start="2024-01-08", base="window")
    assert counts(w1) == (0, 1, 1, 0, 0, 0)
    assert counts(w2) == (1, 0, 0, 0, 0, 1) and rates(w2) == (0.0, 0.0, 1.0)
    assert w1["is_complete"] is True and w2["is_complete"] is False
    # Activity base: week 01-01 E = {P, Q} both new; week 01-08 nobody bought: churned 2.
    a2 = row(rr, grain="week", period_start="2024-01-08", base="activity")
    assert counts(a2) == (2, 0, 0, 0, 0, 2) and rates(a2) == (0.0, 0.0, 1.0)


def test_window_reactivation_in_a_period():
    # Window 3. R orders Monday 2024-01-01 and Saturday 2024-01-13; as_of Sunday 01-14.
    # Week 01-08, window base: S = active at end of 01-07 (orders 01-05..01-07) = {}, E =
    # active at end of 01-14 (orders 01-12..01-14) = {R}, R is not new: reactivated 1, no S so
    # null rates. Activity base: R bought in both weeks: retained 1, CRR 1.0.
    orders = orders_frame([("R", "2024-01-01", 3), ("R", "2024-01-13", 4)])
    rr = ref.retention_rates(orders, D("2024-01-14"), 3)
    w = row(rr, grain="week", period_start="2024-01-08", base="window")
    assert counts(w) == (0, 1, 0, 0, 1, 0) and rates(w) == (None, None, None)
    a = row(rr, grain="week", period_start="2024-01-08", base="activity")
    assert counts(a) == (1, 1, 0, 1, 0, 0) and rates(a) == (1.0, 1.0, 0.0)
    daily = ref.customer_base_daily(orders, D("2024-01-14"), 3)
    assert row(daily, activity_date="2024-01-04")["churned_customers"] == 1
    assert row(daily, activity_date="2024-01-13")["reactivated_customers"] == 1
    assert daily["active_end"].to_list() == [1, 1, 1] + [0] * 9 + [1, 1]


def test_orders_after_as_of_and_empty_input():
    # Everything after as_of: no customer, no rows (with the documented schemas).
    late = orders_frame([("A", "2024-05-01", 1)])
    assert ref.cohort_retention(late, D("2024-04-30")).is_empty()
    assert ref.retention_rates(late, D("2024-04-30"), 30).is_empty()
    assert ref.customer_base_daily(late, D("2024-04-30"), 30).is_empty()
    empty = orders_frame([])
    assert ref.cohort_retention(empty, D("2024-04-30")).schema == pl.Schema(
        ref.COHORT_RETENTION_SCHEMA
    )
    assert ref.customer_base_daily(empty, D("2024-04-30"), 3).schema == pl.Schema(
        ref.CUSTOMER_BASE_DAILY_SCHEMA
    )
    with pytest.raises(ValueError):
        ref.customer_base_daily(late, D("2024-05-30"), 0)


# --------------------------------------------------------------------------------------------
# valid_orders_from_raw
# --------------------------------------------------------------------------------------------

RAW_COLUMNS = ref.RAW_COLUMNS[:8]  # the optional customer_email and channel are left out


def raw_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        [dict(zip(RAW_COLUMNS, r, strict=True)) for r in rows],
        schema={c: pl.Utf8 for c in RAW_COLUMNS},
        orient="row",
    )


def test_valid_orders_from_raw():
    t = "2024-01-05 10:00:00"
    raw = raw_frame(
        [
            # order_id, customer, ordered_at, amount, status, refunded, currency, updated_at
            ("O1", "c1", t, "10.00", "completed", "", "USD", "2024-01-05 10:00:00"),
            ("O1", "c1", t, "20.00", "completed", "", "USD", "2024-01-06 09:00:00"),  # newer
            ("O2", "c2", t, "5.00", "completed", None, "USD", "2024-01-06 12:00:00"),
            ("O2", "c2", t, "6.00", "completed", None, "USD", "2024-01-06 12:00:00"),  # tie
            ("O3", "c3", t, "30.00", "completed", None, "USD", "2024-01-07 08:00:00"),
            ("O3", "c3", t, "100.00", "completed", None, "USD", None),  # null = oldest
            ("O4", "c4", t, "9.00", " Cancelled ", None, "USD", None),  # excluded status
            ("O5", "c5", t, "50.00", "refunded", "20.00", "USD", None),  # partial refund: 30
            ("O6", "c6", t, "40.00", "refunded", "40.00", "USD", None),  # net 0: not valid
            ("O7", "c7", t, "10.00", "refunded", "15.00", "USD", None),  # refund > amount
            ("O8", "c8", t, "abc", "completed", None, "USD", None),  # unparseable amount
            ("O9", "c9", "not-a-date", "1.00", "completed", None, "USD", None),
            ("O10", "c10", t, "-42.50", "completed", None, "USD", None),  # negative
            ("O11", "c11", t, "12.00", "completed", None, "XXX", None),  # other currency
            ("O12", "", t, "12.00", "completed", None, "USD", None),  # no customer
            (None, "c13", t, "12.00", "completed", None, "USD", None),  # no order id
            ("O13", "c13", t, "12.00", "completed", "abc", "USD", None),  # garbage refund
            ("O14", "c14", t, "12.00", "TEST", None, "USD", None),  # excluded status
            ("O15", "c15", t, "12.00", "fraud", None, "USD", None),  # excluded status
            ("O16", "c16", t, "25.00", "completed", None, "USD", "2024-01-08 00:00:00"),
            ("O16", "c16", t, "25.00", "cancelled", None, "USD", "2024-01-09 00:00:00"),
            ("O17", "c17", t, "12.00", "completed", None, "USD", "2024-01-08 00:00:00"),
            ("O17", "c17", t, "abc", "completed", None, "USD", "2024-01-09 00:00:00"),  # bad
            ("O18", "c18", "2024-02-01 00:00:00", " 8 ", None, None, "", None),  # defaults
            ("O19", "c19", t, "0", "completed", None, "USD", None),  # net 0
            ("O20", "c20", "2099-01-01 00:00:00", "5.00", "completed", None, "USD", None),
            ("O21", "c21", t, "9.00", "completed", None, "USD", "2024-01-06 12:00:00.5"),
            ("O21", "c21", t, "8.00", "completed", None, "USD", "2024-01-06 12:00:00"),  # older
        ]
    )
    got = ref.valid_orders_from_raw(raw, as_of=D("2024-12-31"))
    assert got.schema == pl.Schema(ref.VALID_ORDERS_SCHEMA)
    assert got.rows() == [
        ("c1", "O1", D("2024-01-05"), 20.0),  # the newer version
        ("c17", "O17", D("2024-01-05"), 12.0),  # newer row quarantined: older version stays
        ("c18", "O18", D("2024-02-01"), 8.0),  # no status, no currency
        ("c2", "O2", D("2024-01-05"), 6.0),  # same updated_at: the later row
        ("c21", "O21", D("2024-01-05"), 9.0),  # fractional seconds count: 12:00:00.5 is newer
        ("c3", "O3", D("2024-01-05"), 30.0),  # a null updated_at loses to any timestamp
        ("c5", "O5", D("2024-01-05"), 30.0),  # 50 - 20
        # O16's newest version is cancelled, so the order is not a purchase at all.
    ]
    # Without as_of the order in 2099 stays.
    assert "O20" in ref.valid_orders_from_raw(raw)["order_id"].to_list()
    # Statuses are configurable: with none excluded, O4, O14, O15 and O16 come back.
    none_excluded = ref.valid_orders_from_raw(raw, excluded_statuses=(), as_of=D("2024-12-31"))
    assert {"O4", "O14", "O15", "O16"} <= set(none_excluded["order_id"])


def test_valid_orders_from_raw_timezones():
    raw = pl.DataFrame(
        {
            "order_id": ["T1", "T2", "T3", "T4"],
            "customer_id": ["c", "c", "c", "c"],
            "ordered_at": [
                "2024-03-10 23:30:00",  # EDT (-4): 2024-03-11 03:30 UTC
                "2024-03-10 18:00:00",  # EDT: 22:00 UTC, same day
                "2024-03-10 02:30:00",  # in the spring-forward gap: read as EST, 07:30 UTC
                "2024-11-03 01:30:00",  # repeated hour: the earlier (EDT) 05:30 UTC
            ],
            "amount": ["1", "1", "1", "1"],
        }
    )  # only the required columns
    ny = ref.valid_orders_from_raw(raw, source_timezone="America/New_York")
    assert ny["order_date"].to_list() == [D("2024-03-11"), D("2024-03-10")] + [
        D("2024-03-10"),
        D("2024-11-03"),
    ]
    # Naive values default to the reporting timezone: local dates unchanged.
    berlin = ref.valid_orders_from_raw(raw, reporting_timezone="Europe/Berlin")
    assert berlin["order_date"].to_list() == [D("2024-03-10")] * 3 + [D("2024-11-03")]
    # UTC source, Los Angeles reporting: 2024-03-10 02:30 UTC is 03-09 18:30 PST.
    la = ref.valid_orders_from_raw(
        raw, source_timezone="UTC", reporting_timezone="America/Los_Angeles"
    )
    assert la["order_date"].to_list() == [D("2024-03-10"), D("2024-03-10")] + [
        D("2024-03-09"),
        D("2024-11-02"),
    ]
    # as_of cuts on the local date.
    assert ref.valid_orders_from_raw(
        raw, source_timezone="America/New_York", as_of=D("2024-03-10")
    )["order_id"].to_list() == ["T2", "T3"]


# --------------------------------------------------------------------------------------------
# Brute force: the same definitions with Python sets, one day and one period at a time
# --------------------------------------------------------------------------------------------


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _periods(first: date, last: date, grain: str) -> list[date]:
    starts, p = [], ref.period_start(first, grain)
    while p <= last:
        starts.append(p)
        p = ref.next_period_start(p, grain)
    return starts


def _kept(orders: pl.DataFrame, as_of: date) -> list[tuple[str, date, float]]:
    return [r for r in orders.iter_rows() if r[1] <= as_of]


def brute_customer_base_daily(orders, as_of, window):
    rows = _kept(orders, as_of)
    if not rows:
        return []
    first = {}
    for c, d, _ in rows:
        first[c] = min(first.get(c, d), d)

    def active(d):
        return {c for c, o, _ in rows if d - timedelta(days=window) < o <= d}

    out = []
    for d in _days(min(first.values()), as_of):
        before, after = active(d - timedelta(days=1)), active(d)
        bought = {c for c, o, _ in rows if o == d}
        new = {c for c in bought if first[c] == d}
        out.append(
            (d, len(before), len(new), len(bought - new - before), len(before - after), len(after))
        )
    return out


def brute_retention_rates(orders, as_of, window):
    rows = _kept(orders, as_of)
    if not rows:
        return []
    first = {}
    for c, d, _ in rows:
        first[c] = min(first.get(c, d), d)

    def bought(lo, hi):
        return {c for c, o, _ in rows if lo <= o <= hi}

    def active(d):
        return bought(d - timedelta(days=window - 1), d)

    out = []
    for grain in ref.RATE_GRAINS:
        for p in _periods(min(first.values()), as_of, grain):
            end = ref.period_end(p, grain)
            e = min(end, as_of)
            day_before = p - timedelta(days=1)
            prev = ref.period_start(day_before, grain)
            firsts = {c for c in first if p <= first[c] <= e}
            for base, s_set, e_set in (
                ("activity", bought(prev, day_before), bought(p, e)),
                ("window", active(day_before), active(e)),
            ):
                new = firsts & e_set
                s_n = len(s_set)
                out.append(
                    (grain, p, base, s_n, len(e_set), len(new), len(s_set & e_set))
                    + (len(e_set - s_set - new), len(s_set - e_set))
                    + tuple(
                        None if s_n == 0 else x / s_n
                        for x in (len(e_set) - len(new), len(s_set & e_set), len(s_set - e_set))
                    )
                    + (end <= as_of,)
                )
    return sorted(out, key=lambda r: (r[0], r[1], r[2]))


def brute_cohort_retention(orders, as_of):
    rows = _kept(orders, as_of)
    if not rows:
        return []
    first = {}
    for c, d, _ in rows:
        first[c] = min(first.get(c, d), d)
    out = []
    for grain in ref.COHORT_GRAINS:
        cohorts = {}
        for c, d in first.items():
            cohorts.setdefault(ref.period_start(d, grain), set()).add(c)
        for cohort, members in cohorts.items():
            cumulative = 0.0
            for p in _periods(cohort, as_of, grain):
                end = ref.period_end(p, grain)
                inside = [(c, a) for c, o, a in rows if c in members and p <= o <= end]
                revenue = sum(a for _, a in inside)
                cumulative += revenue
                active = len({c for c, _ in inside})
                n = len(members)
                number = ref.period_number(cohort, p, grain)
                orders_to_date = [c for c, o, _ in rows if c in members and o <= end]
                repeaters = len({c for c in orders_to_date if orders_to_date.count(c) >= 2})
                out.append(
                    (grain, cohort, number, p, n, active, active / n, revenue, cumulative)
                    + (cumulative / n, repeaters, repeaters / n, end <= as_of)
                )
    return sorted(out, key=lambda r: (r[0], r[1], r[2]))


def assert_rows_equal(got: list[tuple], want: list[tuple]):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w)
        for a, b in zip(g, w, strict=True):
            if isinstance(b, float):
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (g, w)
            else:
                assert a == b, (g, w)


START = date(2023, 11, 20)
small_orders = st.lists(
    st.tuples(
        st.sampled_from("abcdef"),
        st.integers(0, 120).map(lambda i: START + timedelta(days=i)),
        st.integers(1, 10_000).map(lambda cents: cents / 100),
    ),
    max_size=25,
).map(
    lambda rows: pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "order_date": [r[1] for r in rows],
            "net_amount": [r[2] for r in rows],
        },
        schema=ref.ORDERS_SCHEMA,
    )
)
as_of_dates = st.integers(0, 130).map(lambda i: START + timedelta(days=i))
windows = st.sampled_from([1, 2, 3, 7, 30, 45])
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(small_orders, as_of_dates, windows)
def test_customer_base_daily_matches_brute_force_and_identities(orders, as_of, window):
    table = ref.customer_base_daily(orders, as_of, window)
    assert table.rows() == brute_customer_base_daily(orders, as_of, window)
    if table.is_empty():
        return
    start, new, react, churn, end = (
        table[c]
        for c in (
            "active_start",
            "new_customers",
            "reactivated_customers",
            "churned_customers",
            "active_end",
        )
    )
    assert (end == start + new + react - churn).all()
    assert start[0] == 0
    assert (start[1:] == end[:-1]).all()  # active_start(d) = active_end(d - 1)
    assert table["activity_date"].to_list() == _days(table["activity_date"][0], as_of)


@PROPERTY
@given(small_orders, as_of_dates, windows)
def test_retention_rates_match_brute_force_and_identities(orders, as_of, window):
    table = ref.retention_rates(orders, as_of, window)
    assert_rows_equal(table.rows(), brute_retention_rates(orders, as_of, window))
    for r in table.iter_rows(named=True):
        s, e, n, retained, reactivated, churned = counts(r)
        assert e == retained + reactivated + n
        assert s == retained + churned
        if s == 0:
            assert rates(r) == (None, None, None)
        else:
            assert r["crr"] == pytest.approx((e - n) / s)
    # The window base agrees with the daily table: S = active at the end of the day before
    # the period (0 before the first day), E = active at the end of its effective end.
    daily = dict(
        ref.customer_base_daily(orders, as_of, window)
        .select("activity_date", "active_end")
        .iter_rows()
    )
    for r in table.filter(base="window").iter_rows(named=True):
        e = min(ref.period_end(r["period_start"], r["grain"]), as_of)
        assert r["customers_end"] == daily[e]
        assert r["customers_start"] == daily.get(r["period_start"] - timedelta(days=1), 0)


@PROPERTY
@given(small_orders, as_of_dates)
def test_cohort_retention_matches_brute_force_and_identities(orders, as_of):
    table = ref.cohort_retention(orders, as_of)
    assert_rows_equal(table.rows(), brute_cohort_retention(orders, as_of))
    kept = orders.filter(pl.col("order_date") <= as_of)
    customers = kept["customer_id"].n_unique()
    assert (table.filter(period_number=0)["retention_rate"] == 1.0).all()
    for grain in ref.COHORT_GRAINS:
        sizes = table.filter(grain=grain).unique("cohort_start")["cohort_customers"]
        assert sizes.sum() == customers  # every customer in exactly one cohort per grain
    # Cumulative revenue at each cohort's last period = the cohort's total revenue.
    last = table.group_by("grain", "cohort_start").agg(
        pl.col("cumulative_net_revenue").sort_by("period_number").last()
    )
    total = table.group_by("grain", "cohort_start").agg(pl.col("net_revenue").sum())
    joined = last.join(total, on=["grain", "cohort_start"])
    for cumulative, revenue in joined.select("cumulative_net_revenue", "net_revenue").rows():
        assert cumulative == pytest.approx(revenue)
    assert sum(r for r in joined["net_revenue"]) == pytest.approx(
        len(ref.COHORT_GRAINS) * kept["net_amount"].sum()
    )


# --------------------------------------------------------------------------------------------
# Scale: ~100k orders in a few seconds, identities intact
# --------------------------------------------------------------------------------------------


def test_scale_100k_orders():
    rng = np.random.default_rng(7)
    n = 100_000
    start = date(2023, 1, 1)
    customers = rng.integers(0, 30_000, n)
    # A customer's orders start on its own arrival day: first-order dates spread over 3 years.
    arrival = rng.integers(0, 3 * 365, 30_000)
    offset = np.minimum(arrival[customers] + rng.exponential(120, n).astype(int), 3 * 365 - 1)
    orders = pl.DataFrame(
        {
            "customer_id": [f"C{c:06d}" for c in customers],
            "order_date": [start + timedelta(days=int(d)) for d in offset],
            "net_amount": np.round(rng.uniform(1, 200, n), 2),
        },
        schema=ref.ORDERS_SCHEMA,
    )
    as_of = date(2025, 12, 31)
    daily = ref.customer_base_daily(orders, as_of, 90)
    assert (
        daily["active_end"]
        == daily["active_start"]
        + daily["new_customers"]
        + daily["reactivated_customers"]
        - daily["churned_customers"]
    ).all()
    assert daily["new_customers"].sum() == orders["customer_id"].n_unique()
    rr = ref.retention_rates(orders, as_of, 90)
    assert (
        rr["customers_end"]
        == rr["retained_customers"] + rr["reactivated_customers"] + rr["new_customers"]
    ).all()
    cohorts = ref.cohort_retention(orders, as_of)
    months = cohorts.filter(grain="month")
    assert months["net_revenue"].sum() == pytest.approx(orders["net_amount"].sum())
