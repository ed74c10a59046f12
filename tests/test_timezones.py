"""The reporting timezone moves day boundaries, end to end: UTC timestamps near midnight and
across New York's spring-forward night land on New York's local days, months and cohorts."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from pipeline_helpers import read_table, run_cli, write_config

# Source timestamps are UTC; New York is UTC-5 until 2024-03-10 02:00 local, UTC-4 after.
ORDERS = """order_id,customer_id,ordered_at,amount
o1,c1,2024-04-01 03:30:00,10
o2,c1,2024-05-01 12:00:00,20
o3,c2,2024-03-10 06:30:00,30
o4,c2,2024-03-10 07:30:00,40
o5,c3,2024-03-01 04:59:00,50
o6,c3,2024-03-01 05:00:00,60
"""

LOCAL_DATES = {
    "o1": date(2024, 3, 31),  # 23:30 EDT
    "o2": date(2024, 5, 1),
    "o3": date(2024, 3, 10),  # 01:30 EST, before the change
    "o4": date(2024, 3, 10),  # 03:30 EDT, after it: the same local day
    "o5": date(2024, 2, 29),  # 23:59 EST
    "o6": date(2024, 3, 1),  # 00:00 EST
}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    directory = tmp_path_factory.mktemp("new_york")
    (directory / "orders.csv").write_text(ORDERS)
    columns = {c: c for c in ("order_id", "customer_id", "ordered_at", "amount")}
    config = write_config(
        directory,
        source={"type": "file", "path": "orders.csv", "timezone": "UTC", "columns": columns},
        reporting_timezone="America/New_York",
    )
    run_cli(config)
    return directory / "warehouse.duckdb"


def test_orders_get_their_local_dates(warehouse):
    fct = read_table(warehouse, "fct_orders").select("order_id", "order_date").sort("order_id")
    assert dict(fct.rows()) == LOCAL_DATES


def test_customers_start_their_local_cohorts(warehouse):
    dim = read_table(warehouse, "dim_customers").sort("customer_id")
    assert dim.select("customer_id", "first_order_date", "cohort_month").rows() == [
        ("c1", date(2024, 3, 31), date(2024, 3, 1)),
        ("c2", date(2024, 3, 10), date(2024, 3, 1)),
        ("c3", date(2024, 2, 29), date(2024, 2, 1)),
    ]


def test_monthly_cohorts_follow_local_months(warehouse):
    cells = (
        read_table(warehouse, "cohort_retention")
        .filter(pl.col("grain") == "month")
        .sort("cohort_start", "period_number")
        .select("cohort_start", "period_number", "cohort_customers", "active_customers")
    )
    # February: c3 (Feb 29 local), back on Mar 1 local. March: c1 and c2; c1 again in May.
    assert cells.rows() == [
        (date(2024, 2, 1), 0, 1, 1),
        (date(2024, 2, 1), 1, 1, 1),
        (date(2024, 2, 1), 2, 1, 0),
        (date(2024, 2, 1), 3, 1, 0),
        (date(2024, 3, 1), 0, 2, 2),
        (date(2024, 3, 1), 1, 2, 0),
        (date(2024, 3, 1), 2, 2, 1),
    ]


def test_a_day_that_skips_an_hour_is_one_day(warehouse):
    cells = read_table(warehouse, "cohort_retention").filter(
        (pl.col("grain") == "day") & (pl.col("cohort_start") == date(2024, 3, 10))
    )
    first = cells.filter(pl.col("period_number") == 0)
    assert first.select("cohort_customers", "active_customers", "net_revenue").rows() == [
        (1, 1, 70)
    ]
    # The next day is period 1, whatever the length of the day before.
    assert cells.filter(pl.col("period_number") == 1)["period_start"].item() == date(2024, 3, 11)
