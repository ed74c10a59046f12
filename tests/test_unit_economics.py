"""Unit economics end to end: the real command on orders and a marketing spend file, the
unit_economics mart against the independent reference (tests/reference.py) and against a
hand-worked example, and the empty mart when no spend is configured."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
import reference as ref
from conftest import write_lines
from pipeline_helpers import (
    as_of_of,
    assert_same_cells,
    read_raw_orders,
    read_table,
    run_cli,
    without_future_orders,
    write_config,
)

from retention_pipeline.lib.generate import (
    generate_marketing_spend,
    generate_orders,
    write_orders,
)

CUSTOMERS = 400
SEED = 7
GROSS_MARGIN = 0.6
SPEND = {"path": "spend.csv", "columns": {"spend_date": "day", "spend": "cost"}}
# Rows added to the generated spend: a channel no order has, a channel spelt differently
# from the orders', spend before the first order and after the last, and four bad rows.
EXTRA_SPEND_ROWS = [
    "2024-03-10,Podcast,123.45",
    "2024-05-01, Paid_Search ,10",
    "2022-11-15,social,50",
    "2030-06-01,social,99",
    ",email,5",
    "2024-01-07,,5",
    "2024-01-07,social,-3",
    "2024-01-07,social,abc",
]
BAD_SPEND_REASONS = ["missing_spend_date", "missing_channel", "negative_spend", "unparseable_spend"]


def _mart_vs_reference(warehouse, orders_csv, spend_csv, gross_margin):
    as_of = as_of_of(warehouse)
    orders = ref.valid_orders_from_raw(
        without_future_orders(read_raw_orders(orders_csv)),
        as_of=as_of,
        keep_ordered_at=True,
        keep_channel=True,
    )
    spend = ref.marketing_spend_from_raw(pl.read_csv(spend_csv, infer_schema=False))
    expected = ref.unit_economics(orders, spend, as_of, gross_margin)
    assert_same_cells(
        read_table(warehouse, "unit_economics"),
        expected,
        ref.UNIT_ECONOMICS_KEYS,
        "unit_economics",
    )
    return expected


# --------------------------------------------------------------------------------------------
# Generated orders and spend, against the reference
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    directory = tmp_path_factory.mktemp("unit_economics")
    orders = generate_orders(customers=CUSTOMERS, seed=SEED)
    write_orders(orders, directory / "orders.csv")
    spend = generate_marketing_spend(orders, seed=SEED).rename({"date": "day", "spend": "cost"})
    lines = spend.write_csv().splitlines() + EXTRA_SPEND_ROWS
    write_lines(directory / "spend.csv", *lines)
    config = write_config(directory, marketing_spend=SPEND, gross_margin=GROSS_MARGIN)
    run_cli(config)
    return directory


def test_unit_economics_matches_the_reference(generated):
    spend = pl.read_csv(generated / "spend.csv", infer_schema=False).rename(
        {"day": "date", "cost": "spend"}
    )
    spend_csv = generated / "spend_renamed.csv"
    spend.write_csv(spend_csv)
    expected = _mart_vs_reference(
        generated / "warehouse.duckdb", generated / "orders.csv", spend_csv, GROSS_MARGIN
    )
    # The comparison covers the cases the extra rows set up.
    channels = set(expected["acquisition_channel"])
    assert {"all", "podcast", "paid_search", "organic"} <= channels
    assert expected["cohort_month"].min() == date(2022, 11, 1)
    assert expected["payback_months"].drop_nulls().len() > 0
    assert expected.filter(pl.col("new_customers") == 0)["cac"].null_count() > 0


def test_bad_spend_rows_are_quarantined_with_their_line(generated):
    rejected = read_table(generated / "warehouse.duckdb", "raw.rejected_marketing_spend")
    assert sorted(rejected["reason_code"]) == sorted(BAD_SPEND_REASONS)
    lines = (generated / "spend.csv").read_text().splitlines()
    for row in rejected.iter_rows(named=True):
        line = int(row["source_row"].removeprefix("spend.csv:"))
        assert lines[line - 1] in EXTRA_SPEND_ROWS[-4:]
    loaded = read_table(generated / "warehouse.duckdb", "raw.marketing_spend")
    assert loaded.height == len(lines) - 1 - len(BAD_SPEND_REASONS)


# --------------------------------------------------------------------------------------------
# A hand-worked example, then the same shop without marketing_spend
# --------------------------------------------------------------------------------------------

HEADER = (
    "order_id,customer_id,ordered_at,amount,status,refunded_amount,currency,updated_at,"
    "customer_email,channel"
)
# A buys through Ads in January and again through social (A stays an ads customer); B buys
# in January and March; C has no channel; D's cancelled email order does not acquire it, its
# ads order in February does; E buys in March, a month without spend. As-of: 2024-03-15.
HAND_ORDERS = [
    "o1,A,2024-01-05 10:00:00,30,completed,,USD,,,Ads",
    "o2,A,2024-02-03 10:00:00,50,completed,,USD,,,social",
    "o3,B,2024-01-08 10:00:00,20,completed,,USD,,,ads",
    "o4,B,2024-03-02 10:00:00,40,completed,,USD,,,ads",
    "o5,C,2024-01-09 10:00:00,10,completed,,USD,,,",
    "o6,D,2024-01-02 10:00:00,99,cancelled,,USD,,,email",
    "o7,D,2024-02-10 10:00:00,100,completed,,USD,,,ads",
    "o8,E,2024-03-15 09:00:00,25,completed,,USD,,,email",
]
HAND_SPEND = [
    "date,channel,spend",
    "2024-01-10,ads,60",
    "2024-01-20,ADS,40",
    "2024-01-15,email,30",
    "2024-02-05,ads,120",
    "2024-02-06,ads,-5",
]
HAND_MARGIN = 0.8
# (channel, cohort month, months since acquisition):
#   spend, new customers, CAC, cumulative margin, LTV:CAC, paid back, payback months
JAN, FEB = date(2024, 1, 1), date(2024, 2, 1)
HAND_EXPECTED = {
    ("ads", JAN, 0): (100, 2, 50.0, 40, 0.4, False, 2),
    ("ads", JAN, 1): (100, 2, 50.0, 80, 0.8, False, 2),
    ("ads", JAN, 2): (100, 2, 50.0, 112, 1.12, True, 2),
    ("ads", FEB, 0): (120, 1, 120.0, 80, 80 / 120, False, None),
    ("ads", FEB, 1): (120, 1, 120.0, 80, 80 / 120, False, None),
    ("email", JAN, 0): (30, 0, None, 0, None, False, None),
    ("email", JAN, 2): (30, 0, None, 0, None, False, None),
    ("email", FEB, 0): (0, 0, None, 0, None, False, None),
    ("unknown", JAN, 0): (0, 1, 0.0, 8, None, False, None),
    ("unknown", JAN, 2): (0, 1, 0.0, 8, None, False, None),
    ("unknown", FEB, 1): (0, 0, None, 0, None, False, None),
    ("all", JAN, 0): (130, 3, 130 / 3, 48, 48 / 130, False, None),
    ("all", JAN, 1): (130, 3, 130 / 3, 88, 88 / 130, False, None),
    ("all", JAN, 2): (130, 3, 130 / 3, 120, 120 / 130, False, None),
    ("all", FEB, 0): (120, 1, 120.0, 80, 80 / 120, False, None),
    ("all", FEB, 1): (120, 1, 120.0, 80, 80 / 120, False, None),
}


@pytest.fixture(scope="module")
def hand_worked(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hand_worked")
    write_lines(directory / "orders.csv", HEADER, *HAND_ORDERS)
    write_lines(directory / "spend.csv", *HAND_SPEND)
    config = write_config(
        directory, marketing_spend={"path": "spend.csv"}, gross_margin=HAND_MARGIN
    )
    result = run_cli(config)
    return directory, result.stdout


def test_hand_worked_example(hand_worked):
    directory, _ = hand_worked
    mart = read_table(directory / "warehouse.duckdb", "unit_economics")
    # ads, email and unknown (no social: a later order's channel acquires nobody) and all,
    # for January (ages 0-2) and February (ages 0-1); March has no spend, so no cohort.
    assert mart.height == 4 * 5
    assert set(mart["acquisition_channel"]) == {"ads", "email", "unknown", "all"}
    rows = {
        (r["acquisition_channel"], r["cohort_month"], r["months_since_acquisition"]): r
        for r in mart.iter_rows(named=True)
    }
    for key, values in HAND_EXPECTED.items():
        row = rows[key]
        spend, customers, cac, margin, ltv_to_cac, paid_back, payback = values
        assert float(row["marketing_spend"]) == spend, key
        assert row["new_customers"] == customers, key
        assert row["cac"] == pytest.approx(cac), key
        assert float(row["cumulative_margin"]) == pytest.approx(margin), key
        assert row["ltv_to_cac"] == pytest.approx(ltv_to_cac), key
        assert row["is_paid_back"] is paid_back, key
        assert row["payback_months"] == payback, key
    assert [rows[("ads", JAN, k)]["is_complete"] for k in range(3)] == [True, True, False]


def test_hand_worked_example_matches_the_reference(hand_worked):
    directory, _ = hand_worked
    _mart_vs_reference(
        directory / "warehouse.duckdb", directory / "orders.csv", directory / "spend.csv",
        HAND_MARGIN,
    )  # fmt: skip


def test_the_summary_shows_the_last_complete_months_cac(hand_worked):
    _, stdout = hand_worked
    assert "unit_economics" in stdout
    assert "CAC 2024-02 (all channels): 120.00 (spend 120.00, 1 new customers)" in stdout


def test_without_marketing_spend_the_mart_is_built_and_empty(hand_worked):
    directory, _ = hand_worked
    write_config(directory, gross_margin=HAND_MARGIN)  # the same shop, no marketing_spend
    run_cli(directory / "config.yaml")
    warehouse = directory / "warehouse.duckdb"
    assert read_table(warehouse, "unit_economics").is_empty()
    assert read_table(warehouse, "raw.marketing_spend").is_empty()
    assert read_table(warehouse, "raw.rejected_marketing_spend").is_empty()
    assert read_table(warehouse, "staging.stg_marketing__spend").is_empty()
    assert read_table(warehouse, "fct_orders").height == 7
