"""The raw layer in a real DuckDB file: a load replaces its window atomically, twice equals
once, the audit balances, and emails exist only as HMAC-SHA256."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import hmac
from datetime import UTC, date, datetime

import duckdb
import polars as pl
import pytest
from conftest import LOAD_NOW, file_source, load_batch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from retention_pipeline.lib import warehouse
from retention_pipeline.lib.config import ConfigError
from retention_pipeline.lib.quarantine import LoadWindow
from retention_pipeline.lib.warehouse import PII_KEY_ENV, connect, record_failed_load, write_load

COLUMNS = {
    "order_id": "id",
    "customer_id": "cust",
    "ordered_at": "placed",
    "updated_at": "changed",
    "amount": "total",
    "status": "state",
}
HEADER = ["id", "cust", "placed", "changed", "total", "state"]
EVERYTHING = LoadWindow(first=None, last=date(2024, 12, 31))
LOAD_COLUMNS = {"load_id", "load_sequence", "loaded_at", "rejected_at"}


def _row(order_id, day, total="10", cust="c1", changed="2024-01-01 00:00:00", state="completed"):
    placed = f"2024-01-{day:02d} 12:00:00" if isinstance(day, int) else day
    return {
        "id": order_id,
        "cust": cust,
        "placed": placed,
        "changed": changed,
        "total": total,
        "state": state,
    }


def _write_csv(path, rows, header=HEADER):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _load(directory, rows, window=EVERYTHING, columns=COLUMNS, header=HEADER, **options):
    """Writes `rows` as the source file and loads `window` of it into the warehouse."""
    _write_csv(directory / "orders.csv", rows, header)
    config = file_source(directory, "orders.csv", columns, **options)
    batch = load_batch(config, window)
    with connect(directory / "warehouse.duckdb") as con:
        return write_load(
            con,
            config.source.name,
            window,
            [batch],
            LOAD_NOW,
            hash_emails="customer_email" in config.source.columns,
        )


def _table(directory, table: str, drop=LOAD_COLUMNS) -> pl.DataFrame:
    with duckdb.connect(str(directory / "warehouse.duckdb"), read_only=True) as con:
        frame = pl.from_arrow(con.sql(f"select * from raw.{table}").to_arrow_table())
    keep = [c for c in frame.columns if c not in drop]
    return frame.select(keep).sort(keep, nulls_last=True)


def _state(directory) -> dict[str, pl.DataFrame]:
    return {t: _table(directory, t, drop=()) for t in ("orders", "rejected_orders", "load_audit")}


def _same(left: dict, right: dict) -> bool:
    return left.keys() == right.keys() and all(left[k].equals(right[k]) for k in left)


MIXED = [
    _row("A", 1, "10.5"),
    _row("B", 2, "20"),
    _row("B", 2, "20"),  # an exact copy
    _row("C", 3, "5", changed="2023-12-31 00:00:00"),  # superseded by the next
    _row("C", 3, "6"),
    _row("D", 3, "-1"),  # negative_amount
    _row("E", "not a date"),  # unparseable_ordered_at
    _row("", 4),  # missing_order_id
]


def test_a_load_lands_orders_rejects_and_a_balanced_audit(tmp_path):
    result = _load(tmp_path, MIXED)
    orders = _table(tmp_path, "orders", drop=())
    assert orders.select("order_id", "order_date", "amount", "source_row").sort(
        "order_id"
    ).rows() == [
        ("A", date(2024, 1, 1), 10.5, "orders.csv:2"),
        ("B", date(2024, 1, 2), 20.0, "orders.csv:4"),
        ("C", date(2024, 1, 3), 6.0, "orders.csv:6"),
    ]
    assert set(orders["load_id"]) == {result.load_id}
    assert set(orders["source"]) == {"orders"}
    assert set(orders["line_count"]) == {1}
    rejected = _table(tmp_path, "rejected_orders", drop=())
    assert rejected.select("source_row", "reason_code").sort("source_row").rows() == [
        ("orders.csv:7", "negative_amount"),
        ("orders.csv:8", "unparseable_ordered_at"),
        ("orders.csv:9", "missing_order_id"),
    ]
    (audit,) = _table(tmp_path, "load_audit", drop=()).to_dicts()
    lines = len(MIXED)  # the file's data lines
    assert audit == {
        **audit,
        "load_id": result.load_id,
        "load_sequence": 1,
        "source": "orders",
        "window_first": None,
        "window_last": date(2024, 12, 31),
        "started_at": LOAD_NOW.replace(tzinfo=None),
        "rows_read": lines,
        "rows_loaded": 3,
        "rows_rejected": 3,
        "rows_deduplicated": 2,
        "status": "succeeded",
        "error": None,
    }
    assert audit["finished_at"] >= audit["started_at"]
    assert result.balanced
    assert (
        audit["rows_read"]
        == audit["rows_loaded"] + audit["rows_rejected"] + (audit["rows_deduplicated"])
    )


def test_loading_the_same_window_twice_equals_loading_it_once(tmp_path):
    first = _load(tmp_path, MIXED)
    once = {t: _table(tmp_path, t) for t in ("orders", "rejected_orders")}
    second = _load(tmp_path, MIXED)
    twice = {t: _table(tmp_path, t) for t in ("orders", "rejected_orders")}
    assert _same(once, twice)
    audit = _table(tmp_path, "load_audit", drop=()).sort("load_sequence")
    assert audit["load_sequence"].to_list() == [1, 2]
    assert audit["load_id"].to_list() == [first.load_id, second.load_id]
    assert set(_table(tmp_path, "orders", drop=())["load_id"]) == {second.load_id}
    counts = ["rows_read", "rows_loaded", "rows_rejected", "rows_deduplicated"]
    assert audit.select(counts).rows()[0] == audit.select(counts).rows()[1]


def test_a_window_load_replaces_only_that_windows_rows(tmp_path):
    days = [_row(f"D{d}", d, str(d)) for d in range(1, 6)]
    first = _load(tmp_path, [*days, _row("BAD1", 1, "x"), _row("BAD3", 3, "x")])
    changed = [
        days[0],
        _row("D2", 2, "200"),  # changed inside the window
        _row("NEW2", 2, "22"),  # new inside the window
        # D3 and BAD3 are gone from the source
        _row("D4", 4, "400"),  # changed outside the window: not this load's business
        days[4],
    ]
    second = _load(tmp_path, changed, LoadWindow(first=date(2024, 1, 2), last=date(2024, 1, 3)))
    orders = _table(tmp_path, "orders", drop=())
    assert orders.select("order_id", "amount", "load_id").sort("order_id").rows() == [
        ("D1", 1.0, first.load_id),
        ("D2", 200.0, second.load_id),
        ("D4", 4.0, first.load_id),
        ("D5", 5.0, first.load_id),
        ("NEW2", 22.0, second.load_id),
    ]
    rejected = _table(tmp_path, "rejected_orders", drop=())
    assert rejected.select("order_id", "load_id").rows() == [("BAD1", first.load_id)]
    assert (second.rows_read, second.rows_loaded, second.rows_rejected) == (2, 2, 0)


def test_a_late_version_moves_its_order_out_of_an_earlier_day(tmp_path):
    _load(tmp_path, [_row("A", 1, changed="2024-01-01 12:00:00")])
    moved = [_row("A", 5, "99", changed="2024-01-05 09:00:00")]
    _load(tmp_path, moved, LoadWindow(first=date(2024, 1, 5), last=date(2024, 1, 5)))
    assert _table(tmp_path, "orders").select("order_id", "order_date", "amount").rows() == [
        ("A", date(2024, 1, 5), 99.0)
    ]


def test_a_backfill_of_an_old_day_keeps_the_newest_version(tmp_path):
    rows = [
        _row("X", 1, "10", changed="2024-01-01 00:00:00"),
        _row("X", 3, "30", changed="2024-01-05 00:00:00"),  # re-dated and changed later
    ]
    _load(tmp_path, rows)
    newest = [("X", date(2024, 1, 3), 30.0)]
    assert _table(tmp_path, "orders").select("order_id", "order_date", "amount").rows() == newest
    _load(tmp_path, rows, LoadWindow(first=date(2024, 1, 1), last=date(2024, 1, 1)))
    assert _table(tmp_path, "orders").select("order_id", "order_date", "amount").rows() == newest


def test_sources_do_not_touch_each_others_rows(tmp_path):
    _load(tmp_path, [_row("A", 1), _row("BAD", 1, "x")], name="shop_a")
    _load(tmp_path, [_row("A", 1, "99")], name="shop_b")
    _load(tmp_path, [_row("A", 1, "99")], name="shop_b")
    orders = _table(tmp_path, "orders").select("source", "order_id", "amount")
    assert orders.rows() == [("shop_a", "A", 10.0), ("shop_b", "A", 99.0)]
    assert _table(tmp_path, "rejected_orders").select("source", "order_id").rows() == [
        ("shop_a", "BAD")
    ]


def test_a_line_level_load_counts_lines(tmp_path):
    header = ["inv", "cust", "at", "qty", "price"]
    lines = [
        {"inv": "I1", "cust": "c1", "at": "2024-01-01 10:00", "qty": "2", "price": "1.5"},
        {"inv": "I1", "cust": "c1", "at": "2024-01-01 09:00", "qty": "1", "price": "4"},
        {"inv": "I2", "cust": "c2", "at": "2024-01-02 10:00", "qty": "x", "price": "4"},
        {"inv": "I3", "cust": "c2", "at": "2024-01-02 11:00", "qty": "1", "price": "7"},
    ]
    columns = {
        "order_id": "inv",
        "customer_id": "cust",
        "ordered_at": "at",
        "quantity": "qty",
        "unit_price": "price",
    }
    result = _load(tmp_path, lines, columns=columns, header=header, line_items=True)
    orders = _table(tmp_path, "orders")
    assert orders.select("order_id", "amount", "line_count", "ordered_at").rows() == [
        ("I1", 7.0, 2, datetime(2024, 1, 1, 9)),
        ("I3", 7.0, 1, datetime(2024, 1, 2, 11)),
    ]
    (audit,) = _table(tmp_path, "load_audit").to_dicts()
    assert (audit["rows_read"], audit["rows_loaded"], audit["rows_rejected"]) == (4, 3, 1)
    assert audit["rows_deduplicated"] == 0
    assert result.balanced


@pytest.mark.parametrize("shape", ["orders", "lines", "files_of_different_columns"])
def test_a_load_in_parts_equals_a_load_in_one_piece(tmp_path, monkeypatch, shape):
    """Parts hold disjoint orders, every row of each (versions, lines, bad rows alike), and a
    bounded window's parts only the orders it can touch, so loading a big source part by part
    changes nothing but the memory and time it takes. The reference validates the whole source
    at once, without parts. Files of different columns have their raw records as JSON before
    the source is split into parts."""
    from retention_pipeline.lib import quarantine
    from retention_pipeline.lib.extract import scan_source_rows
    from retention_pipeline.lib.generate import GENERATED_COLUMNS, generate_orders, write_orders

    orders = generate_orders(customers=150, seed=11, start=date(2024, 1, 1), end=date(2024, 3, 31))
    columns = {c: c for c in GENERATED_COLUMNS if c != "customer_email"}
    line_items = shape == "lines"
    if line_items:
        # Each order in two lines, the second in a later file and a day later; amounts as unit
        # prices. A window can hold one line of an order and not the other.
        del columns["amount"]
        columns |= {"unit_price": "unit_price", "quantity": "quantity"}
        orders = orders.rename({"amount": "unit_price"}).with_columns(quantity=pl.lit("1"))
        later = pl.col("ordered_at").str.to_datetime(strict=False).dt.offset_by("1d")
        second_lines = orders.with_columns(
            unit_price=pl.lit("2.5"),
            ordered_at=pl.coalesce(later.dt.to_string("%Y-%m-%d %H:%M:%S"), "ordered_at"),
        )
        halves = [orders, second_lines]
    else:
        halves = [orders.head(orders.height // 2), orders.tail(orders.height - orders.height // 2)]
    if shape == "files_of_different_columns":
        halves[1] = halves[1].with_columns(note=pl.lit("unmapped, kept in raw_record"))
    # The whole history, a month, then nights: each replaces the orders it touches.
    loads = [
        EVERYTHING,
        LoadWindow(first=date(2024, 2, 1), last=date(2024, 2, 29)),
        LoadWindow(first=date(2024, 3, 10), last=date(2024, 3, 10)),
        LoadWindow(first=date(2024, 1, 24), last=date(2024, 1, 25)),
    ]

    def validate_whole(rows, config, window, now):
        return [quarantine.validate(rows, config, window, now)]

    states, parts = [], []
    # Small parts read from the source, then from the files it is split into.
    for validation, rows_per_part, split_past_parts in (
        (validate_whole, None, None),
        (quarantine.validate_in_parts, 10**9, None),
        (quarantine.validate_in_parts, 41, 10**9),
        (quarantine.validate_in_parts, 41, 0),
    ):
        if rows_per_part:
            monkeypatch.setattr(quarantine, "ROWS_PER_PART", rows_per_part)
        if split_past_parts is not None:
            monkeypatch.setattr(quarantine, "SPLIT_PAST_PARTS", split_past_parts)
        directory = tmp_path / f"{validation.__name__}-{rows_per_part}-{split_past_parts}"
        for number, half in enumerate(halves):
            write_orders(half, directory / f"orders-{number}.csv")
        config = file_source(directory, "orders-*.csv", columns, line_items=line_items)
        results, counts = [], []
        for window in loads:
            batches = list(validation(scan_source_rows(config), config, window, LOAD_NOW))
            counts.append(len(batches))
            with connect(directory / "warehouse.duckdb") as con:
                results.append(write_load(con, "orders", window, batches, LOAD_NOW, False))
        assert all(result.balanced for result in results)
        tables = {t: _table(directory, t) for t in ("orders", "rejected_orders")}
        states.append((tables, [dataclasses.replace(r, load_id="") for r in results]))
        parts.append(counts)
    one_piece, big_parts, small_parts, split_parts = parts
    assert one_piece == big_parts == [1] * len(loads)
    assert split_parts == small_parts
    # The whole history in many parts; a night's few orders in fewer.
    assert small_parts[0] > 5 and small_parts[1] > 1 and small_parts[2] < small_parts[1]
    (whole, whole_results), *others = states
    assert whole["orders"].height > 200 and whole["rejected_orders"].height > 5
    assert [r.rows_read for r in whole_results[1:]] != [0, 0, 0]
    for tables, results in others:
        assert results == whole_results
        assert _same(whole, tables)


# --- failures -------------------------------------------------------------------------------


class _ClockFailure(RuntimeError):
    pass


class _FailingClock(datetime):
    """`datetime.now` fails: in write_load its first call comes after the deletes."""

    @classmethod
    def now(cls, tz=None):
        raise _ClockFailure("the disk is full")


class _InterruptedClock(datetime):
    """`datetime.now` is interrupted (Ctrl-C) after the deletes."""

    @classmethod
    def now(cls, tz=None):
        raise KeyboardInterrupt


@pytest.mark.parametrize("failure", ["after_delete", "constraint", "interrupt"])
def test_a_load_that_fails_midway_leaves_the_previous_state(tmp_path, monkeypatch, failure):
    _load(tmp_path, MIXED)
    before = _state(tmp_path)
    changed = [_row("A", 1, "999"), _row("Z", 2, "1"), _row("Q", 1, "-5")]
    _write_csv(tmp_path / "orders.csv", changed)
    batch = load_batch(file_source(tmp_path, "orders.csv", COLUMNS), EVERYTHING)
    if failure == "after_delete":
        monkeypatch.setattr(warehouse, "datetime", _FailingClock)
        expected_error: type[BaseException] = _ClockFailure
    elif failure == "interrupt":
        monkeypatch.setattr(warehouse, "datetime", _InterruptedClock)
        expected_error = KeyboardInterrupt
    else:
        # A rejected row without a reason breaks a NOT NULL constraint on the last insert,
        # after the deletes and the orders insert have run.
        batch = dataclasses.replace(
            batch, rejected=batch.rejected.with_columns(pl.lit(None, pl.String).alias("reason"))
        )
        expected_error = duckdb.ConstraintException
    with connect(tmp_path / "warehouse.duckdb") as con:
        with pytest.raises(expected_error):
            write_load(con, "orders", EVERYTHING, [batch], LOAD_NOW, hash_emails=False)
        # The connection is out of the transaction and still sees the old rows.
        assert con.execute("select count(*) from raw.orders").fetchone() == (3,)
    assert _same(_state(tmp_path), before)
    monkeypatch.undo()
    _load(tmp_path, changed)  # and the next load goes through
    assert sorted(_table(tmp_path, "orders")["order_id"]) == ["A", "Z"]


def test_a_failed_load_is_recorded_without_counts(tmp_path):
    _load(tmp_path, MIXED)
    with connect(tmp_path / "warehouse.duckdb") as con:
        record_failed_load(
            con, "orders", LoadWindow(date(2024, 1, 2), date(2024, 1, 3)), LOAD_NOW, "boom"
        )
    audit = _table(tmp_path, "load_audit", drop=()).sort("load_sequence")
    failed = audit.row(1, named=True)
    assert (failed["load_sequence"], failed["status"], failed["error"]) == (2, "failed", "boom")
    assert (failed["window_first"], failed["window_last"]) == (date(2024, 1, 2), date(2024, 1, 3))
    assert failed["rows_read"] is None
    assert _table(tmp_path, "orders").height == 3


# --- PII ------------------------------------------------------------------------------------

EMAIL_COLUMNS = {**COLUMNS, "customer_email": "mail"}
EMAIL_HEADER = [*HEADER, "mail"]
KEY = "test-key-not-a-secret"
EMAILS = {
    "A": " Alice.Smith@Example.COM ",
    "B": "bob.jones@example.org",
    "NEG": "neg.payer@example.net",
    "NOCUST": "no.customer@example.net",
    "CONFLICT": "first.conflict@example.net",
}


def _email_rows():
    return [
        {**_row("A", 1), "mail": EMAILS["A"]},
        {**_row("B", 2), "mail": EMAILS["B"]},
        {**_row("B", 2, changed="2023-01-01 00:00:00"), "mail": "old.bob@example.org"},
        {**_row("NEG", 2, "-4"), "mail": EMAILS["NEG"]},
        {**_row("NOCUST", 2, cust=""), "mail": EMAILS["NOCUST"]},
        {**_row("CONFLICT", 3, "1"), "mail": EMAILS["CONFLICT"]},
        {**_row("CONFLICT", 3, "2"), "mail": "second.conflict@example.net"},
        {**_row("NOMAIL", 3), "mail": ""},
    ]


def _hmac(key: str, email: str) -> str:
    return hmac.new(key.encode(), email.strip().lower().encode(), hashlib.sha256).hexdigest()


def _varchar_cells(directory) -> list[tuple[str, str]]:
    """(table.column, value) of every varchar cell of every table in the warehouse."""
    cells = []
    with duckdb.connect(str(directory / "warehouse.duckdb"), read_only=True) as con:
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type = 'VARCHAR'"
        ).fetchall()
        for schema, table, column in columns:
            for (value,) in con.execute(f'select "{column}" from "{schema}"."{table}"').fetchall():
                if value is not None:
                    cells.append((f"{schema}.{table}.{column}", value))
    return cells


def test_emails_are_stored_only_as_their_hmac(tmp_path, monkeypatch):
    monkeypatch.setenv(PII_KEY_ENV, KEY)
    _load(tmp_path, _email_rows(), columns=EMAIL_COLUMNS, header=EMAIL_HEADER)
    orders = _table(tmp_path, "orders")
    assert dict(orders.select("order_id", "customer_email_hash").iter_rows()) == {
        "A": _hmac(KEY, "alice.smith@example.com"),
        "B": _hmac(KEY, EMAILS["B"]),
        "CONFLICT": _hmac(KEY, "second.conflict@example.net"),
        "NOMAIL": None,
    }
    rejected = _table(tmp_path, "rejected_orders")
    assert set(rejected["reason_code"]) == {
        "negative_amount",
        "missing_customer_id",
        "duplicate_conflict",
    }
    for raw_record in rejected["raw_record"]:
        assert '"mail":"<redacted>"' in raw_record
    cells = _varchar_cells(tmp_path)
    assert any(where == "raw.rejected_orders.raw_record" for where, _ in cells)
    all_emails = [*EMAILS.values(), "old.bob@example.org", "second.conflict@example.net"]
    for where, value in cells:
        assert "@" not in value, f"{where} holds {value!r}"
        for email in all_emails:
            local_part = email.strip().lower().split("@")[0]
            assert local_part not in value.lower(), f"{where} holds {value!r}"


@pytest.mark.parametrize("key", ["k" * 65, "é" * 40], ids=["long_ascii", "multibyte"])
def test_a_long_key_still_gives_the_standard_hmac(tmp_path, monkeypatch, key):
    monkeypatch.setenv(PII_KEY_ENV, key)
    _load(tmp_path, _email_rows()[:1], columns=EMAIL_COLUMNS, header=EMAIL_HEADER)
    assert _table(tmp_path, "orders")["customer_email_hash"].to_list() == [_hmac(key, EMAILS["A"])]


@pytest.mark.parametrize("key", [None, ""], ids=["unset", "empty"])
def test_an_email_mapping_without_a_key_fails_clearly_and_writes_nothing(
    tmp_path, monkeypatch, key
):
    if key is None:
        monkeypatch.delenv(PII_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(PII_KEY_ENV, key)
    with pytest.raises(ConfigError) as excinfo:
        _load(tmp_path, _email_rows(), columns=EMAIL_COLUMNS, header=EMAIL_HEADER)
    message = str(excinfo.value)
    assert PII_KEY_ENV in message
    assert "customer_email" in message
    assert "HMAC-SHA256" in message
    for table in ("orders", "rejected_orders", "load_audit"):
        assert _table(tmp_path, table).is_empty()


def test_without_an_email_mapping_no_key_is_needed(tmp_path, monkeypatch):
    monkeypatch.delenv(PII_KEY_ENV, raising=False)
    _load(tmp_path, MIXED)
    assert _table(tmp_path, "orders")["customer_email_hash"].null_count() == 3


# --- backfills ------------------------------------------------------------------------------


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    # Each example writes six DuckDB files' worth of loads: report a failure unshrunk
    # rather than spend minutes shrinking it.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C", "D", ""]),  # versions of an order, or no id
            st.integers(1, 4),  # day
            st.sampled_from(["5", "7.5", "-1", "x"]),
            st.integers(0, 2),  # updated that many days later
            st.sampled_from(["c1", "c2", ""]),
        ),
        min_size=1,
        max_size=12,
    ),
    undatable=st.booleans(),
    order=st.permutations([1, 2, 3, 4]),
    repeat=st.integers(1, 4),
)
def test_day_by_day_loads_in_any_order_equal_one_full_load(
    tmp_path_factory, rows, undatable, order, repeat
):
    """A backfill of single days, in any order, one of them twice, leaves the raw layer as
    one full load does, with versions of an order placed on different days and updated on
    later ones."""
    source = [
        _row(oid, day, total, cust=cust, changed=f"2024-01-{day + later:02d} 00:00:00")
        for oid, day, total, later, cust in rows
    ]
    if undatable:
        source.append(_row("U", "next tuesday"))
    full = tmp_path_factory.mktemp("full")
    _load(full, source)
    daily = tmp_path_factory.mktemp("daily")
    for day in [*order, repeat]:
        _load(daily, source, LoadWindow(first=date(2024, 1, day), last=date(2024, 1, day)))
    for table in ("orders", "rejected_orders"):
        assert _table(full, table).equals(_table(daily, table)), table
    audit = _table(daily, "load_audit")
    assert (
        audit["rows_read"]
        == audit["rows_loaded"] + audit["rows_rejected"] + audit["rows_deduplicated"]
    ).all()


def test_a_rejected_version_survives_a_later_days_load_of_its_order(tmp_path):
    rows = [
        _row("C", 1, cust="", changed="2024-01-01 00:00:00"),  # missing_customer_id
        _row("C", 1, changed="2024-01-02 00:00:00"),  # fixed the next day
    ]
    full, daily = tmp_path / "full", tmp_path / "daily"
    full.mkdir()
    daily.mkdir()
    _load(full, rows)
    for day in (1, 2):  # two nightly runs
        _load(daily, rows, LoadWindow(first=date(2024, 1, day), last=date(2024, 1, day)))
    assert _table(full, "rejected_orders")["source_row"].to_list() == ["orders.csv:2"]
    assert _table(daily, "rejected_orders").equals(_table(full, "rejected_orders"))


def test_loaded_at_and_rejected_at_are_utc_now(tmp_path):
    before = datetime.now(UTC).replace(tzinfo=None)
    _load(tmp_path, MIXED)
    after = datetime.now(UTC).replace(tzinfo=None)
    for table, column in (("orders", "loaded_at"), ("rejected_orders", "rejected_at")):
        stamps = _table(tmp_path, table, drop=())[column]
        assert stamps.min() >= before and stamps.max() <= after


def test_duckdb_memory_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(warehouse.DUCKDB_MEMORY_LIMIT_ENV, "512MiB")
    with connect(tmp_path / "w.duckdb") as con:
        assert con.execute("select current_setting('memory_limit')").fetchall() == [("512.0 MiB",)]
    monkeypatch.setenv(warehouse.DUCKDB_MEMORY_LIMIT_ENV, "1GB'; drop table x; --")
    with pytest.raises(ValueError, match="RETENTION_DUCKDB_MEMORY_LIMIT"):
        warehouse.memory_limit()


def test_duckdb_sessions_give_freed_memory_back(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        # What queries free goes back to the system, not kept by DuckDB's allocator.
        setting = "select current_setting('allocator_background_threads')"
        assert con.execute(setting).fetchall() == [(True,)]
