"""The whole pipeline on generated orders (bad rows included), cell by cell against the
independent reference in tests/reference.py.

One full run builds the base warehouse. The other scenarios start from copies of its
directory (data, config, warehouse) and run in the background, two at a time, while the
base comparisons and the Hypothesis shops (a few small generated shops, each with its own
window) run: a second run of the same config (idempotency), a run with --as-of, a run after
an order was cancelled and a late order arrived, and the nightly job's partition and
backfill runs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import polars.selectors as cs
import pytest
import reference as ref
import reference_segments as seg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_helpers import (
    REASON_OF_BAD_ROW,
    ROOT,
    WINDOW_DAYS,
    as_of_of,
    assert_marts_match_reference,
    assert_same_cells,
    assert_same_marts,
    backfill_step,
    columns_holding,
    copy_run_directory,
    csv_data_lines,
    mart_snapshot,
    partition_step,
    read_raw_orders,
    read_table,
    reference_orders,
    run_cli,
    run_nightly_steps,
    write_config,
)

from retention_pipeline.lib.generate import generate_orders, write_orders

CUSTOMERS = 800
SEED = 20_251
AS_OF_DAYS_BACK = 200  # the --as-of run stops this many days before the last order
LATE_DAYS_BACK = 40  # the late order is dated this many days before the last day
BACKFILL_DAYS = 3


@dataclass(frozen=True)
class Run:
    directory: Path

    @property
    def csv(self) -> Path:
        return self.directory / "orders.csv"

    @property
    def config(self) -> Path:
        return self.directory / "config.yaml"

    @property
    def warehouse(self) -> Path:
        return self.directory / "warehouse.duckdb"

    def raw(self) -> pl.DataFrame:
        return read_raw_orders(self.csv)


# --------------------------------------------------------------------------------------------
# The base run, and the scenarios that start from it
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Run:
    run = Run(tmp_path_factory.mktemp("base"))
    write_orders(generate_orders(customers=CUSTOMERS, seed=SEED), run.csv)
    write_config(run.directory)
    run_cli(run.config)
    return run


@pytest.fixture(scope="session")
def base_orders(base) -> pl.DataFrame:
    """The reference's valid orders of the base data (up to the pipeline's as-of date)."""
    return reference_orders(base.raw(), as_of_of(base.warehouse))


def _last_day(base: Run) -> date:
    return as_of_of(base.warehouse)


def _as_of_day(base: Run) -> date:
    return _last_day(base) - timedelta(days=AS_OF_DAYS_BACK)


@dataclass(frozen=True)
class Correction:
    """An existing order cancelled later, and a late order of a new customer."""

    cancelled_order: str
    cancelled_customer: str
    customer_second_date: date
    late_order: str
    late_customer: str
    late_date: date


def _correct_orders(base: Run, directory: Path) -> Correction:
    """Appends to `directory`/orders.csv a newer version of one order (cancelled on the last
    day) and a late order of a new customer, dated before the last day but arriving on it.
    The cancelled order is the first order of a customer who ordered again on a later day,
    so the customer's cohort moves. Appending keeps every other row on its line."""
    last = _last_day(base)
    raw = base.raw()
    orders = reference_orders(raw, last)
    # Plain orders (completed, nothing refunded, so updated_at = ordered_at) found once.
    plain = (
        raw.filter(pl.col("status") == "completed", pl.col("refunded_amount") == "0.00")
        .group_by("order_id")
        .len()
        .filter(pl.col("len") == 1)["order_id"]
    )
    days = (
        orders.group_by("customer_id")
        .agg(
            first=pl.col("order_date").min(),
            second=pl.col("order_date").unique().sort().get(1, null_on_oob=True),
            on_first=(pl.col("order_date") == pl.col("order_date").min()).sum(),
            first_order=pl.col("order_id").sort_by("order_date").first(),
        )
        .filter(
            pl.col("second").is_not_null(),
            pl.col("on_first") == 1,
            pl.col("first_order").is_in(plain.implode()),
        )
        .sort("customer_id")
    )
    chosen = days.row(0, named=True)
    row = raw.filter(pl.col("order_id") == chosen["first_order"]).row(0, named=True)
    cancelled = {**row, "status": "cancelled", "updated_at": f"{last} 12:00:00"}
    late_date = last - timedelta(days=LATE_DAYS_BACK)
    late = {
        **row,
        "order_id": "LATE-0000001",
        "customer_id": "C-LATE-1",
        "customer_email": "late@example.com",
        "ordered_at": f"{late_date} 10:00:00",
        "updated_at": f"{last} 18:00:00",
        "amount": "123.45",
        "refunded_amount": "0.00",
        "status": "completed",
    }
    text = base.csv.read_text()
    assert text.endswith("\n")
    appended = pl.DataFrame([cancelled, late], schema=raw.schema).write_csv(include_header=False)
    (directory / "orders.csv").write_text(text + appended)
    return Correction(
        cancelled_order=row["order_id"],
        cancelled_customer=row["customer_id"],
        customer_second_date=chosen["second"],
        late_order=late["order_id"],
        late_customer=late["customer_id"],
        late_date=late_date,
    )


def _rerun(base: Run, directory: Path) -> Run:
    run = Run(copy_run_directory(base.directory, directory))
    run_cli(run.config)
    return run


def _as_of(base: Run, directory: Path) -> Run:
    run = Run(copy_run_directory(base.directory, directory))
    run_cli(run.config, _as_of_day(base))
    return run


def _corrected(base: Run, directory: Path) -> tuple[Run, Correction]:
    run = Run(copy_run_directory(base.directory, directory))
    correction = _correct_orders(base, run.directory)
    run_cli(run.config)
    return run, correction


@dataclass(frozen=True)
class Nightly:
    run: Run
    day: date
    first_partition_run: Path
    second_partition_run: Path
    backfill_run: Path


def _nightly(base: Run, directory: Path) -> Nightly:
    """On a copy of the base warehouse, with the corrected data: the schedule's run of the
    last day's partition (lookback 3 days) twice, then a backfill of the last days as one
    run; a copy of the warehouse after each."""
    run = Run(copy_run_directory(base.directory, directory))
    _correct_orders(base, run.directory)
    day = _last_day(base)
    snapshots = [directory / f"after_{name}.duckdb" for name in ("first", "second", "backfill")]
    run_nightly_steps(
        run.config,
        run.warehouse,
        [
            partition_step(day, snapshots[0]),
            partition_step(day, snapshots[1]),
            backfill_step(day - timedelta(days=BACKFILL_DAYS - 1), day, snapshots[2]),
        ],
    )
    return Nightly(run, day, *snapshots)


SCENARIOS = {
    "rerun": _rerun,
    "as_of_run": _as_of,
    "corrected_run": _corrected,
    "nightly": _nightly,
}


@pytest.fixture(scope="session")
def scenarios(request, base, tmp_path_factory) -> dict[str, Future]:
    """Starts, two at a time, the scenarios that the selected tests use."""
    used = {name for item in request.session.items for name in item.fixturenames}
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        name: pool.submit(scenario, base, tmp_path_factory.mktemp(name, numbered=True) / "run")
        for name, scenario in SCENARIOS.items()
        if name in used
    }
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def rerun(scenarios) -> Run:
    return scenarios["rerun"].result()


@pytest.fixture(scope="session")
def as_of_run(scenarios) -> Run:
    return scenarios["as_of_run"].result()


@pytest.fixture(scope="session")
def corrected_run(scenarios) -> tuple[Run, Correction]:
    return scenarios["corrected_run"].result()


@pytest.fixture(scope="session")
def nightly(scenarios) -> Nightly:
    return scenarios["nightly"].result()


# --------------------------------------------------------------------------------------------
# 1. The base run against the reference
# --------------------------------------------------------------------------------------------


def test_as_of_is_the_newest_valid_order(base, scenarios):
    assert as_of_of(base.warehouse) == reference_orders(base.raw())["order_date"].max()


def test_fct_orders_holds_exactly_the_valid_orders(base, base_orders):
    fct = read_table(base.warehouse, "fct_orders")
    assert fct["order_id"].is_unique().all()
    assert sorted(fct["order_id"]) == sorted(base_orders["order_id"])
    expected = base_orders.select("order_id", "customer_id", "order_date", "net_amount")
    assert_same_cells(fct, expected, ["order_id"], "fct_orders")


def test_dim_customers_holds_every_customer_once(base, base_orders):
    dim = read_table(base.warehouse, "dim_customers")
    assert dim.height == base_orders["customer_id"].n_unique()
    expected = base_orders.group_by("customer_id").agg(
        first_order_date=pl.col("order_date").min(), last_order_date=pl.col("order_date").max()
    )
    assert_same_cells(dim, expected, ["customer_id"], "dim_customers")


@pytest.mark.parametrize("grain", ref.COHORT_GRAINS)
def test_cohort_retention_matches_the_reference(base, base_orders, grain):
    as_of = as_of_of(base.warehouse)
    expected = ref.cohort_retention(base_orders, as_of).filter(pl.col("grain") == grain)
    actual = read_table(base.warehouse, "cohort_retention").filter(pl.col("grain") == grain)
    assert expected.height > 0
    assert_same_cells(actual, expected, ref.COHORT_RETENTION_KEYS, f"cohort_retention {grain}")


@pytest.mark.parametrize("base_name", ref.BASES)
@pytest.mark.parametrize("grain", ref.RATE_GRAINS)
def test_retention_rates_match_the_reference(base, base_orders, grain, base_name):
    as_of = as_of_of(base.warehouse)
    chosen = (pl.col("grain") == grain) & (pl.col("base") == base_name)
    expected = ref.retention_rates(base_orders, as_of, WINDOW_DAYS).filter(chosen)
    actual = read_table(base.warehouse, "retention_rates").filter(chosen)
    assert expected.height > 1
    assert expected["crr"].null_count() >= 1  # the first period has no S: null rates
    assert_same_cells(
        actual, expected, ref.RETENTION_RATES_KEYS, f"retention_rates {grain}/{base_name}"
    )


def test_customer_base_daily_matches_the_reference(base, base_orders):
    as_of = as_of_of(base.warehouse)
    expected = ref.customer_base_daily(base_orders, as_of, WINDOW_DAYS)
    actual = read_table(base.warehouse, "customer_base_daily")
    assert_same_cells(actual, expected, ref.CUSTOMER_BASE_DAILY_KEYS, "customer_base_daily")


@pytest.mark.parametrize("grain", ref.ALL_GRAINS)
def test_kpis_match_the_reference(base, grain):
    as_of = as_of_of(base.warehouse)
    orders = reference_orders(base.raw(), as_of, keep_ordered_at=True)
    expected = ref.kpis(orders, as_of, WINDOW_DAYS).filter(pl.col("grain") == grain)
    if grain == "day":
        daily = read_table(base.warehouse, "kpi_daily")
        actual = daily.rename({"activity_date": "period_start"}).with_columns(grain=pl.lit("day"))
    else:
        actual = read_table(base.warehouse, "kpi_periodic").filter(pl.col("grain") == grain)
    assert expected.height > 1
    assert expected["simple_ltv"].drop_nulls().len() > 0
    assert_same_cells(actual, expected, ref.KPI_KEYS, f"kpis {grain}")


def test_segments_match_the_reference(base, base_orders):
    as_of = as_of_of(base.warehouse)
    history = seg.customer_segment_history(
        base_orders, as_of, seg.SegmentSettings(window_days=WINDOW_DAYS)
    )
    assert_same_cells(
        read_table(base.warehouse, "customer_segment_history"),
        history,
        seg.SEGMENT_HISTORY_KEYS,
        "customer_segment_history",
    )
    current = history.filter(pl.col("snapshot_date") == as_of)
    assert set(current["lifecycle_state"]) == {
        "new",
        "returning",
        "reactivated",
        "at_risk",
        "churned",
    }
    segments = read_table(base.warehouse, "customer_segments")
    assert_same_cells(
        segments,
        current.drop("snapshot_month", "is_complete", cs.starts_with("previous_")),
        ["customer_id"],
        "customer_segments",
    )
    assert_same_cells(
        read_table(base.warehouse, "segment_movements"),
        seg.segment_movements(history),
        seg.SEGMENT_MOVEMENTS_KEYS,
        "segment_movements",
    )
    # The ranking from the published predictions (the models are tested in test_clv.py).
    ltv = read_table(base.warehouse, "customer_ltv")
    assert ltv["predicted_ltv_if_alive"].null_count() == 0
    assert_same_cells(
        read_table(base.warehouse, "winback_candidates"),
        seg.winback_candidates(current, ltv=ltv),
        ["winback_rank"],
        "winback_candidates",
    )


def test_every_row_is_accounted_for(base):
    (audit,) = read_table(base.warehouse, "load_audit").to_dicts()
    assert audit["status"] == "succeeded"
    assert audit["rows_read"] == csv_data_lines(base.csv)
    assert audit["rows_read"] == (
        audit["rows_loaded"] + audit["rows_rejected"] + audit["rows_deduplicated"]
    )
    # An exact duplicate and an older version of an order, at least, are deduplicated.
    assert audit["rows_deduplicated"] >= 2
    rejected = read_table(base.warehouse, "rejected_orders")
    assert rejected.height == audit["rows_rejected"]
    expected_codes = {code for code in REASON_OF_BAD_ROW.values() if code}
    assert set(rejected["reason_code"]) == expected_codes


def test_rejected_rows_point_at_their_line_and_keep_it(base):
    lines = list(csv.reader(base.csv.read_text().splitlines()))
    header = lines[0]
    rejected = read_table(base.warehouse, "rejected_orders")
    assert rejected["source_row"].is_unique().all()
    for source_row, raw_record in rejected.select("source_row", "raw_record").iter_rows():
        file_name, line = source_row.rsplit(":", 1)
        assert file_name == "orders.csv"
        record = json.loads(raw_record)
        expected = dict(zip(header, lines[int(line) - 1], strict=True))
        expected["customer_email"] = record["customer_email"]  # redacted, checked below
        assert {c: record[c] or "" for c in header} == expected
        assert "@" not in record["customer_email"]


def test_no_email_is_stored_in_clear(base):
    assert not columns_holding(base.warehouse, "%@example.com%")


# --------------------------------------------------------------------------------------------
# 2. Identities on a few small generated shops, each with its own window (these runs go
#    on while the scenarios below run in the background)
# --------------------------------------------------------------------------------------------


@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    customers=st.integers(min_value=50, max_value=200),
    seed=st.integers(min_value=0, max_value=1_000_000),
    window_days=st.integers(min_value=7, max_value=120),
)
def test_identities_hold_on_small_shops(tmp_path_factory, customers, seed, window_days):
    run = Run(tmp_path_factory.mktemp("shop"))
    write_orders(generate_orders(customers=customers, seed=seed), run.csv)
    write_config(run.directory, active_window_days=window_days)
    run_cli(run.config)

    rates = read_table(run.warehouse, "retention_rates")
    assert set(rates["base"]) == {"activity", "window"}
    counts = [c for c, t in ref.RETENTION_RATES_SCHEMA.items() if t == pl.Int64]
    rates = rates.with_columns(pl.col(counts).cast(pl.Int64))
    end = rates["retained_customers"] + rates["reactivated_customers"] + rates["new_customers"]
    assert (rates["customers_end"] == end).all()
    churned = rates["customers_start"] - rates["retained_customers"]
    assert (rates["churned_customers"] == churned).all()

    daily = read_table(run.warehouse, "customer_base_daily").sort("activity_date")
    daily = daily.cast(ref.CUSTOMER_BASE_DAILY_SCHEMA)
    moves = daily["new_customers"] + daily["reactivated_customers"] - daily["churned_customers"]
    assert (daily["active_end"] == daily["active_start"] + moves).all()
    assert (daily["active_start"].tail(-1) == daily["active_end"].head(-1)).all()

    cohorts = read_table(run.warehouse, "cohort_retention")
    first = cohorts.filter(pl.col("period_number") == 0)
    assert (first["retention_rate"] == 1.0).all()
    assert (first["active_customers"] == first["cohort_customers"]).all()
    customers_total = read_table(run.warehouse, "dim_customers").height
    sizes = first.group_by("grain").agg(pl.col("cohort_customers").sum())
    assert sorted(sizes["grain"]) == sorted(ref.COHORT_GRAINS)
    assert (sizes["cohort_customers"] == customers_total).all()

    # KPIs agree with the other marts: buyers are the activity base's E and N, active
    # customers the window base's E, and every valid order counts once per grain.
    kpi = read_table(run.warehouse, "kpi_periodic")
    joined = kpi.join(rates, on=["grain", "period_start"])
    activity_rows = joined.filter(pl.col("base") == "activity")
    assert (activity_rows["buying_customers"] == activity_rows["customers_end"]).all()
    assert (activity_rows["new_customers"] == activity_rows["new_customers_right"]).all()
    window_rows = joined.filter(pl.col("base") == "window")
    assert (window_rows["active_customers"] == window_rows["customers_end"]).all()
    orders_total = read_table(run.warehouse, "fct_orders").height
    assert (kpi.group_by("grain").agg(pl.col("orders").sum())["orders"] == orders_total).all()
    assert read_table(run.warehouse, "kpi_daily")["orders"].sum() == orders_total

    # Each customer has exactly one segment and tier, VIPs are within one customer of 5%
    # and pre-VIPs of 15%, and the churned are exactly the customers past the window.
    segments = read_table(run.warehouse, "customer_segments")
    assert sorted(segments["customer_id"]) == sorted(
        read_table(run.warehouse, "dim_customers")["customer_id"]
    )
    assert segments["rfm_segment"].null_count() == segments["tier"].null_count() == 0
    tiers = dict(segments.group_by("tier").len().iter_rows())
    assert abs(tiers.get("vip", 0) - 0.05 * customers_total) <= 1
    assert abs(tiers.get("pre_vip", 0) - 0.15 * customers_total) <= 1
    active = read_table(run.warehouse, "dim_customers").select("customer_id", "is_active")
    states = segments.join(active, on="customer_id")
    assert ((states["lifecycle_state"] == "churned") == ~states["is_active"]).all()

    # The window is the configured one: the window base agrees with the reference for it.
    as_of = as_of_of(run.warehouse)
    orders = reference_orders(run.raw(), as_of)
    assert_same_cells(
        daily,
        ref.customer_base_daily(orders, as_of, window_days),
        ref.CUSTOMER_BASE_DAILY_KEYS,
        f"customer_base_daily, window {window_days}",
    )
    window = pl.col("base") == "window"
    assert_same_cells(
        rates.filter(window),
        ref.retention_rates(orders, as_of, window_days).filter(window),
        ref.RETENTION_RATES_KEYS,
        f"retention_rates window base, window {window_days}",
    )
    history = seg.customer_segment_history(orders, as_of, seg.SegmentSettings(window_days))
    assert_same_cells(
        read_table(run.warehouse, "customer_segment_history"),
        history,
        seg.SEGMENT_HISTORY_KEYS,
        f"customer_segment_history, window {window_days}",
    )


# --------------------------------------------------------------------------------------------
# 3. --as-of: the warehouse as if the run had happened on an earlier day
# --------------------------------------------------------------------------------------------


def test_as_of_run_matches_the_reference_as_of_that_day(base, as_of_run):
    as_of = _as_of_day(base)
    assert as_of_of(as_of_run.warehouse) == as_of
    orders = reference_orders(as_of_run.raw(), as_of)
    assert orders["order_date"].max() <= as_of
    assert_marts_match_reference(as_of_run.warehouse, orders, as_of)


def test_as_of_run_has_no_cell_after_the_as_of_date(base, as_of_run):
    as_of = _as_of_day(base)
    for table, column in (
        ("fct_orders", "order_date"),
        ("dim_customers", "last_order_date"),
        ("cohort_retention", "period_start"),
        ("retention_rates", "period_start"),
        ("customer_base_daily", "activity_date"),
    ):
        assert read_table(as_of_run.warehouse, table)[column].max() <= as_of, table
    # The calendars run up to the as-of day itself.
    assert read_table(as_of_run.warehouse, "customer_base_daily")["activity_date"].max() == as_of
    days = read_table(as_of_run.warehouse, "cohort_retention").filter(pl.col("grain") == "day")
    assert days["period_start"].max() == as_of


@pytest.mark.parametrize("table", ["cohort_retention", "retention_rates"])
def test_as_of_run_flags_the_open_periods(base, as_of_run, table):
    as_of = _as_of_day(base)
    cells = read_table(as_of_run.warehouse, table)
    for grain in cells["grain"].unique():
        rows = cells.filter(pl.col("grain") == grain)
        open_start = ref.period_start(as_of, grain)
        complete = ref.period_end(as_of, grain) <= as_of
        expected = pl.when(pl.col("period_start") < open_start).then(True).otherwise(complete)
        wrong = rows.filter(pl.col("is_complete") != expected)
        assert wrong.is_empty(), f"{table} {grain}: wrong is_complete\n{wrong.head()}"
        assert rows.filter(pl.col("period_start") == open_start).height > 0
    # The as-of date falls inside a week, a month, a quarter and a year.
    assert not cells.filter(pl.col("grain") != "day")["is_complete"].all()


# --------------------------------------------------------------------------------------------
# 4. Idempotency: the same config twice leaves every mart as it was
# --------------------------------------------------------------------------------------------


def test_running_twice_leaves_every_mart_identical(base, rerun):
    assert_same_marts(mart_snapshot(rerun.warehouse), mart_snapshot(base.warehouse))


def test_running_twice_records_two_balanced_loads(base, rerun):
    audit = read_table(rerun.warehouse, "load_audit").sort("load_sequence")
    assert audit.height == 2
    counts = ["rows_read", "rows_loaded", "rows_rejected", "rows_deduplicated"]
    assert audit.select(counts).n_unique() == 1
    assert (audit["rows_read"] == audit.select(counts[1:]).sum_horizontal()).all()
    assert read_table(rerun.warehouse, "rejected_orders").height == audit["rows_rejected"][1]


# --------------------------------------------------------------------------------------------
# 5. A cancelled order and a late order correct every table at the next run
# --------------------------------------------------------------------------------------------


def test_updated_and_late_orders_reach_the_core_tables(base, corrected_run):
    run, correction = corrected_run
    assert as_of_of(run.warehouse) == _last_day(base)
    fct = read_table(run.warehouse, "fct_orders")
    assert correction.cancelled_order not in set(fct["order_id"])
    late = fct.filter(pl.col("order_id") == correction.late_order).to_dicts()
    assert len(late) == 1
    assert late[0]["order_date"] == correction.late_date
    assert float(late[0]["net_amount"]) == pytest.approx(123.45)
    dim = read_table(run.warehouse, "dim_customers")
    new = dim.filter(pl.col("customer_id") == correction.late_customer)
    assert new["first_order_date"].to_list() == [correction.late_date]
    moved = dim.filter(pl.col("customer_id") == correction.cancelled_customer)
    assert moved["first_order_date"].to_list() == [correction.customer_second_date]


def test_updated_and_late_orders_correct_the_marts(base, corrected_run):
    run, _ = corrected_run
    as_of = _last_day(base)
    orders = reference_orders(run.raw(), as_of)
    assert_marts_match_reference(run.warehouse, orders, as_of)
    before = read_table(base.warehouse, "cohort_retention")
    after = read_table(run.warehouse, "cohort_retention")
    assert not after.equals(before)


# --------------------------------------------------------------------------------------------
# 6. The nightly job: a partition run twice, and a backfill of a range as one run
# --------------------------------------------------------------------------------------------


def test_nightly_partition_twice_leaves_the_same_marts(nightly):
    assert_same_marts(
        mart_snapshot(nightly.second_partition_run), mart_snapshot(nightly.first_partition_run)
    )
    audit = read_table(nightly.second_partition_run, "load_audit").sort("load_sequence")
    assert audit.height == 3  # the full run, then the partition twice
    assert (audit["window_last_date"].tail(2) == nightly.day).all()
    assert (audit["window_first_date"].tail(2) == nightly.day - timedelta(days=3)).all()
    assert audit["is_balanced"].all()


def test_nightly_partition_picks_up_the_late_and_updated_orders(nightly, corrected_run):
    run, _ = corrected_run
    assert_same_marts(mart_snapshot(nightly.first_partition_run), mart_snapshot(run.warehouse))


def test_backfill_as_one_run_equals_the_full_run(nightly, corrected_run):
    run, _ = corrected_run
    audit = read_table(nightly.backfill_run, "load_audit").sort("load_sequence")
    assert audit.height == 4  # one load for the whole range
    last = audit.row(-1, named=True)
    assert last["window_first_date"] == nightly.day - timedelta(days=BACKFILL_DAYS - 1)
    assert last["window_last_date"] == nightly.day
    assert last["is_balanced"]
    assert_same_marts(mart_snapshot(nightly.backfill_run), mart_snapshot(run.warehouse))


# --------------------------------------------------------------------------------------------
# 7. dbt's unit tests
# --------------------------------------------------------------------------------------------


def test_column_values_tests_count_each_broken_rule(base, tmp_path):
    """The column_values test of a model (its not_null, value_between and accepted_values)
    returns one row per column and rule that rows break, with their count, and none for a
    model whose rows keep every rule."""
    warehouse = tmp_path / "broken.duckdb"
    shutil.copy(base.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        orders = [row[0] for row in con.sql("select order_id from fct_orders limit 3").fetchall()]
        con.execute("update fct_orders set order_date = null where order_id = ?", [orders[0]])
        con.execute("update fct_orders set net_amount = -5 where order_id in (?, ?)", orders[1:])
        one_customer = "customer_id = (select min(customer_id) from dim_customers)"
        con.execute(
            "update customer_segment_history set tier = 'gold', recency_score = 6 "
            f"where {one_customer}"
        )
        months = con.sql(
            f"select count(*) from customer_segment_history where {one_customer}"
        ).fetchall()[0][0]
    tests = [
        "column_values_fct_orders",
        "column_values_customer_segment_history",
        "column_values_dim_customers",
    ]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "test", "--select", *tests, "--store-failures",
         "--profiles-dir", ".", "--target-path", str(tmp_path / "target"),
         "--log-path", str(tmp_path / "logs")],
        cwd=ROOT / "dbt_project",
        env={**os.environ, "RETENTION_DUCKDB_PATH": str(warehouse)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    statuses = {
        r["unique_id"].split(".")[2]: (r["status"], r["failures"])
        for r in results
        if r["unique_id"].startswith("test.")
    }
    assert statuses == {
        "column_values_fct_orders": ("fail", 2),
        "column_values_customer_segment_history": ("fail", 2),
        "column_values_dim_customers": ("pass", 0),
    }, result.stdout[-4000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        broken = {
            test: set(con.sql(f"select * from dbt_test__audit.{test}").fetchall())
            for test in tests[:2]
        }
    assert broken == {
        "column_values_fct_orders": {
            ("order_date", "not_null", 1),
            ("net_amount", "value_between", 2),
        },
        "column_values_customer_segment_history": {
            ("tier", "accepted_values", months),
            ("recency_score", "value_between", months),
        },
    }


def test_dbt_unit_tests_pass(base, tmp_path):
    """The hand-worked dbt unit tests (the nightly build leaves them out). dbt writes its
    target under tmp_path: the project's target/manifest.json is what the pipeline runs in
    the background load."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "test", "--select", "test_type:unit",
         "--profiles-dir", ".", "--target-path", str(tmp_path / "target"),
         "--log-path", str(tmp_path / "logs")],
        cwd=ROOT / "dbt_project",
        env={**os.environ, "RETENTION_DUCKDB_PATH": str(base.warehouse)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert " PASS=" in result.stdout and " ERROR=0 " in result.stdout
