"""Money done right: FX conversion with the latest rate on or before the local order date,
refund rows netted into their original orders, and their quarantine reasons. Small files
worked by hand, real DuckDB, no mocks."""

from __future__ import annotations

import csv
from datetime import date

import duckdb
import polars as pl
import pytest
from conftest import COLUMNS, LOAD_NOW, file_source, load_batch

from retention_pipeline.lib.fx import FxRatesError, read_fx_rates
from retention_pipeline.lib.quarantine import LoadWindow
from retention_pipeline.lib.warehouse import connect, write_load

HEADER = ["id", "cust", "placed", "changed", "total", "refund", "cur", "state", "parent"]
FX = {"path": "fx.csv", "columns": {"date": "day", "currency": "ccy", "rate": "usd_per_unit"}}
RATES = ["day,ccy,usd_per_unit", "2024-01-01,eur,1.10", "2024-01-10,EUR,1.20"]


def _row(order_id, placed, total, cur="USD", refund="", parent="", cust="c1", changed=""):
    return {
        "id": order_id, "cust": cust, "placed": placed, "changed": changed, "total": total,
        "refund": refund, "cur": cur, "state": "completed", "parent": parent,
    }  # fmt: skip


def _write(tmp_path, rows, rates=RATES):
    with (tmp_path / "orders.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if rates is not None:
        (tmp_path / "fx.csv").write_text("\n".join(rates) + "\n")


def _batch(tmp_path, rows, columns=COLUMNS, window=None, rates=RATES, **options):
    _write(tmp_path, rows, rates)
    return load_batch(file_source(tmp_path, "orders.csv", columns, **options), window)


def _codes(batch) -> dict[str, str]:
    return dict(batch.rejected.select("source_row", "reason_code").iter_rows())


def _reason(batch, line: int) -> str:
    return batch.rejected.filter(pl.col("source_row") == f"orders.csv:{line}")["reason"].item()


def _balanced(batch) -> bool:
    loaded = int((batch.orders["line_count"] + batch.orders["refund_rows"]).sum())
    return batch.rows_read == loaded + batch.rejected.height + batch.rows_deduplicated


# --- FX rates --------------------------------------------------------------------------------


def test_an_order_converts_with_the_latest_rate_on_or_before_its_date(tmp_path):
    batch = _batch(
        tmp_path,
        [
            _row("E1", "2024-01-05 10:00:00", "100", cur="EUR"),  # rate of Jan 1: 1.10
            _row("E2", "2024-01-10 00:30:00", "100", cur="eur"),  # rate of the day: 1.20
            _row("E3", "2023-12-31 23:00:00", "100", cur="EUR"),  # before the first rate
            _row("J1", "2024-01-05 10:00:00", "100", cur="JPY"),  # no rates at all
            _row("U1", "2024-01-05 10:00:00", "7.5"),
        ],
        fx_rates=FX,
    )
    rates = dict(batch.orders.select("order_id", "fx_rate").iter_rows())
    assert rates == {"E1": pytest.approx(1.10), "E2": pytest.approx(1.20), "U1": 1.0}
    # The amount stays in its own currency; staging multiplies by fx_rate.
    assert batch.orders.filter(pl.col("order_id") == "E1")["amount"].item() == 100.0
    assert _codes(batch) == {"orders.csv:4": "missing_fx_rate", "orders.csv:5": "unknown_currency"}
    assert "EUR" in _reason(batch, 4) and "2023-12-31" in _reason(batch, 4)
    assert "JPY" in _reason(batch, 5) and "fx.csv" in _reason(batch, 5)
    assert batch.fx_rates.rows() == [
        ("EUR", date(2024, 1, 1), 1.10, "fx.csv:2"),
        ("EUR", date(2024, 1, 10), 1.20, "fx.csv:3"),
    ]
    assert _balanced(batch)


def test_the_rate_date_is_the_local_date_in_the_reporting_timezone(tmp_path):
    # 03:00 UTC on Jan 10 is still Jan 9 in New York: the rate of Jan 1 applies.
    batch = _batch(
        tmp_path,
        [_row("E1", "2024-01-10 03:00:00", "100", cur="EUR")],
        fx_rates=FX,
        timezone="UTC",
        reporting_timezone="America/New_York",
    )
    assert batch.orders["fx_rate"].item() == pytest.approx(1.10)
    assert batch.orders["order_date"].item() == date(2024, 1, 9)


def test_without_an_fx_input_another_currency_stays_unknown(tmp_path):
    batch = _batch(tmp_path, [_row("E1", "2024-01-05 10:00:00", "100", cur="EUR")], rates=None)
    assert _codes(batch) == {"orders.csv:2": "unknown_currency"}
    assert batch.fx_rates is None


def test_line_level_orders_convert_too(tmp_path):
    (tmp_path / "lines.csv").write_text(
        "inv,cust,at,qty,price,cur\n"
        "I1,A,2024-01-05 10:00:00,2,10,EUR\n"
        "I1,A,2024-01-05 10:05:00,1,5,EUR\n"
        "I2,B,2023-06-01 10:00:00,1,5,EUR\n"
    )
    (tmp_path / "fx.csv").write_text("\n".join(RATES) + "\n")
    columns = {"order_id": "inv", "customer_id": "cust", "ordered_at": "at", "quantity": "qty",
               "unit_price": "price", "currency": "cur"}  # fmt: skip
    batch = load_batch(file_source(tmp_path, "lines.csv", columns, line_items=True, fx_rates=FX))
    assert batch.orders.select("order_id", "amount", "fx_rate").rows() == [
        ("I1", 25.0, pytest.approx(1.10))
    ]
    assert batch.rejected["reason_code"].to_list() == ["missing_fx_rate"]


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        (["day,ccy,rate", "2024-01-01,EUR,1.1"], "fx_rates.columns.rate names 'usd_per_unit'"),
        (RATES + ["2024-01-02,EUR,zero"], "fx.csv:4"),
        (RATES + ["2024-01-02,EUR,-1"], "positive rate"),
        (RATES + ["01/02/2024,EUR,1.1"], "fx_rates.date_format"),
        (RATES + ["2024-01-10,EUR,1.25"], "EUR has different rates on 2024-01-10"),
    ],
)
def test_a_bad_fx_file_fails_the_load_with_the_line_and_the_fix(tmp_path, rates, message):
    with pytest.raises(FxRatesError, match="fx.csv") as error:
        _batch(tmp_path, [_row("U1", "2024-01-05 10:00:00", "1")], rates=rates, fx_rates=FX)
    assert message in str(error.value)


def test_a_parquet_fx_file_with_a_date_column(tmp_path):
    pl.DataFrame({"date": [date(2024, 1, 1)], "currency": ["GBP"], "rate": [1.25]}).write_parquet(
        tmp_path / "fx.parquet"
    )
    config = file_source(tmp_path, "orders.csv", COLUMNS, fx_rates={"path": "fx.parquet"})
    assert read_fx_rates(config).rows() == [("GBP", date(2024, 1, 1), 1.25, "fx.parquet:1")]


# --- refund rows -----------------------------------------------------------------------------

REFUND_COLUMNS = {**COLUMNS, "refund_of": "parent"}


def test_refund_rows_net_into_their_original_and_bad_ones_are_quarantined(tmp_path):
    rows = [
        _row("O1", "2024-01-05 10:00:00", "100"),  # line 2
        _row("R1", "2024-01-07 10:00:00", "-30", parent="O1", cur=""),  # 3: nets 30
        _row("R2", "2024-01-08 10:00:00", "20", parent="O1"),  # 4: positive, nets 20
        _row("R3", "2024-01-08 10:00:00", "-5", parent="O9"),  # 5: no such order
        _row("O2", "2024-01-06 10:00:00", "40", refund="10", cust="c2"),  # 6
        _row("R4", "2024-01-09 10:00:00", "-25", parent="O2"),  # 7: 10 + 25 <= 40
        _row("R5", "2024-01-10 10:00:00", "-10", parent="O2"),  # 8: 45 > 40
        _row("R6", "2024-01-09 11:00:00", "-1", parent="O2", cur="EUR"),  # 9: other currency
        _row("R1", "2024-01-07 10:00:00", "-30", parent="O1", cur=""),  # 10: exact copy
    ]
    batch = _batch(tmp_path, rows, REFUND_COLUMNS)
    orders = {row["order_id"]: row for row in batch.orders.to_dicts()}
    assert sorted(orders) == ["O1", "O2"]
    assert (orders["O1"]["refunded_amount"], orders["O1"]["refund_rows"]) == (50.0, 2)
    assert (orders["O2"]["refunded_amount"], orders["O2"]["refund_rows"]) == (35.0, 1)
    assert _codes(batch) == {
        "orders.csv:5": "refund_unknown_order",
        "orders.csv:8": "refund_exceeds_amount",
        "orders.csv:9": "refund_currency_mismatch",
    }
    assert "O9" in _reason(batch, 5)
    assert "O2 to 45" in _reason(batch, 8) and "amount 40" in _reason(batch, 8)
    assert "EUR" in _reason(batch, 9) and "USD" in _reason(batch, 9)
    # A rejected refund row is filed under its original's id, which replaces it later.
    assert batch.rejected.filter(pl.col("source_row") == "orders.csv:8")["order_id"].item() == "O2"
    # 9 rows: 2 orders + 3 netted refund rows loaded, 3 rejected, 1 deduplicated.
    assert (batch.rows_read, batch.rejected.height, batch.rows_deduplicated) == (9, 3, 1)
    assert _balanced(batch)


def test_a_refund_of_a_quarantined_order_has_no_original(tmp_path):
    rows = [
        _row("O1", "2024-01-05 10:00:00", "ten"),
        _row("R1", "2024-01-07 10:00:00", "-3", parent="O1"),
    ]
    batch = _batch(tmp_path, rows, REFUND_COLUMNS)
    assert _codes(batch) == {
        "orders.csv:2": "unparseable_amount",
        "orders.csv:3": "refund_unknown_order",
    }


def test_refunds_that_add_up_to_the_amount_exactly_are_fine(tmp_path):
    rows = [
        _row("O1", "2024-01-05 10:00:00", "100"),
        _row("R1", "2024-01-06 10:00:00", "-30.1", parent="O1"),
        _row("R2", "2024-01-07 10:00:00", "-69.9", parent="O1"),
    ]
    batch = _batch(tmp_path, rows, REFUND_COLUMNS)
    assert batch.rejected.is_empty()
    assert batch.orders["refunded_amount"].item() == pytest.approx(100.0)


def test_negative_amounts_are_refunds_of_their_own_order_id(tmp_path):
    rows = [
        _row("O1", "2024-01-05 10:00:00", "100"),
        _row("O1", "2024-01-06 10:00:00", "-30"),  # a refund of O1, not a newer version
        _row("O1", "2024-01-07 10:00:00", "-20"),  # a second refund
        _row("O5", "2024-01-07 10:00:00", "-10"),  # refunds nothing known
        _row("O6", "2024-01-07 10:00:00", "-10", cust=""),  # no customer: still a refund
    ]
    batch = _batch(tmp_path, rows, negative_amounts_are_refunds=True)
    assert batch.orders.select("order_id", "amount", "refunded_amount", "refund_rows").rows() == [
        ("O1", 100.0, 50.0, 2)
    ]
    assert _codes(batch) == {
        "orders.csv:5": "refund_unknown_order",
        "orders.csv:6": "refund_unknown_order",
    }
    assert _balanced(batch)


def test_without_refund_rows_a_negative_amount_is_still_rejected(tmp_path):
    batch = _batch(tmp_path, [_row("O1", "2024-01-05 10:00:00", "-30")])
    assert _codes(batch) == {"orders.csv:2": "negative_amount"}


def test_a_refund_dated_in_the_window_reloads_its_original_whole(tmp_path):
    rows = [
        _row("O1", "2024-01-05 10:00:00", "100"),
        _row("R1", "2024-01-08 10:00:00", "-30", parent="O1"),
        _row("O2", "2024-01-05 11:00:00", "10"),
    ]
    window = LoadWindow(first=date(2024, 1, 8), last=date(2024, 1, 8))
    batch = _batch(tmp_path, rows, REFUND_COLUMNS, window=window)
    assert batch.orders.select("order_id", "order_date", "refunded_amount").rows() == [
        ("O1", date(2024, 1, 5), 30.0)
    ]
    assert batch.rows_read == 2 and _balanced(batch)


def test_the_warehouse_counts_netted_refund_rows_as_loaded_and_lands_the_rates(
    tmp_path, monkeypatch
):
    rows = [
        _row("O1", "2024-01-05 10:00:00", "100", cur="EUR"),
        _row("R1", "2024-01-07 10:00:00", "-30", parent="O1", cur=""),  # in EUR, as O1
        _row("R2", "2024-01-08 10:00:00", "-5", parent="O7"),
    ]
    _write(tmp_path, rows)
    config = file_source(
        tmp_path, "orders.csv", REFUND_COLUMNS, fx_rates=FX, warehouse={"path": "w.duckdb"}
    )
    batch = load_batch(config)
    window = LoadWindow(first=None, last=date(2099, 12, 31))
    with connect(config.warehouse_path) as con:
        result = write_load(con, "orders", window, [batch], LOAD_NOW, hash_emails=False)
    assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (3, 2, 1)
    assert result.balanced
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        assert con.sql(
            "select order_id, amount, refunded_amount, currency, fx_rate, refund_rows "
            "from raw.orders"
        ).fetchall() == [("O1", 100.0, 30.0, "EUR", 1.1, 1)]
        assert con.sql("select count(*) from raw.fx_rates").fetchall() == [(2,)]


# --- end to end: the command line on a shop with FX, a status map and refund rows -----------

E2E_HEADER = "order_id,customer_id,ordered_at,amount,status,refunded_amount,currency,refund_of"
E2E_ROWS = [
    "A1,A,2024-01-05 10:00:00,100,Shipped,0,EUR,",  # 100 EUR × 1.10 = 110
    "A2,A,2024-02-10 10:00:00,50,completed,10,USD,",  # 50 − 10 − 15 (RA2) = 25
    "RA2,A,2024-02-12 10:00:00,-15,,,,A2",
    "RA2,A,2024-02-12 10:00:00,-15,,,,A2",  # an exact copy: deduplicated
    "B1,B,2024-01-20 12:00:00,200,shipped,0,EUR,",  # 200 × 1.20 = 240, − 40 × 1.20 = 192
    "RB1,B,2024-01-25 09:00:00,40,,,EUR,B1",
    "B2,B,2024-03-01 10:00:00,30,VOID,0,USD,",  # void → cancelled: no purchase
    "C1,C,2023-12-20 10:00:00,80,completed,0,EUR,",  # before the first EUR rate
    "C2,C,2024-01-06 10:00:00,60,completed,0,GBP,",  # no GBP rates at all
    "C3,C,2024-01-07 10:00:00,20,Pending,0,usd,",  # unmapped status passes: 20
    "RX,C,2024-01-08 10:00:00,-5,,,,Z9",  # refunds an order nobody has
    "RC3,C,2024-01-09 10:00:00,-25,,,,C3",  # 25 > 20
]
E2E_RATES = ["day,ccy,usd_per_unit", "2024-01-01,EUR,1.10", "2024-01-15,EUR,1.20",
             "2024-02-01,EUR,1.30"]  # fmt: skip


@pytest.fixture(scope="module")
def money_run(tmp_path_factory):
    from pipeline_helpers import run_cli, write_config

    directory = tmp_path_factory.mktemp("money")
    (directory / "orders.csv").write_text("\n".join([E2E_HEADER, *E2E_ROWS]) + "\n")
    (directory / "fx.csv").write_text("\n".join(E2E_RATES) + "\n")
    columns = {c: c for c in E2E_HEADER.split(",")}
    config = write_config(
        directory,
        source={"type": "file", "path": "orders.csv", "format": "csv", "columns": columns},
        status_map={"Shipped": "completed", "void": "cancelled"},
        gross_margin=0.5,
        fx_rates=FX,
    )
    run_cli(config, as_of=date(2024, 3, 31))
    return directory


def _mart(directory, sql):
    with duckdb.connect(str(directory / "warehouse.duckdb"), read_only=True) as con:
        return pl.from_arrow(con.sql(sql).to_arrow_table())


def test_end_to_end_net_amounts_are_converted_and_netted(money_run):
    fct = _mart(
        money_run,
        "select order_id, order_status, source_status, currency, fx_rate, "
        "cast(gross_amount as double) as gross, cast(refunded_amount as double) as refunded, "
        "cast(net_amount as double) as net, cast(original_net_amount as double) as original_net, "
        "refund_rows from fct_orders order by order_id",
    )
    assert fct.rows() == [
        ("A1", "completed", "shipped", "EUR", 1.10, 110.0, 0.0, 110.0, 100.0, 0),
        ("A2", "completed", "completed", "USD", 1.0, 50.0, 25.0, 25.0, 25.0, 1),
        ("B1", "completed", "shipped", "EUR", 1.20, 240.0, 48.0, 192.0, 160.0, 1),
        ("C3", "pending", "pending", "USD", 1.0, 20.0, 0.0, 20.0, 20.0, 0),
    ]


def test_end_to_end_rejected_rows_and_the_row_accounting(money_run):
    rejected = _mart(
        money_run, "select source_row, reason_code, reason from rejected_orders order by 1"
    )
    assert sorted(rejected.select("source_row", "reason_code").rows()) == [
        ("orders.csv:10", "unknown_currency"),
        ("orders.csv:12", "refund_unknown_order"),
        ("orders.csv:13", "refund_exceeds_amount"),
        ("orders.csv:9", "missing_fx_rate"),
    ]
    reasons = dict(rejected.select("reason_code", "reason").iter_rows())
    assert "EUR" in reasons["missing_fx_rate"] and "2023-12-20" in reasons["missing_fx_rate"]
    assert "GBP" in reasons["unknown_currency"]
    assert "Z9" in reasons["refund_unknown_order"]
    audit = _mart(
        money_run,
        "select rows_read, rows_loaded, rows_rejected, rows_deduplicated, is_balanced "
        "from load_audit",
    )
    # 12 rows: 5 orders loaded (A1, A2, B1, B2, C3) with 2 refund rows netted into them, 4
    # rejected (C1, C2, RX, RC3), 1 deduplicated (the copy of RA2).
    assert audit.rows() == [(12, 7, 4, 1, True)]
    rates = _mart(money_run, "select currency, rate_date, fx_rate from staging.stg_fx__rates")
    assert rates.height == 3


def test_end_to_end_historical_ltv_uses_the_gross_margin(money_run):
    customers = _mart(
        money_run,
        "select customer_id, cast(net_revenue as double), cast(historical_ltv as double) "
        "from dim_customers order by 1",
    )
    # A: 110 + 25; B: 192 (B2 is void → cancelled); C: 20. Margin 0.5.
    assert customers.rows() == [("A", 135.0, 67.5), ("B", 192.0, 96.0), ("C", 20.0, 10.0)]


def test_end_to_end_matches_the_independent_reference(money_run):
    import reference as ref

    raw = pl.read_csv(money_run / "orders.csv", infer_schema=False)
    rates = pl.read_csv(money_run / "fx.csv", infer_schema=False).select(
        currency="ccy", rate_date=pl.col("day").str.to_date(), rate=pl.col("usd_per_unit")
    )
    expected = ref.valid_orders_from_raw(
        raw,
        status_map={"Shipped": "completed", "void": "cancelled"},
        fx_rates=rates,
        as_of=date(2024, 3, 31),
    )
    fct = _mart(
        money_run,
        "select customer_id, order_id, order_date, cast(net_amount as double) as net_amount "
        "from fct_orders order by order_id",
    )
    assert fct.rows() == expected.rows()
