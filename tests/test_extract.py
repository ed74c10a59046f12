"""File extraction: every supported layout of a file source reads into the same orders, each
row remembering its file and line, and a source that lacks a mapped column fails early."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import file_source, headerless_text_source, load_batch, write_lines

from retention_pipeline.lib.config import ConfigError
from retention_pipeline.lib.extract import (
    SourceSchemaError,
    encode_raw_records,
    scan_source_rows,
)
from retention_pipeline.lib.quarantine import LoadWindow

FIXTURES = Path(__file__).parent / "fixtures"
COLUMNS = {"order_id": "id", "customer_id": "cust", "ordered_at": "placed", "amount": "total"}
HEADER = "id,cust,placed,total"
ROWS = ["A1,c1,2024-01-05 10:00:00,10.50", "A2,c2,2024-01-06 11:30:00,20", "A3,c1,2024-02-01,7.25"]
EXPECTED = [
    ("A1", "c1", datetime(2024, 1, 5, 10, 0), 10.5),
    ("A2", "c2", datetime(2024, 1, 6, 11, 30), 20.0),
    ("A3", "c1", datetime(2024, 2, 1), 7.25),
]


def _orders(batch) -> list[tuple]:
    return sorted(
        batch.orders.select("order_id", "customer_id", "ordered_at", "amount").iter_rows()
    )


def _source_rows(config) -> list[str]:
    return scan_source_rows(config).collect()["source_row"].to_list()


def test_a_plain_csv_reads_every_row_with_its_line(tmp_path):
    write_lines(tmp_path / "orders.csv", HEADER, *ROWS)
    config = file_source(tmp_path, "orders.csv", COLUMNS)
    rows = scan_source_rows(config).collect()
    assert rows["source_row"].to_list() == ["orders.csv:2", "orders.csv:3", "orders.csv:4"]
    assert rows.schema["amount"] == pl.String  # typing happens in quarantine, not here
    assert json.loads(encode_raw_records(rows)["raw_record"][0]) == {
        "id": "A1",
        "cust": "c1",
        "placed": "2024-01-05 10:00:00",
        "total": "10.50",
    }
    batch = load_batch(config)
    assert _orders(batch) == EXPECTED
    assert batch.rejected.is_empty()
    assert batch.rows_read == 3


def test_a_semicolon_delimited_csv_keeps_commas_inside_values(tmp_path):
    write_lines(
        tmp_path / "orders.csv",
        "id;cust;placed;total;note",
        'A1;Smith, J;2024-01-05 10:00:00;10.50;"a; quoted note"',
        "A2;c2;2024-01-06 11:30:00;20;plain, with comma",
    )
    batch = load_batch(file_source(tmp_path, "orders.csv", COLUMNS, delimiter=";"))
    assert _orders(batch) == [
        ("A1", "Smith, J", datetime(2024, 1, 5, 10, 0), 10.5),
        ("A2", "c2", datetime(2024, 1, 6, 11, 30), 20.0),
    ]
    assert batch.orders.sort("order_id")["source_row"].to_list() == [
        "orders.csv:2",
        "orders.csv:3",
    ]


def test_a_tab_separated_file_with_another_extension(tmp_path):
    write_lines(tmp_path / "orders.tsv", *(r.replace(",", "\t") for r in (HEADER, *ROWS)))
    batch = load_batch(file_source(tmp_path, "orders.tsv", COLUMNS, delimiter="\t"))
    assert _orders(batch) == EXPECTED


def test_a_csv_without_header_names_its_columns_column_1_onwards(tmp_path):
    write_lines(tmp_path / "orders.csv", *ROWS)
    columns = {
        "order_id": "column_1",
        "customer_id": "column_2",
        "ordered_at": "column_3",
        "amount": "column_4",
    }
    config = file_source(tmp_path, "orders.csv", columns, has_header=False)
    assert _source_rows(config) == ["orders.csv:1", "orders.csv:2", "orders.csv:3"]
    assert _orders(load_batch(config)) == EXPECTED


def test_a_gzipped_csv_reads_like_the_plain_file(tmp_path):
    text = "".join(line + "\n" for line in (HEADER, *ROWS))
    (tmp_path / "orders.csv.gz").write_bytes(gzip.compress(text.encode()))
    config = file_source(tmp_path, "orders.csv.gz", COLUMNS)
    assert _source_rows(config) == ["orders.csv.gz:2", "orders.csv.gz:3", "orders.csv.gz:4"]
    assert _orders(load_batch(config)) == EXPECTED


def test_a_glob_reads_every_file_and_names_file_and_line(tmp_path):
    write_lines(tmp_path / "exports" / "orders-2024-01.csv", HEADER, ROWS[0], ROWS[1])
    write_lines(tmp_path / "exports" / "orders-2024-02.csv", HEADER, ROWS[2])
    text = "".join(line + "\n" for line in (HEADER, "A4,c3,2024-03-01,1"))
    (tmp_path / "exports" / "orders-2024-03.csv.gz").write_bytes(gzip.compress(text.encode()))
    write_lines(tmp_path / "exports" / "README.txt", "not an export")
    config = file_source(tmp_path, "exports/orders-*.csv*", COLUMNS)
    batch = load_batch(config)
    assert _orders(batch) == [*EXPECTED, ("A4", "c3", datetime(2024, 3, 1), 1.0)]
    assert dict(batch.orders.select("order_id", "source_row").iter_rows()) == {
        "A1": "orders-2024-01.csv:2",
        "A2": "orders-2024-01.csv:3",
        "A3": "orders-2024-02.csv:2",
        "A4": "orders-2024-03.csv.gz:2",
    }
    assert batch.rows_read == 4


def test_files_of_different_columns_keep_their_own_raw_records(tmp_path):
    write_lines(tmp_path / "a.csv", f"{HEADER},note", "A1,,2024-01-05,1,hello")
    pl.DataFrame(
        {"id": [2], "cust": [None], "placed": ["2024-01-06"], "total": [2.5]}
    ).write_parquet(tmp_path / "b.parquet")
    batch = load_batch(file_source(tmp_path, "*", COLUMNS))
    assert [json.loads(r) for r in batch.rejected.sort("source_row")["raw_record"]] == [
        {"id": "A1", "cust": None, "placed": "2024-01-05", "total": "1", "note": "hello"},
        {"id": 2, "cust": None, "placed": "2024-01-06", "total": 2.5},
    ]


def test_a_file_without_data_rows_reads_nothing(tmp_path):
    write_lines(tmp_path / "orders.csv", HEADER)
    batch = load_batch(file_source(tmp_path, "orders.csv", COLUMNS))
    assert batch.rows_read == 0
    assert batch.orders.is_empty() and batch.rejected.is_empty()


def test_parquet_with_typed_columns(tmp_path):
    pl.DataFrame(
        {
            "id": [101, 102, 103],
            "cust": ["c1", "c2", "c1"],
            "placed": [
                datetime(2024, 1, 5, 10),
                datetime(2024, 1, 6, 11, 30),
                datetime(2024, 2, 1),
            ],
            "total": [10.5, 20.0, 7.25],
            "ignored": [True, False, None],
        }
    ).write_parquet(tmp_path / "orders.parquet")
    config = file_source(tmp_path, "orders.parquet", COLUMNS)
    assert _source_rows(config) == ["orders.parquet:1", "orders.parquet:2", "orders.parquet:3"]
    assert _orders(load_batch(config)) == [
        ("101", "c1", datetime(2024, 1, 5, 10, 0), 10.5),
        ("102", "c2", datetime(2024, 1, 6, 11, 30), 20.0),
        ("103", "c1", datetime(2024, 2, 1), 7.25),
    ]


def test_parquet_with_aware_timestamps_and_dates(tmp_path):
    pl.DataFrame(
        {
            "id": ["A1", "A2"],
            "cust": ["c1", "c2"],
            "placed": [datetime(2024, 1, 1, 23, 30), datetime(2024, 1, 2, 1)],
            "total": [1.0, 2.0],
        }
    ).with_columns(pl.col("placed").dt.replace_time_zone("UTC")).write_parquet(
        tmp_path / "aware.parquet"
    )
    batch = load_batch(
        file_source(tmp_path, "aware.parquet", COLUMNS, reporting_timezone="America/New_York")
    )
    assert sorted(batch.orders.select("order_id", "ordered_at", "order_date").iter_rows()) == [
        ("A1", datetime(2024, 1, 1, 23, 30), date(2024, 1, 1)),
        ("A2", datetime(2024, 1, 2, 1, 0), date(2024, 1, 1)),  # 20:00 the evening before
    ]


@pytest.mark.parametrize("name", ["orders.ndjson", "orders.jsonl", "orders.json"])
def test_ndjson_by_extension(tmp_path, name):
    write_lines(
        tmp_path / name,
        '{"id": "A1", "cust": "c1", "placed": "2024-01-05 10:00:00", "total": 10.5}',
        '{"id": "A2", "cust": "c2", "placed": "2024-01-06 11:30:00", "total": 20}',
        '{"id": "A3", "cust": "c1", "placed": "2024-02-01", "total": 7.25, "extra": [1, 2]}',
    )
    config = file_source(tmp_path, name, COLUMNS)
    assert _source_rows(config) == [f"{name}:1", f"{name}:2", f"{name}:3"]
    assert _orders(load_batch(config)) == EXPECTED


def test_ndjson_by_format_key_and_gzipped(tmp_path):
    text = '{"id": "A1", "cust": "c1", "placed": "2024-01-05 10:00:00", "total": 10.5}\n'
    (tmp_path / "export.log.gz").write_bytes(gzip.compress(text.encode()))
    config = file_source(tmp_path, "export.log.gz", COLUMNS, format="ndjson")
    assert _orders(load_batch(config)) == [EXPECTED[0]]


def test_ndjson_line_numbers_survive_a_blank_line(tmp_path):
    write_lines(
        tmp_path / "orders.ndjson",
        '{"id": "A1", "cust": "c1", "placed": "2024-01-05", "total": 1}',
        "",
        '{"id": "A2", "cust": "c1", "placed": "2024-01-05", "total": 1}',
    )
    assert _source_rows(file_source(tmp_path, "orders.ndjson", COLUMNS)) == [
        "orders.ndjson:1",
        "orders.ndjson:3",
    ]


def test_csv_line_numbers_survive_a_blank_line(tmp_path):
    write_lines(tmp_path / "orders.csv", HEADER, ROWS[0], "", ROWS[1], "")
    batch = load_batch(file_source(tmp_path, "orders.csv", COLUMNS))
    assert dict(batch.orders.select("order_id", "source_row").iter_rows()) == {
        "A1": "orders.csv:2",
        "A2": "orders.csv:4",
    }
    assert batch.rows_read == 2


def test_whitespace_line_numbers_survive_blank_lines(tmp_path):
    write_lines(
        tmp_path / "w.txt", " c1 20240105 1 5.00", "", " c2 20240106 1 6.00", "", newline="\r\n"
    )
    batch = load_batch(headerless_text_source(tmp_path, "w.txt"))
    assert sorted(batch.orders["source_row"]) == ["w.txt:1", "w.txt:3"]
    assert batch.rejected.is_empty()
    assert batch.rows_read == 2


# --- whitespace-separated files (CDNOW) -----------------------------------------------------

CDNOW_COLUMNS = {"customer_id": "customer_id", "ordered_at": "date", "amount": "dollar_value"}


def test_the_whitespace_format_reads_the_cdnow_master_file_with_header(tmp_path):
    shutil.copy(FIXTURES / "cdnow_master_head.txt", tmp_path / "CDNOW_master.txt")
    config = file_source(
        tmp_path,
        "CDNOW_master.txt",
        CDNOW_COLUMNS,
        delimiter="whitespace",
        timestamp_format="%Y%m%d",
        generate_order_id=True,
    )
    batch = load_batch(config)
    # A plain parse of the same file, independent of the extractor.
    lines = (FIXTURES / "cdnow_master_head.txt").read_text().splitlines()[1:]
    expected = [
        (
            f"CDNOW_master.txt:{n}",
            fields[0],
            datetime.strptime(fields[1], "%Y%m%d"),
            float(fields[3]),
        )
        for n, fields in enumerate((line.split() for line in lines), start=2)
    ]
    got = sorted(batch.orders.select("order_id", "customer_id", "ordered_at", "amount").iter_rows())
    assert got == expected
    assert batch.rejected.is_empty()
    assert batch.rows_read == len(lines) == 6
    # Customer 00002 bought twice on one day: two orders, not one deduplicated.
    assert batch.orders.filter(pl.col("customer_id") == "00002").height == 2
    assert batch.rows_deduplicated == 0


def test_the_whitespace_format_without_header(tmp_path):
    shutil.copy(FIXTURES / "cdnow_sample_head.txt", tmp_path / "CDNOW_sample.txt")
    config = headerless_text_source(
        tmp_path,
        "CDNOW_sample.txt",
        {"customer_id": "column_1", "ordered_at": "column_3", "amount": "column_5"},
    )
    rows = scan_source_rows(config).collect()
    assert rows["source_row"].to_list() == [f"CDNOW_sample.txt:{n}" for n in (1, 2, 3)]
    assert json.loads(encode_raw_records(rows)["raw_record"][0]) == {
        "column_1": "00004",
        "column_2": "0001",
        "column_3": "19970101",
        "column_4": "2",
        "column_5": "29.33",
    }
    batch = load_batch(config)
    assert sorted(batch.orders.select("ordered_at", "amount").iter_rows()) == [
        (datetime(1997, 1, 1), 29.33),
        (datetime(1997, 1, 18), 29.73),
        (datetime(1997, 8, 2), 14.96),
    ]


def test_the_whitespace_format_reads_tabs_runs_of_spaces_and_short_rows(tmp_path):
    write_lines(
        tmp_path / "w.txt", "cust\tdate   total", "  c1 \t 20240105    3.5  ", "c2 20240106"
    )
    batch = load_batch(
        file_source(
            tmp_path,
            "w.txt",
            {"customer_id": "cust", "ordered_at": "date", "amount": "total"},
            delimiter="whitespace",
            generate_order_id=True,
        )
    )
    assert batch.orders.select("customer_id", "amount").rows() == [("c1", 3.5)]
    (rejected,) = batch.rejected.to_dicts()
    assert (rejected["source_row"], rejected["reason_code"]) == ("w.txt:3", "unparseable_amount")


def test_same_named_files_in_different_folders_stay_apart(tmp_path):
    write_lines(tmp_path / "exports" / "2024-01" / "orders.txt", " 00001 20240105 1 10.00")
    write_lines(tmp_path / "exports" / "2024-02" / "orders.txt", " 00002 20240203 1 20.00")
    batch = load_batch(headerless_text_source(tmp_path, "exports/*/orders.txt"))
    assert batch.rejected.is_empty()
    assert sorted(batch.orders["customer_id"]) == ["00001", "00002"]
    assert len(set(batch.orders["source_row"])) == 2


# --- timestamp formats --------------------------------------------------------------------


def test_a_custom_timestamp_format_reads_day_first_dates(tmp_path):
    write_lines(
        tmp_path / "orders.csv",
        HEADER,
        "A1,c1,05/03/2024 14:30,10",
        "A2,c1,31/12/2023 23:59,5",
        "A3,c1,2024-03-05 14:30,5",  # ISO, which this format does not read
    )
    batch = load_batch(
        file_source(tmp_path, "orders.csv", COLUMNS, timestamp_format="%d/%m/%Y %H:%M")
    )
    assert sorted(batch.orders.select("order_id", "ordered_at").iter_rows()) == [
        ("A1", datetime(2024, 3, 5, 14, 30)),  # 5 March, not 3 May
        ("A2", datetime(2023, 12, 31, 23, 59)),
    ]
    (rejected,) = batch.rejected.to_dicts()
    assert rejected["reason_code"] == "unparseable_ordered_at"
    assert "2024-03-05 14:30" in rejected["reason"]
    assert "source.timestamp_format" in rejected["reason"]
    assert rejected["source_row"] == "orders.csv:4"


def test_default_formats_read_iso_variants_and_compact_dates(tmp_path):
    write_lines(
        tmp_path / "orders.csv",
        HEADER,
        "A1,c1,2024-01-05T10:00:00,1",
        "A2,c1,2024-01-05 10:00:00.250,1",
        "A3,c1,2024-01-05 10:00,1",
        "A4,c1,20240105,1",
        "A5,c1,2024-01-05T10:00:00Z,1",
        "A6,c1,2024-01-05T12:00:00+02:00,1",
    )
    batch = load_batch(file_source(tmp_path, "orders.csv", COLUMNS))
    assert dict(batch.orders.select("order_id", "ordered_at").iter_rows()) == {
        "A1": datetime(2024, 1, 5, 10),
        "A2": datetime(2024, 1, 5, 10, 0, 0, 250000),
        "A3": datetime(2024, 1, 5, 10),
        "A4": datetime(2024, 1, 5),
        "A5": datetime(2024, 1, 5, 10),
        "A6": datetime(2024, 1, 5, 10),
    }


# --- a source that lacks a mapped column ----------------------------------------------------


def test_a_missing_mapped_column_names_column_mapping_key_and_file(tmp_path):
    write_lines(tmp_path / "orders.csv", "id,customer,placed,total", "A1,c1,2024-01-05,10")
    config = file_source(tmp_path, "orders.csv", COLUMNS)
    with pytest.raises(SourceSchemaError) as excinfo:
        scan_source_rows(config)
    message = str(excinfo.value)
    assert "source.columns.customer_id names 'cust'" in message
    assert str(tmp_path / "orders.csv") in message
    assert "'customer'" in message  # the columns the file does have
    assert isinstance(excinfo.value, ConfigError)


def test_a_missing_column_in_one_file_of_a_glob_names_that_file(tmp_path):
    write_lines(tmp_path / "a.csv", HEADER, ROWS[0])
    write_lines(tmp_path / "b.csv", "id,cust,placed,amount_total", "A2,c1,2024-01-05,10")
    with pytest.raises(SourceSchemaError) as excinfo:
        scan_source_rows(file_source(tmp_path, "*.csv", COLUMNS))
    message = str(excinfo.value)
    assert str(tmp_path / "b.csv") in message
    assert "source.columns.amount names 'total'" in message
    assert "a.csv" not in message


@pytest.mark.parametrize("fmt", ["parquet", "ndjson"])
def test_a_missing_column_in_parquet_or_ndjson(tmp_path, fmt):
    frame = pl.DataFrame({"id": ["A1"], "cust": ["c1"], "placed": ["2024-01-05"], "value": [1.0]})
    path = tmp_path / f"orders.{fmt}"
    frame.write_parquet(path) if fmt == "parquet" else frame.write_ndjson(path)
    with pytest.raises(SourceSchemaError, match=r"source\.columns\.amount names 'total'"):
        scan_source_rows(file_source(tmp_path, path.name, COLUMNS))


def test_a_missing_column_fails_the_load_before_any_warehouse_write(tmp_path, monkeypatch):
    """The real Dagster asset: the load fails naming the column, no order is written, and
    the failure is recorded in load_audit."""
    import dagster as dg
    import yaml

    from retention_pipeline.defs.extraction.assets import RawLoadConfig, raw_orders
    from retention_pipeline.lib import settings

    write_lines(tmp_path / "orders.csv", "id,customer,placed,total", "A1,c1,2024-01-05,10")
    config = {
        "source": {"path": "orders.csv", "columns": COLUMNS},
        "warehouse": {"path": "warehouse.duckdb"},
        "schedule": {"partitions_start": "2024-01-01"},
    }
    (tmp_path / "retention.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(settings.CONFIG_ENV_VAR, str(tmp_path / "retention.yaml"))
    monkeypatch.delenv(settings.DUCKDB_PATH_ENV, raising=False)  # restored afterwards
    settings.active_config.cache_clear()
    try:
        context = dg.build_asset_context(partition_key="2024-06-15")
        with pytest.raises(SourceSchemaError, match="source.columns.customer_id names 'cust'"):
            list(raw_orders(context, RawLoadConfig(full_history=True)))
    finally:
        settings.active_config.cache_clear()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from raw.orders").fetchone() == (0,)
        assert con.execute("select count(*) from raw.rejected_orders").fetchone() == (0,)
        ((status, error, rows_read),) = con.execute(
            "select status, error, rows_read from raw.load_audit"
        ).fetchall()
    assert status == "failed"
    assert "source.columns.customer_id names 'cust'" in error
    assert rows_read is None


# --- line-level exports ---------------------------------------------------------------------

LINE_HEADER = "InvoiceNo,CustomerID,InvoiceDate,Quantity,UnitPrice,LineTotal"
LINES = [
    "536365,17850,2024-01-01 08:26,6,2.55,15.30",
    "536366,17850,2024-01-01 08:28,6,1.85,11.10",
    "536365,17850,2024-01-01 08:20,8,3.39,27.12",  # earlier than the first line
    "536367,13047,2024-01-02 09:00,2,10.00,20.00",
    "536365,17850,2024-01-01 08:30,2,0.50,1.00",
]


def _line_config(tmp_path, **amount_columns):
    return file_source(
        tmp_path,
        "lines.csv",
        {
            "order_id": "InvoiceNo",
            "customer_id": "CustomerID",
            "ordered_at": "InvoiceDate",
            **amount_columns,
        },
        line_items=True,
    )


def _expected_line_orders(amount) -> dict:
    """Orders from a plain parse of LINES: amounts add up, the earliest line dates it."""
    orders: dict[str, dict] = {}
    for line in LINES:
        invoice, customer, at, quantity, price, total = line.split(",")
        at = datetime.strptime(at, "%Y-%m-%d %H:%M")
        order = orders.setdefault(invoice, {"amount": 0.0, "ordered_at": at, "lines": 0})
        order["amount"] += amount(float(quantity), float(price), float(total))
        order["ordered_at"] = min(order["ordered_at"], at)
        order["lines"] += 1
    return orders


@pytest.mark.parametrize(
    ("amount_columns", "amount"),
    [
        ({"quantity": "Quantity", "unit_price": "UnitPrice"}, lambda q, p, t: q * p),
        ({"line_amount": "LineTotal"}, lambda q, p, t: t),
    ],
    ids=["quantity_x_unit_price", "line_amount"],
)
def test_line_items_aggregate_to_one_order_each(tmp_path, amount_columns, amount):
    write_lines(tmp_path / "lines.csv", LINE_HEADER, *LINES)
    batch = load_batch(_line_config(tmp_path, **amount_columns))
    expected = _expected_line_orders(amount)
    assert batch.orders.height == len(expected) == 3
    for order in batch.orders.iter_rows(named=True):
        want = expected[order["order_id"]]
        assert order["amount"] == pytest.approx(want["amount"], rel=1e-12)
        assert order["ordered_at"] == want["ordered_at"]
        assert order["line_count"] == want["lines"]
    big = batch.orders.filter(pl.col("order_id") == "536365").row(0, named=True)
    assert big["amount"] == pytest.approx(15.30 + 27.12 + 1.00)
    assert big["ordered_at"] == datetime(2024, 1, 1, 8, 20)
    assert big["source_row"] == "lines.csv:2"  # the order's first line in the file
    assert batch.rows_read == len(LINES)
    assert batch.orders["line_count"].sum() == len(LINES)


def test_line_items_across_files_of_a_glob_make_one_order(tmp_path):
    write_lines(tmp_path / "lines-1.csv", LINE_HEADER, LINES[0], LINES[1])
    write_lines(tmp_path / "lines-2.csv", LINE_HEADER, LINES[2])
    config = file_source(
        tmp_path,
        "lines-*.csv",
        {
            "order_id": "InvoiceNo",
            "customer_id": "CustomerID",
            "ordered_at": "InvoiceDate",
            "line_amount": "LineTotal",
        },
        line_items=True,
    )
    batch = load_batch(config)
    order = batch.orders.filter(pl.col("order_id") == "536365").row(0, named=True)
    assert order["amount"] == pytest.approx(15.30 + 27.12)
    assert order["ordered_at"] == datetime(2024, 1, 1, 8, 20)
    assert order["line_count"] == 2


def test_a_line_level_order_whose_total_fails_quarantines_every_line(tmp_path):
    write_lines(
        tmp_path / "lines.csv",
        LINE_HEADER,
        "R1,c1,2024-01-01 08:00,1,5.00,5.00",
        "R1,c1,2024-01-01 08:01,-2,5.00,-10.00",  # a return larger than the purchase
        "OK,c2,2024-01-01 09:00,1,3.00,3.00",
    )
    batch = load_batch(_line_config(tmp_path, quantity="Quantity", unit_price="UnitPrice"))
    assert batch.orders["order_id"].to_list() == ["OK"]
    rejected = batch.rejected.sort("source_row")
    assert rejected["source_row"].to_list() == ["lines.csv:2", "lines.csv:3"]
    assert set(rejected["reason_code"]) == {"negative_amount"}
    assert batch.rows_read == 3 == batch.orders["line_count"].sum() + batch.rejected.height


def test_a_line_level_order_is_placed_whole_by_its_earliest_line(tmp_path):
    write_lines(
        tmp_path / "lines.csv",
        LINE_HEADER,
        "X1,c1,2024-01-01 23:59,1,10.00,10.00",
        "X1,c1,2024-01-02 00:01,2,5.00,10.00",
    )
    config = _line_config(tmp_path, quantity="Quantity", unit_price="UnitPrice")
    second_day = load_batch(config, LoadWindow(first=date(2024, 1, 2), last=date(2024, 1, 2)))
    first_day = load_batch(config, LoadWindow(first=date(2024, 1, 1), last=date(2024, 1, 1)))
    # The order belongs to 1 January with both lines; the 2 January load does not touch it.
    assert second_day.orders.is_empty()
    (order,) = first_day.orders.to_dicts()
    assert (order["order_date"], order["amount"], order["line_count"]) == (date(2024, 1, 1), 20, 2)
