"""The whole pipeline on generated orders, cell by cell against the independent reference."""

import csv
import json
from datetime import date, datetime, timedelta

import polars as pl
import pytest
import reference as ref
from conftest import as_of_of, assert_same_cells, read_table, run_cli, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipeline.lib.generate import generate_orders, write_orders

COHORT_KEYS = ["grain", "cohort_start", "period_number"]
RATE_KEYS = ["grain", "period_start", "base"]
WINDOW_DAYS = 90


def _reference_orders(orders: pl.DataFrame, as_of: date | None = None) -> pl.DataFrame:
    return ref.valid_orders_from_raw(orders, as_of=as_of)


@pytest.fixture(scope="module")
def run(pipeline_run):
    directory, orders, warehouse = pipeline_run
    as_of = as_of_of(warehouse)
    return warehouse, _reference_orders(orders, as_of), as_of


def test_as_of_is_the_newest_valid_order(pipeline_run):
    _, orders, warehouse = pipeline_run
    reference = _reference_orders(orders)
    plausible = reference.filter(pl.col("order_date") < date(2090, 1, 1))
    assert as_of_of(warehouse) == plausible["order_date"].max()


def test_fct_orders_holds_exactly_the_valid_orders(run):
    warehouse, reference, _ = run
    fct = read_table(warehouse, "fct_orders")
    assert sorted(fct["order_id"]) == sorted(reference["order_id"])
    assert read_table(warehouse, "dim_customers").height == reference["customer_id"].n_unique()


@pytest.mark.parametrize("grain", ["day", "week", "month", "quarter"])
def test_cohort_retention_matches_the_reference(run, grain):
    warehouse, reference, as_of = run
    expected = ref.cohort_retention(reference, as_of).filter(pl.col("grain") == grain)
    actual = read_table(warehouse, "cohort_retention").filter(pl.col("grain") == grain)
    assert_same_cells(actual, expected, COHORT_KEYS)


@pytest.mark.parametrize("grain", ["week", "month", "quarter", "year"])
def test_retention_rates_match_the_reference(run, grain):
    warehouse, reference, as_of = run
    expected = ref.retention_rates(reference, as_of, WINDOW_DAYS).filter(pl.col("grain") == grain)
    actual = read_table(warehouse, "retention_rates").filter(pl.col("grain") == grain)
    assert set(expected["base"]) == {"activity", "window"}
    assert_same_cells(actual, expected, RATE_KEYS)


def test_customer_base_daily_matches_the_reference(run):
    warehouse, reference, as_of = run
    expected = ref.customer_base_daily(reference, as_of, WINDOW_DAYS)
    assert_same_cells(read_table(warehouse, "customer_base_daily"), expected, ["activity_date"])


def test_every_row_is_accounted_for(pipeline_run):
    directory, orders, warehouse = pipeline_run
    (audit,) = read_table(warehouse, "load_audit").to_dicts()
    assert audit["status"] == "succeeded"
    assert audit["rows_read"] == orders.height
    assert audit["rows_read"] == (
        audit["rows_loaded"] + audit["rows_rejected"] + audit["rows_deduplicated"]
    )
    rejected = read_table(warehouse, "rejected_orders")
    assert rejected.height == audit["rows_rejected"]
    assert set(rejected["reason_code"]) == {
        "missing_customer_id", "missing_order_id", "unparseable_ordered_at",
        "unparseable_amount", "negative_amount", "refund_exceeds_amount",
        "future_ordered_at", "unknown_currency", "duplicate_conflict",
    }  # fmt: skip
    # Each rejected row points at its line in the file, and keeps what that line said.
    lines = list(csv.reader((directory / "orders.csv").read_text().splitlines()))
    header = lines[0]
    for source_row, raw_record in rejected.select("source_row", "raw_record").iter_rows():
        file_name, line = source_row.split(":")
        record = json.loads(raw_record)
        assert file_name == "orders.csv"
        assert [record[c] or "" for c in header] == lines[int(line) - 1]


@pytest.fixture(scope="module")
def as_of_run(tmp_path_factory, pipeline_run):
    _, orders, warehouse = pipeline_run
    as_of = as_of_of(warehouse) - timedelta(days=200)
    directory = tmp_path_factory.mktemp("as_of")
    write_orders(orders, directory / "orders.csv")
    config = write_config(directory, "orders.csv")
    run_cli(config, as_of)
    return config, directory / "warehouse.duckdb", orders, as_of


def test_as_of_ignores_later_orders(as_of_run):
    _, warehouse, orders, as_of = as_of_run
    reference = _reference_orders(orders, as_of)
    assert as_of_of(warehouse) == as_of
    assert read_table(warehouse, "fct_orders")["order_date"].max() <= as_of
    assert_same_cells(
        read_table(warehouse, "cohort_retention"),
        ref.cohort_retention(reference, as_of),
        COHORT_KEYS,
    )
    assert_same_cells(
        read_table(warehouse, "retention_rates"),
        ref.retention_rates(reference, as_of, WINDOW_DAYS),
        RATE_KEYS,
    )
    open_periods = read_table(warehouse, "retention_rates").filter(~pl.col("is_complete"))
    assert set(open_periods["grain"]) <= {"week", "month", "quarter", "year"}
    assert (open_periods["period_start"] <= as_of).all()


MART_KEYS = {
    "fct_orders": ["order_id"],
    "dim_customers": ["customer_id"],
    "cohort_retention": COHORT_KEYS,
    "retention_rates": RATE_KEYS,
    "customer_base_daily": ["activity_date"],
}


def _marts(warehouse):
    return {
        table: read_table(warehouse, table).drop("load_id", strict=False).sort(keys)
        for table, keys in MART_KEYS.items()
    }


def test_running_twice_leaves_the_same_tables(as_of_run):
    config, warehouse, _, as_of = as_of_run
    before = _marts(warehouse)
    run_cli(config, as_of)
    after = _marts(warehouse)
    for table in MART_KEYS:
        assert before[table].equals(after[table]), table


def test_an_updated_and_a_late_order_correct_every_table(tmp_path, pipeline_run):
    _, orders, _ = pipeline_run
    write_orders(orders, tmp_path / "orders.csv")
    config = write_config(tmp_path, "orders.csv")
    run_cli(config)
    warehouse = tmp_path / "warehouse.duckdb"
    fct = read_table(warehouse, "fct_orders")
    changed = fct.sort("order_id")["order_id"][5]
    changed_row = orders.filter(pl.col("order_id") == changed).row(0, named=True)
    updated_at = datetime.fromisoformat(changed_row["updated_at"]) + timedelta(days=3)
    cancelled = {**changed_row, "status": "cancelled", "updated_at": str(updated_at)}
    late = {
        **changed_row,
        "order_id": "LATE-1",
        "customer_id": "NEW-CUSTOMER",
        "ordered_at": "2024-05-05 10:00:00",
        "updated_at": "2024-05-05 10:00:00",
        "status": "completed",
    }
    updated = pl.concat([orders, pl.DataFrame([cancelled, late], schema=orders.schema)])
    write_orders(updated, tmp_path / "orders.csv")
    run_cli(config)
    fct = read_table(warehouse, "fct_orders")
    assert changed not in set(fct["order_id"])
    assert "LATE-1" in set(fct["order_id"])
    assert "NEW-CUSTOMER" in set(read_table(warehouse, "dim_customers")["customer_id"])
    as_of = as_of_of(warehouse)
    reference = _reference_orders(updated, as_of)
    assert_same_cells(
        read_table(warehouse, "cohort_retention"),
        ref.cohort_retention(reference, as_of),
        COHORT_KEYS,
    )


@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    customers=st.integers(min_value=40, max_value=160),
    seed=st.integers(min_value=0, max_value=10_000),
    window_days=st.integers(min_value=7, max_value=120),
)
def test_identities_hold_on_generated_shops(tmp_path_factory, customers, seed, window_days):
    directory = tmp_path_factory.mktemp("property")
    write_orders(generate_orders(customers=customers, seed=seed), directory / "orders.csv")
    run_cli(write_config(directory, "orders.csv", active_window_days=window_days))
    warehouse = directory / "warehouse.duckdb"
    rates = read_table(warehouse, "retention_rates")
    assert (
        rates["customers_end"]
        == rates["retained_customers"] + rates["reactivated_customers"] + rates["new_customers"]
    ).all()
    base = read_table(warehouse, "customer_base_daily").sort("activity_date")
    assert (
        base["active_end"]
        == base["active_start"]
        + base["new_customers"]
        + base["reactivated_customers"]
        - base["churned_customers"]
    ).all()
    cohorts = read_table(warehouse, "cohort_retention")
    assert (cohorts.filter(pl.col("period_number") == 0)["retention_rate"] == 1.0).all()
    customers_total = read_table(warehouse, "dim_customers").height
    sizes = (
        cohorts.filter(pl.col("period_number") == 0)
        .group_by("grain")
        .agg(pl.col("cohort_customers").sum())
    )
    assert (sizes["cohort_customers"] == customers_total).all()
