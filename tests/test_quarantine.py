"""Quarantine: every source row ends loaded, deduplicated or rejected with a reason that
names the column and the value, and the counts always add up."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from conftest import (
    COLUMNS,
    LOAD_NOW,
    file_source,
    headerless_text_source,
    load_batch,
    write_lines,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from retention_pipeline.lib.quarantine import REJECTED_COLUMNS, LoadWindow

HEADER = ["id", "cust", "placed", "changed", "total", "refund", "cur", "state"]
GOOD = {
    "id": "G1",
    "cust": "c1",
    "placed": "2024-01-05 10:00:00",
    "changed": "2024-01-05 10:00:00",
    "total": "10.00",
    "refund": "0",
    "cur": "USD",
    "state": "completed",
}
EVERYTHING = LoadWindow(first=None, last=date(2099, 12, 31))


def _write_csv(path, rows: list[dict], header=HEADER):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _batch(tmp_path, rows: list[dict], window=EVERYTHING, **options):
    _write_csv(tmp_path / "orders.csv", rows)
    return load_batch(file_source(tmp_path, "orders.csv", COLUMNS, **options), window)


def _data_lines(path) -> int:
    """Rows in a CSV file by a plain count, independent of the extractor."""
    with path.open(newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def _balanced(batch) -> bool:
    loaded = int(batch.orders["line_count"].sum()) if batch.orders.height else 0
    return batch.rows_read == loaded + batch.rejected.height + batch.rows_deduplicated


# --- one row per reason code ----------------------------------------------------------------

REASON_CASES = [
    ("missing_order_id", {"id": ""}, ["order_id is empty", "'id'"]),
    ("missing_order_id", {"id": "   "}, ["order_id is empty", "'id'"]),
    ("missing_customer_id", {"cust": ""}, ["customer_id is empty", "'cust'"]),
    ("unparseable_ordered_at", {"placed": "yesterday"}, ["'yesterday'", "'placed'"]),
    ("unparseable_ordered_at", {"placed": ""}, ["ordered_at ''", "'placed'"]),
    ("unparseable_ordered_at", {"placed": "2024-02-30 10:00:00"}, ["'2024-02-30 10:00:00'"]),
    ("unparseable_updated_at", {"changed": "soon"}, ["updated_at 'soon'", "'changed'"]),
    ("unparseable_amount", {"total": "ten"}, ["ten is not a number", "amount='total'"]),
    ("unparseable_amount", {"total": ""}, ["'' is not a number", "amount='total'"]),
    ("unparseable_amount", {"refund": "a lot"}, ["refunded_amount 'a lot' is not a number"]),
    ("negative_amount", {"total": "-5.25"}, ["amount -5.25"]),
    ("negative_amount", {"refund": "-1"}, ["refunded_amount -1"]),
    ("refund_exceeds_amount", {"total": "10", "refund": "12.5"}, ["refunded_amount 12.5", "10"]),
    ("unknown_currency", {"cur": "EUR"}, ["currency EUR", "USD"]),
    (
        "future_ordered_at",
        {"placed": "2025-01-03 12:00:00", "changed": ""},
        ["ordered_at 2025-01-03 12:00:00", "future_tolerance_hours"],
    ),
]


@pytest.mark.parametrize(
    ("code", "change", "reason_parts"),
    REASON_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(REASON_CASES)],
)
def test_a_bad_row_is_rejected_with_its_code_reason_and_line(tmp_path, code, change, reason_parts):
    bad = {**GOOD, "id": "B1", **change}
    batch = _batch(tmp_path, [GOOD, bad])
    assert batch.orders["order_id"].to_list() == ["G1"]
    assert batch.rejected.columns == list(REJECTED_COLUMNS)
    (rejected,) = batch.rejected.to_dicts()
    assert rejected["reason_code"] == code
    for part in reason_parts:
        assert part in rejected["reason"], rejected["reason"]
    assert rejected["source_row"] == "orders.csv:3"
    # The raw record is the source line as it was, under the source's own column names.
    assert json.loads(rejected["raw_record"]) == {k: v or None for k, v in bad.items()}
    assert batch.rows_read == 2
    assert batch.rows_deduplicated == 0


def test_every_reason_code_is_exercised():
    codes = {case[0] for case in REASON_CASES} | {"duplicate_conflict"}
    assert codes == {
        "missing_order_id",
        "missing_customer_id",
        "unparseable_ordered_at",
        "unparseable_updated_at",
        "unparseable_amount",
        "negative_amount",
        "refund_exceeds_amount",
        "unknown_currency",
        "future_ordered_at",
        "duplicate_conflict",
    }


def test_a_row_with_several_faults_is_rejected_once_with_the_first(tmp_path):
    bad = {**GOOD, "id": "B1", "cust": "", "total": "-3", "cur": "EUR"}
    batch = _batch(tmp_path, [bad])
    assert batch.rejected.select("reason_code", "source_row").rows() == [
        ("missing_customer_id", "orders.csv:2")
    ]
    assert _balanced(batch)


def test_rejected_rows_keep_an_order_date_only_when_they_can_be_dated(tmp_path):
    rows = [
        {**GOOD, "id": "B1", "total": "-1"},
        {**GOOD, "id": "B2", "placed": "garbage"},
        {**GOOD, "id": "B3", "placed": "2030-01-01 00:00:00", "changed": ""},
    ]
    batch = _batch(tmp_path, rows)
    assert dict(batch.rejected.select("order_id", "order_date").iter_rows()) == {
        "B1": date(2024, 1, 5),
        "B2": None,
        "B3": None,
    }


@pytest.mark.parametrize(
    ("seconds_ahead", "tolerance", "rejected"),
    [(24 * 3600 - 1, 24, False), (24 * 3600 + 1, 24, True), (1, 0, True), (-1, 0, False)],
)
def test_future_tolerance(tmp_path, seconds_ahead, tolerance, rejected):
    placed = LOAD_NOW.astimezone(ZoneInfo("UTC")) + timedelta(seconds=seconds_ahead)
    batch = _batch(
        tmp_path,
        [{**GOOD, "placed": placed.strftime("%Y-%m-%d %H:%M:%S"), "changed": ""}],
        future_tolerance_hours=tolerance,
    )
    assert batch.rejected.height == int(rejected)
    assert batch.orders.height == int(not rejected)
    if rejected:
        assert batch.rejected["reason"][0].endswith(
            f"more than {float(tolerance)} hours in the future; fix the timestamp or raise "
            "future_tolerance_hours"
        )


def test_currency_is_case_insensitive_and_defaults_to_the_reporting_currency(tmp_path):
    rows = [{**GOOD, "id": "L", "cur": "usd"}, {**GOOD, "id": "E", "cur": ""}]
    batch = _batch(tmp_path, rows)
    assert sorted(batch.orders.select("order_id", "currency").iter_rows()) == [
        ("E", "USD"),
        ("L", "USD"),
    ]
    eur = _batch(tmp_path, [{**GOOD, "cur": "eur"}], reporting_currency="EUR")
    assert eur.orders["currency"].to_list() == ["EUR"]


def test_a_zero_refund_equal_to_the_amount_and_an_empty_refund_are_fine(tmp_path):
    rows = [
        {**GOOD, "id": "FULL", "refund": "10.00"},
        {**GOOD, "id": "NONE", "refund": ""},
        {**GOOD, "id": "ZERO", "total": "0", "refund": "0"},
    ]
    batch = _batch(tmp_path, rows)
    assert batch.rejected.is_empty()
    assert dict(batch.orders.select("order_id", "refunded_amount").iter_rows()) == {
        "FULL": 10.0,
        "NONE": None,
        "ZERO": 0.0,
    }


def test_status_is_trimmed_and_lowercased(tmp_path):
    batch = _batch(tmp_path, [{**GOOD, "state": "  Refunded "}, {**GOOD, "id": "N", "state": ""}])
    assert dict(batch.orders.select("order_id", "status").iter_rows()) == {
        "G1": "refunded",
        "N": None,
    }


@pytest.mark.parametrize("value", ["NaN", "inf"])
def test_a_non_finite_amount_is_unparseable(tmp_path, value):
    batch = _batch(tmp_path, [{**GOOD, "total": value}])
    assert batch.orders.is_empty()
    assert batch.rejected["reason_code"].to_list() == ["unparseable_amount"]


# --- versions and duplicates ----------------------------------------------------------------


def test_an_exact_duplicate_is_deduplicated(tmp_path):
    batch = _batch(tmp_path, [GOOD, GOOD, GOOD])
    assert batch.orders["source_row"].to_list() == ["orders.csv:4"]
    assert batch.rejected.is_empty()
    assert (batch.rows_read, batch.rows_deduplicated) == (3, 2)


def test_the_latest_updated_at_wins_wherever_it_sits_in_the_file(tmp_path):
    versions = [
        {**GOOD, "changed": "2024-01-07 09:00:00", "state": "refunded", "refund": "10"},
        {**GOOD, "changed": "2024-01-05 10:00:00"},
        {**GOOD, "changed": "2024-01-06 08:00:00", "total": "12"},
    ]
    batch = _batch(tmp_path, versions)
    (order,) = batch.orders.to_dicts()
    assert (order["status"], order["refunded_amount"], order["source_row"]) == (
        "refunded",
        10.0,
        "orders.csv:2",
    )
    assert order["updated_at"] == datetime(2024, 1, 7, 9)
    assert batch.rejected.is_empty()
    assert batch.rows_deduplicated == 2


def test_a_version_with_updated_at_beats_one_without(tmp_path):
    batch = _batch(tmp_path, [{**GOOD, "changed": "2024-01-06 00:00:00"}, {**GOOD, "changed": ""}])
    assert batch.orders["source_row"].to_list() == ["orders.csv:2"]
    assert batch.rows_deduplicated == 1


def test_a_tie_with_identical_content_is_deduplicated(tmp_path):
    older = {**GOOD, "changed": "2024-01-01 00:00:00", "total": "1"}
    batch = _batch(tmp_path, [GOOD, older, GOOD])
    assert batch.orders["source_row"].to_list() == ["orders.csv:4"]
    assert batch.rejected.is_empty()
    assert batch.rows_deduplicated == 2


def test_a_tie_with_different_content_keeps_the_row_read_last(tmp_path):
    rows = [
        {**GOOD, "total": "10"},
        {**GOOD, "total": "11"},
        {**GOOD, "changed": "2024-01-01 00:00:00", "total": "1"},  # older: superseded
        {**GOOD, "total": "12"},
    ]
    batch = _batch(tmp_path, rows)
    (order,) = batch.orders.to_dicts()
    assert (order["amount"], order["source_row"]) == (12.0, "orders.csv:5")
    rejected = batch.rejected.sort("source_row")
    assert rejected.select("source_row", "reason_code").rows() == [
        ("orders.csv:2", "duplicate_conflict"),
        ("orders.csv:3", "duplicate_conflict"),
    ]
    for reason in rejected["reason"]:
        assert "order_id G1 appears again with the same updated_at but different content" in reason
        assert "the row read last was kept" in reason
    assert json.loads(rejected["raw_record"][0])["total"] == "10"
    assert batch.rows_deduplicated == 1
    assert _balanced(batch)


def test_a_tie_across_files_keeps_the_later_file(tmp_path):
    _write_csv(tmp_path / "exports" / "b.csv", [{**GOOD, "total": "20"}])
    _write_csv(tmp_path / "exports" / "a.csv", [{**GOOD, "total": "10"}])
    batch = load_batch(file_source(tmp_path, "exports/*.csv", COLUMNS))
    assert batch.orders.select("amount", "source_row").rows() == [(20.0, "b.csv:2")]
    assert batch.rejected.select("source_row", "reason_code").rows() == [
        ("a.csv:2", "duplicate_conflict")
    ]


def test_a_bad_newest_version_leaves_the_last_good_version_in_force(tmp_path):
    rows = [GOOD, {**GOOD, "changed": "2024-01-09 00:00:00", "total": "lots"}]
    batch = _batch(tmp_path, rows)
    assert batch.orders.select("amount", "source_row").rows() == [(10.0, "orders.csv:2")]
    assert batch.rejected.select("reason_code", "source_row").rows() == [
        ("unparseable_amount", "orders.csv:3")
    ]
    assert batch.rows_deduplicated == 0


def test_generated_order_ids_never_collide(tmp_path):
    write_lines(tmp_path / "w.txt", " c1 20240105 1 5.00", " c1 20240105 1 5.00")
    config = headerless_text_source(tmp_path, "w.txt")
    batch = load_batch(config)
    # Two identical purchases on one day are two orders, keyed by file and line.
    assert sorted(batch.orders["order_id"]) == ["w.txt:1", "w.txt:2"]
    assert batch.rows_deduplicated == 0


# --- timezones ------------------------------------------------------------------------------


def _expected(local: str, source_tz: str, reporting_tz: str) -> tuple[datetime, date]:
    """UTC instant and reporting date of a naive local time, by the standard library
    (fold=0: a skipped time reads with the offset before the change, an ambiguous one as the
    earlier instant)."""
    instant = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(source_tz))
    utc = instant.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    return utc, instant.astimezone(ZoneInfo(reporting_tz)).date()


TIMEZONE_CASES = [
    # a wall-clock time skipped by the spring-forward change: 02:30 is 03:30 EDT
    ("2024-03-10 02:30:00", "America/New_York", "America/New_York"),
    ("2024-03-10 01:59:00", "America/New_York", "America/New_York"),
    ("2024-03-10 03:00:00", "America/New_York", "America/New_York"),
    # an ambiguous fall-back time: the earlier (EDT) instant
    ("2024-11-03 01:30:00", "America/New_York", "America/New_York"),
    ("2024-03-31 02:30:00", "Europe/Berlin", "Europe/Berlin"),
    # near midnight, across zones
    ("2024-01-01 20:30:00", "America/New_York", "UTC"),
    ("2024-01-01 18:59:59", "America/New_York", "UTC"),
    ("2024-01-02 09:00:00", "Asia/Tokyo", "America/Los_Angeles"),
    ("2024-07-01 00:30:00", "Europe/Berlin", "UTC"),
    ("2024-06-30 23:59:59", "Europe/Berlin", "Europe/Berlin"),
    ("2024-12-31 23:30:00", "UTC", "Asia/Kolkata"),
    ("2024-03-10 00:30:00", "UTC", "America/New_York"),
    ("2024-02-29 23:45:00", "Asia/Kathmandu", "UTC"),
]


@pytest.mark.parametrize(("local", "source_tz", "reporting_tz"), TIMEZONE_CASES)
def test_naive_timestamps_land_on_the_right_local_date(tmp_path, local, source_tz, reporting_tz):
    batch = _batch(
        tmp_path,
        [{**GOOD, "placed": local, "changed": local}],
        timezone=source_tz,
        reporting_timezone=reporting_tz,
    )
    assert batch.rejected.is_empty()
    (order,) = batch.orders.to_dicts()
    utc, local_date = _expected(local, source_tz, reporting_tz)
    assert (order["ordered_at"], order["order_date"]) == (utc, local_date)
    assert order["updated_at"] == utc


def test_the_dst_gap_and_midnight_by_hand():
    """The expectations above, written out once so that they do not only rest on zoneinfo."""
    assert _expected("2024-03-10 02:30:00", "America/New_York", "America/New_York") == (
        datetime(2024, 3, 10, 7, 30),
        date(2024, 3, 10),
    )
    assert _expected("2024-01-01 20:30:00", "America/New_York", "UTC") == (
        datetime(2024, 1, 2, 1, 30),
        date(2024, 1, 2),
    )
    assert _expected("2024-01-02 09:00:00", "Asia/Tokyo", "America/Los_Angeles") == (
        datetime(2024, 1, 2, 0, 0),
        date(2024, 1, 1),
    )


def test_the_source_timezone_defaults_to_the_reporting_timezone(tmp_path):
    batch = _batch(
        tmp_path, [{**GOOD, "placed": "2024-01-01 23:30:00"}], reporting_timezone="America/Chicago"
    )
    (order,) = batch.orders.to_dicts()
    assert (order["ordered_at"], order["order_date"]) == (
        datetime(2024, 1, 2, 5, 30),
        date(2024, 1, 1),
    )


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-01-01T23:30:00+02:00", datetime(2024, 1, 1, 21, 30)),
        ("2024-01-01T23:30:00-05:00", datetime(2024, 1, 2, 4, 30)),
        ("2024-01-01T23:30:00Z", datetime(2024, 1, 1, 23, 30)),
    ],
)
def test_timestamps_with_an_offset_ignore_the_source_timezone(tmp_path, text, utc):
    batch = _batch(
        tmp_path,
        [{**GOOD, "placed": text, "changed": ""}],
        timezone="Asia/Tokyo",
        reporting_timezone="America/New_York",
    )
    (order,) = batch.orders.to_dicts()
    assert order["ordered_at"] == utc
    assert order["order_date"] == (utc - timedelta(hours=5)).date()


def test_a_skipped_time_in_a_half_hour_dst_zone(tmp_path):
    local = "2024-10-06 02:15:00"
    batch = _batch(
        tmp_path,
        [{**GOOD, "placed": local, "changed": ""}],
        timezone="Australia/Lord_Howe",
        reporting_timezone="UTC",
    )
    assert batch.orders["ordered_at"].to_list() == [
        _expected(local, "Australia/Lord_Howe", "UTC")[0]
    ]


# --- windows --------------------------------------------------------------------------------


def test_a_window_reads_its_days_and_every_undatable_row(tmp_path):
    rows = [
        {**GOOD, "id": f"D{day}", "placed": f"2024-01-0{day} 12:00:00", "changed": ""}
        for day in range(1, 6)
    ]
    rows += [
        {**GOOD, "id": "GARBAGE", "placed": "someday", "changed": ""},
        {**GOOD, "id": "FUTURE", "placed": "2031-01-01 00:00:00", "changed": ""},
        {**GOOD, "id": "LATE", "placed": "2024-01-01 12:00:00", "changed": "2024-01-03 09:00:00"},
    ]
    batch = _batch(tmp_path, rows, LoadWindow(first=date(2024, 1, 2), last=date(2024, 1, 3)))
    assert sorted(batch.orders["order_id"]) == ["D2", "D3", "LATE"]
    assert sorted(batch.rejected["order_id"]) == ["FUTURE", "GARBAGE"]
    assert batch.rows_read == 5
    assert _balanced(batch)
    everything_to_day_4 = _batch(tmp_path, rows, LoadWindow(first=None, last=date(2024, 1, 4)))
    assert sorted(everything_to_day_4.orders["order_id"]) == ["D1", "D2", "D3", "D4", "LATE"]


UNDATABLE_WITH_ANOTHER_FAULT = [
    {**GOOD, "id": "", "placed": "garbage"},
    {**GOOD, "cust": "", "placed": "garbage"},
    {**GOOD, "cust": "", "placed": "2031-01-01 00:00:00", "changed": ""},
    {**GOOD, "total": "-1", "placed": "2031-01-01 00:00:00", "changed": ""},
]


@pytest.mark.parametrize(
    "row",
    UNDATABLE_WITH_ANOTHER_FAULT,
    ids=["no_id", "no_customer", "no_customer_future", "negative_future"],
)
def test_an_undatable_row_with_another_fault_is_still_read_and_rejected(tmp_path, row):
    batch = _batch(tmp_path, [row], LoadWindow(first=None, last=date(2024, 12, 31)))
    assert batch.rows_read == 1
    assert batch.rejected["source_row"].to_list() == ["orders.csv:2"]


# --- accounting -----------------------------------------------------------------------------

BAD_CHANGES = {
    "missing_order_id": {"id": ""},
    "missing_customer_id": {"cust": ""},
    "unparseable_ordered_at": {"placed": "not a date"},
    "unparseable_updated_at": {"changed": "not a date"},
    "unparseable_amount": {"total": "n/a"},
    "negative_amount": {"total": "-2"},
    "refund_exceeds_amount": {"refund": "99"},
    "unknown_currency": {"cur": "JPY"},
    "future_ordered_at": {"placed": "2030-06-01 00:00:00", "changed": ""},
}
KINDS = ["good", "exact_copy", "older_version", "same_time_other_content", *BAD_CHANGES]


def _build_rows(plan: list[tuple[str, int]]) -> tuple[list[dict], list[str | None]]:
    """Rows for a plan of (kind, pick); `expected_codes[i]` is the row's reason for a single
    fault, else None. Versions of earlier orders point at them through `pick`."""
    rows, codes, goods = [], [], []
    for n, (kind, pick) in enumerate(plan):
        if kind == "good" or (kind in KINDS[1:4] and not goods):
            row = {**GOOD, "id": f"O{n}", "cust": f"c{pick % 7}", "total": f"{pick % 50 + 1}.5"}
            goods.append(row)
        elif kind == "exact_copy":
            row = dict(goods[pick % len(goods)])
        elif kind == "older_version":
            row = {**goods[pick % len(goods)], "changed": "2024-01-01 00:00:00", "total": "0.5"}
        elif kind == "same_time_other_content":
            row = {**goods[pick % len(goods)], "total": f"{1000 + n}"}
        else:
            row = {**GOOD, "id": f"B{n}", **BAD_CHANGES[kind]}
        rows.append(row)
        codes.append(kind if kind in BAD_CHANGES else None)
    return rows, codes


def _model(rows: list[dict], codes: list[str | None]) -> tuple[dict[str, int], int, set[int]]:
    """Independent model of the newest-version rule: per order id the row with the latest
    (updated_at, position) wins; a row tying on updated_at with other content conflicts;
    every other valid row is deduplicated. Returns (winner line per id, dedup, conflicts)."""
    versions: dict[str, list[int]] = {}
    for i, (row, code) in enumerate(zip(rows, codes, strict=True)):
        if code is None:
            versions.setdefault(row["id"], []).append(i)
    winners, deduplicated, conflicts = {}, 0, set()
    for order_id, positions in versions.items():
        newest = max(positions, key=lambda i: (rows[i]["changed"], i))
        winners[order_id] = newest + 2
        for i in positions:
            if i == newest:
                continue
            if rows[i]["changed"] == rows[newest]["changed"] and rows[i] != rows[newest]:
                conflicts.add(i + 2)
            else:
                deduplicated += 1
    return winners, deduplicated, conflicts


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(KINDS), st.integers(0, 10_000)), min_size=1, max_size=25
    )
)
def test_order_accounting_always_balances(tmp_path_factory, plan):
    directory = tmp_path_factory.mktemp("accounting")
    rows, codes = _build_rows(plan)
    path = _write_csv(directory / "orders.csv", rows)
    batch = load_batch(file_source(directory, "orders.csv", COLUMNS))
    lines = _data_lines(path)
    winners, deduplicated, conflicts = _model(rows, codes)
    event(f"deduplicated: {min(deduplicated, 2)}, conflicts: {min(len(conflicts), 2)}")

    assert batch.rows_read == lines == len(rows)
    assert batch.rows_read == batch.orders.height + batch.rejected.height + batch.rows_deduplicated
    assert batch.rows_deduplicated == deduplicated
    # Every line appears once: loaded or rejected by its line, or among the deduplicated.
    loaded_rows = batch.orders["source_row"].to_list()
    rejected_rows = batch.rejected["source_row"].to_list()
    assert len(set(loaded_rows + rejected_rows)) == len(loaded_rows) + len(rejected_rows)
    assert len(loaded_rows) + len(rejected_rows) == lines - deduplicated
    assert dict(batch.orders.select("order_id", "source_row").iter_rows()) == {
        order_id: f"orders.csv:{line}" for order_id, line in winners.items()
    }
    expected_rejects = {f"orders.csv:{i + 2}": code for i, code in enumerate(codes) if code}
    expected_rejects |= {f"orders.csv:{line}": "duplicate_conflict" for line in conflicts}
    assert dict(batch.rejected.select("source_row", "reason_code").iter_rows()) == (
        expected_rejects
    )


LINE_COLUMNS = {
    "order_id": "invoice",
    "customer_id": "customer",
    "ordered_at": "at",
    "quantity": "qty",
    "unit_price": "price",
}


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    orders=st.lists(
        st.tuples(
            st.lists(
                st.sampled_from(["ok", "ok", "bad_quantity", "no_invoice"]), min_size=1, max_size=4
            ),
            st.booleans(),  # a return: negative prices
        ),
        min_size=1,
        max_size=8,
    ),
    data=st.data(),
)
def test_line_accounting_always_balances(tmp_path_factory, orders, data):
    directory = tmp_path_factory.mktemp("line_accounting")
    lines = []
    for n, (kinds, is_return) in enumerate(orders):
        for k, kind in enumerate(kinds):
            lines.append(
                {
                    "invoice": "" if kind == "no_invoice" else f"INV{n}",
                    "customer": f"c{n % 3}",
                    "at": f"2024-03-0{1 + k} 10:00:00",
                    "qty": "x" if kind == "bad_quantity" else str(k + 1),
                    "price": f"{'-' if is_return else ''}{n + 1}.25",
                }
            )
    lines = data.draw(st.permutations(lines))
    path = _write_csv(directory / "lines.csv", lines, header=list(lines[0]))
    config = file_source(directory, "lines.csv", LINE_COLUMNS, line_items=True)
    batch = load_batch(config)

    # The expectation, from a plain reading of the lines.
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in lines:
        if line["invoice"] and line["qty"] != "x":
            totals[line["invoice"]] = totals.get(line["invoice"], 0) + float(line["qty"]) * float(
                line["price"]
            )
            counts[line["invoice"]] = counts.get(line["invoice"], 0) + 1
    good = {invoice for invoice, total in totals.items() if total >= 0}
    assert batch.rows_read == _data_lines(path) == len(lines)
    assert batch.rows_deduplicated == 0
    assert set(batch.orders["order_id"]) == good
    for order in batch.orders.iter_rows(named=True):
        assert order["amount"] == pytest.approx(totals[order["order_id"]])
        assert order["line_count"] == counts[order["order_id"]]
    loaded_lines = sum(counts[invoice] for invoice in good)
    event(f"orders loaded: {min(len(good), 2)}, rejected: {min(len(totals) - len(good), 2)}")
    assert int(batch.orders["line_count"].sum()) == loaded_lines
    assert batch.rows_read == loaded_lines + batch.rejected.height
    # Every rejected line is a distinct line of the file.
    assert batch.rejected["source_row"].n_unique() == batch.rejected.height
    expected_codes = sorted(
        "missing_order_id"
        if not line["invoice"]
        else "unparseable_amount"
        if line["qty"] == "x"
        else "negative_amount"
        for line in lines
        if not line["invoice"] or line["qty"] == "x" or line["invoice"] not in good
    )
    assert sorted(batch.rejected["reason_code"]) == expected_codes


def test_rejected_and_loaded_frames_have_the_documented_columns(tmp_path):
    batch = _batch(tmp_path, [GOOD, {**GOOD, "id": ""}])
    assert batch.rejected.schema["order_date"] == pl.Date
    assert set(batch.orders.columns) >= {
        "order_id",
        "customer_id",
        "ordered_at",
        "order_date",
        "amount",
        "refunded_amount",
        "currency",
        "status",
        "line_count",
        "source_row",
    }
