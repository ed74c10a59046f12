"""Tests of the synthetic order generator: shape, determinism, realism and the bad rows."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipeline.lib.generate import (
    BAD_AMOUNT,
    BAD_CURRENCY,
    BAD_ORDERED_AT,
    BAD_ROW_KINDS,
    CHANNELS,
    FUTURE_YEAR,
    GENERATED_COLUMNS,
    STATUSES,
    generate_orders,
    write_orders,
)

SEED = 11
CUSTOMERS = 3_000
START, END = date(2023, 1, 1), date(2025, 12, 31)
TIMESTAMP = "%Y-%m-%d %H:%M:%S"


@pytest.fixture(scope="module")
def orders() -> pl.DataFrame:
    return generate_orders(CUSTOMERS, SEED)


@pytest.fixture(scope="module")
def clean() -> pl.DataFrame:
    return generate_orders(CUSTOMERS, SEED, bad_rows=False)


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.col("ordered_at", "updated_at").str.to_datetime(TIMESTAMP, strict=False),
        pl.col("amount", "refunded_amount").cast(pl.Float64, strict=False),
    )


def _bad_rows_found(orders: pl.DataFrame) -> dict[str, int]:
    """How many rows of each bad kind `orders` holds, found from the content alone."""
    typed = _typed(orders)
    versions = (
        typed.filter(pl.col("order_id").is_not_null())
        .group_by("order_id")
        .agg(
            pl.col("updated_at").n_unique().alias("updated"),
            pl.col("amount").n_unique().alias("amounts"),
            pl.struct("updated_at", "status").sort_by("updated_at").last().alias("newest"),
        )
    )
    same_time = typed.group_by("order_id", "updated_at").agg(pl.col("amount").n_unique())
    return {
        "empty_customer_id": orders.filter(pl.col("customer_id") == "").height,
        "empty_order_id": orders.filter(pl.col("order_id").is_null()).height,
        "unparseable_ordered_at": orders.filter(pl.col("ordered_at") == BAD_ORDERED_AT).height,
        "unparseable_amount": orders.filter(pl.col("amount") == BAD_AMOUNT).height,
        "negative_amount": typed.filter(pl.col("amount") < 0).height,
        "refund_exceeds_amount": typed.filter(pl.col("refunded_amount") > pl.col("amount")).height,
        "future_ordered_at": typed.filter(pl.col("ordered_at").dt.year() == FUTURE_YEAR).height,
        "unknown_currency": orders.filter(pl.col("currency") == BAD_CURRENCY).height,
        "exact_duplicate": orders.filter(orders.is_duplicated()).height // 2,
        "conflicting_duplicate": same_time.filter(pl.col("amount") > 1).height,
        "newer_version": versions.filter(
            (pl.col("updated") > 1) & (pl.col("newest").struct.field("status") == "refunded")
        ).height,
    }


def _check_good_rows(clean: pl.DataFrame, start: date, end: date) -> None:
    assert clean.columns == list(GENERATED_COLUMNS)
    assert all(dtype == pl.Utf8 for dtype in clean.dtypes)
    assert clean.null_count().sum_horizontal().item() == 0
    assert clean["order_id"].is_unique().all()
    typed = _typed(clean)
    assert typed.null_count().sum_horizontal().item() == 0  # every value parses
    assert typed["ordered_at"].is_sorted()
    assert typed["ordered_at"].min() >= datetime.combine(start, datetime.min.time())
    assert typed["ordered_at"].max() < datetime.combine(end, datetime.max.time())
    assert (typed["updated_at"] >= typed["ordered_at"]).all()
    assert set(clean["status"]) <= set(STATUSES)
    assert set(clean["channel"]) <= set(CHANNELS)
    assert set(clean["currency"]) == {"USD"}
    assert (typed["amount"] >= 1).all()
    by_status = typed.group_by("status").agg(
        (pl.col("refunded_amount") == pl.col("amount")).all().alias("full"),
        (pl.col("refunded_amount") < pl.col("amount")).all().alias("below"),
    )
    flags = {row["status"]: row for row in by_status.iter_rows(named=True)}
    if "refunded" in flags:
        assert flags["refunded"]["full"]
    if "completed" in flags:
        assert flags["completed"]["below"]
    assert (typed.filter(pl.col("status") == "cancelled")["refunded_amount"] == 0).all()
    formats = {
        "order_id": r"^O\d{7,}$",
        "customer_id": r"^C\d{6,}$",
        "ordered_at": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$",
        "updated_at": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$",
        "amount": r"^\d+\.\d\d$",
        "refunded_amount": r"^\d+\.\d\d$",
        "customer_email": r"^c\d+@example\.com$",
    }
    for column, pattern in formats.items():
        assert clean[column].str.contains(pattern).all(), column
    email_number = clean["customer_email"].str.extract(r"^c(\d+)@").cast(pl.Int64)
    assert (email_number == clean["customer_id"].str.slice(1).cast(pl.Int64)).all()


def test_columns_all_strings_in_order(orders: pl.DataFrame) -> None:
    assert orders.columns == list(GENERATED_COLUMNS)
    assert orders.schema == pl.Schema({c: pl.Utf8 for c in GENERATED_COLUMNS})


def test_same_seed_same_orders(orders: pl.DataFrame) -> None:
    assert generate_orders(CUSTOMERS, SEED).equals(orders)


def test_different_seeds_differ(orders: pl.DataFrame) -> None:
    assert not generate_orders(CUSTOMERS, SEED + 1).equals(orders)


def test_good_rows_are_valid(clean: pl.DataFrame) -> None:
    _check_good_rows(clean, START, END)


def test_every_customer_buys(clean: pl.DataFrame) -> None:
    assert clean["customer_id"].n_unique() == CUSTOMERS


def test_bad_rows_are_extra_rows(orders: pl.DataFrame, clean: pl.DataFrame) -> None:
    # Every good row is there unchanged; all other rows are bad ones, about 0.1% of the rows.
    assert clean.join(orders, on=list(GENERATED_COLUMNS), how="anti", nulls_equal=True).is_empty()
    extra = orders.height - clean.height
    assert len(BAD_ROW_KINDS) <= extra <= max(len(BAD_ROW_KINDS), 0.002 * clean.height)
    new = orders.join(clean, on=list(GENERATED_COLUMNS), how="anti", nulls_equal=True)
    per_kind = extra // len(BAD_ROW_KINDS)
    assert new.height == extra - per_kind  # the exact duplicates match good rows


def test_every_bad_row_kind_present(orders: pl.DataFrame, clean: pl.DataFrame) -> None:
    found = _bad_rows_found(orders)
    assert set(found) == set(BAD_ROW_KINDS)
    assert all(count >= 1 for count in found.values()), found
    assert not any(_bad_rows_found(clean).values())


def test_order_ids_unique_except_deliberate_duplicates(
    orders: pl.DataFrame, clean: pl.DataFrame
) -> None:
    per_kind = (orders.height - clean.height) // len(BAD_ROW_KINDS)
    ids = orders["order_id"].drop_nulls()
    # The exact duplicate, the conflicting duplicate and the newer version share an order_id
    # with one good row each; every other bad row has an order_id of its own (or none).
    assert ids.filter(ids.is_duplicated()).n_unique() == 3 * per_kind
    assert ids.is_duplicated().sum() == 6 * per_kind
    assert ids.n_unique() == clean.height + len(BAD_ROW_KINDS) * per_kind - 4 * per_kind


def test_repeat_buyers_plausible(clean: pl.DataFrame) -> None:
    completed = clean.filter(pl.col("status") == "completed").group_by("customer_id").len()
    share = completed.filter(pl.col("len") >= 2).height / CUSTOMERS
    assert 0.15 <= share <= 0.6
    assert completed["len"].max() >= 10  # some loyal customers


def test_statuses_shares(clean: pl.DataFrame) -> None:
    typed = _typed(clean)
    share = typed["status"].value_counts(normalize=True)
    shares = dict(zip(share["status"], share["proportion"], strict=True))
    assert 0.015 < shares["cancelled"] < 0.05
    assert 0.003 < shares["refunded"] < 0.02
    partial = (
        typed.filter((pl.col("status") == "completed") & (pl.col("refunded_amount") > 0)).height
        / typed.height
    )
    assert 0.01 < partial < 0.035


def test_seasonality_growth_and_evening_peak(clean: pl.DataFrame) -> None:
    typed = _typed(clean)
    first = typed.group_by("customer_id").agg(pl.col("ordered_at").min())["ordered_at"]
    by_year = first.dt.year().value_counts().sort("ordered_at")["count"].to_list()
    assert by_year[0] < by_year[1] < by_year[2]  # growth
    months = typed["ordered_at"].dt.month()
    assert (months == 12).sum() > 1.3 * (months == 2).sum()
    hours = typed["ordered_at"].dt.hour()
    assert hours.is_between(19, 22).sum() > 4 * hours.is_between(2, 5).sum()
    assert (hours == 23).sum() > 0 and (hours == 0).sum() > 0


def test_date_range_respected() -> None:
    start, end = date(2024, 2, 1), date(2024, 3, 31)
    clean = generate_orders(500, 3, start=start, end=end, bad_rows=False)
    _check_good_rows(clean, start, end)
    assert clean.height > 500


def test_no_customers_gives_empty_frame() -> None:
    empty = generate_orders(0, 1)
    assert empty.is_empty()
    assert empty.schema == pl.Schema({c: pl.Utf8 for c in GENERATED_COLUMNS})


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="customers"):
        generate_orders(-1, 1)
    with pytest.raises(ValueError, match="before start"):
        generate_orders(10, 1, start=date(2024, 1, 2), end=date(2024, 1, 1))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(customers=st.integers(20, 300), seed=st.integers(0, 2**32 - 1))
def test_small_inputs_have_every_kind(customers: int, seed: int) -> None:
    orders = generate_orders(customers, seed)
    clean = generate_orders(customers, seed, bad_rows=False)
    _check_good_rows(clean, START, END)
    found = _bad_rows_found(orders)
    assert all(count >= 1 for count in found.values()), found


@pytest.mark.parametrize("name", ["orders.csv", "orders.csv.gz", "orders.parquet"])
def test_write_and_read_back(orders: pl.DataFrame, tmp_path, name: str) -> None:
    out = tmp_path / "nested" / "dir" / name
    assert write_orders(orders, out) == [out]
    if name.endswith(".parquet"):
        back = pl.read_parquet(out)
    else:
        back = pl.read_csv(out, infer_schema=False)
    assert back.equals(orders)
    again = tmp_path / "again" / name
    write_orders(generate_orders(CUSTOMERS, SEED), again)
    assert again.read_bytes() == out.read_bytes()


def test_csv_writes_nulls_as_empty_fields(tmp_path) -> None:
    frame = pl.DataFrame({c: ["x"] for c in GENERATED_COLUMNS}).with_columns(
        pl.lit(None, dtype=pl.Utf8).alias("order_id")
    )
    [out] = write_orders(frame, tmp_path / "one.csv")
    assert out.read_text().splitlines()[1] == "," + ",".join(["x"] * (len(GENERATED_COLUMNS) - 1))


def test_unknown_format_rejected(orders: pl.DataFrame, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        write_orders(orders, tmp_path / "orders.json")
