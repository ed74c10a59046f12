"""Bad input: each reason code, the row accounting, the messages, and loads that fail
leaving the warehouse as it was. Real files, real DuckDB, no mocks."""

import hashlib
import hmac
from datetime import UTC, date, datetime

import duckdb
import polars as pl
import pytest
import yaml

from retention_pipeline.lib.config import ConfigError, load_config
from retention_pipeline.lib.extract import SourceSchemaError, scan_source_rows
from retention_pipeline.lib.quarantine import LoadWindow, validate
from retention_pipeline.lib.warehouse import connect, write_load

NOW = datetime(2025, 1, 1, tzinfo=UTC)
EVERYTHING = LoadWindow(first=None, last=date(2024, 12, 31))
HEADER = "id,cust,placed,total,state,refund,cur,changed,mail"
COLUMNS = {
    "order_id": "id", "customer_id": "cust", "ordered_at": "placed", "amount": "total",
    "status": "state", "refunded_amount": "refund", "currency": "cur",
    "updated_at": "changed", "customer_email": "mail",
}  # fmt: skip

# One bad line per reason code; the good line o1 comes first.
LINES = {
    None: "o1,A,2024-01-05 10:00:00,10.50,completed,0,USD,,a@example.com",
    "missing_order_id": ",A,2024-01-05 10:00:00,5,completed,0,USD,,",
    "missing_customer_id": "o2,,2024-01-05 10:00:00,5,completed,0,USD,,",
    "unparseable_ordered_at": "o3,B,yesterday,5,completed,0,USD,,",
    "unparseable_updated_at": "o4,B,2024-01-05 10:00:00,5,completed,0,USD,soon,",
    "unparseable_amount": "o5,B,2024-01-05 10:00:00,five,completed,0,USD,,",
    "negative_amount": "o6,B,2024-01-05 10:00:00,-5,completed,0,USD,,",
    "refund_exceeds_amount": "o7,B,2024-01-05 10:00:00,5,refunded,6,USD,,",
    "unknown_currency": "o8,B,2024-01-05 10:00:00,5,completed,0,XXX,,",
    "future_ordered_at": "o9,B,2099-01-05 10:00:00,5,completed,0,USD,,",
}
MESSAGE_NAMES = {
    "missing_order_id": "'id'",
    "missing_customer_id": "'cust'",
    "unparseable_ordered_at": "'yesterday'",
    "unparseable_updated_at": "'soon'",
    "unparseable_amount": "five",
    "negative_amount": "-5",
    "refund_exceeds_amount": "6",
    "unknown_currency": "XXX",
    "future_ordered_at": "future_tolerance_hours",
}


def _config(tmp_path, lines, **source):
    (tmp_path / "orders.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    config = {
        "source": {"path": "orders.csv", "columns": COLUMNS, **source},
        "warehouse": {"path": "warehouse.duckdb"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return load_config(tmp_path / "config.yaml")


def _load(config, monkeypatch):
    monkeypatch.setenv("RETENTION_PII_KEY", "test-key")
    batch = validate(scan_source_rows(config), config, EVERYTHING, NOW)
    with connect(config.warehouse_path) as con:
        return write_load(con, "orders", EVERYTHING, [batch], NOW, hash_emails=True)


def _table(config, sql):
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        return pl.from_arrow(con.sql(sql).to_arrow_table())


def test_each_reason_code_quarantines_its_row_with_a_clear_reason(tmp_path, monkeypatch):
    config = _config(tmp_path, list(LINES.values()))
    result = _load(config, monkeypatch)
    rejected = _table(config, "select * from raw.rejected_orders")
    by_code = {row["reason_code"]: row for row in rejected.to_dicts()}
    assert set(by_code) == {code for code in LINES if code}
    for line_number, code in enumerate(LINES, start=2):
        if code is None:
            continue
        assert by_code[code]["source_row"] == f"orders.csv:{line_number}"
        assert MESSAGE_NAMES[code] in by_code[code]["reason"], by_code[code]["reason"]
    assert _table(config, "select order_id from raw.orders")["order_id"].to_list() == ["o1"]
    assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (10, 1, 9)
    assert result.balanced


def test_duplicates_newest_version_wins_and_conflicts_are_quarantined(tmp_path, monkeypatch):
    config = _config(
        tmp_path,
        [
            "o1,A,2024-01-05 10:00:00,10,completed,0,USD,2024-01-05 10:00:00,",
            "o1,A,2024-01-05 10:00:00,10,completed,0,USD,2024-01-05 10:00:00,",  # exact copy
            "o1,A,2024-01-05 10:00:00,10,refunded,10,USD,2024-01-09 10:00:00,",  # newer
            "o2,B,2024-01-06 10:00:00,20,completed,0,USD,2024-01-06 10:00:00,",
            "o2,B,2024-01-06 10:00:00,25,completed,0,USD,2024-01-06 10:00:00,",  # conflict
        ],
    )
    result = _load(config, monkeypatch)
    orders = _table(config, "select order_id, status, amount from raw.orders order by 1")
    assert orders.rows() == [("o1", "refunded", 10.0), ("o2", "completed", 25.0)]
    rejected = _table(config, "select source_row, reason_code from raw.rejected_orders")
    assert rejected.rows() == [("orders.csv:5", "duplicate_conflict")]
    assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (5, 2, 1)
    assert result.rows_deduplicated == 2 and result.balanced


def test_a_missing_column_fails_before_anything_is_written(tmp_path):
    config = _config(tmp_path, [LINES[None]])
    (tmp_path / "orders.csv").write_text("id,customer,placed,total\no1,A,2024-01-05,3\n")
    with pytest.raises(SourceSchemaError) as error:
        scan_source_rows(config)
    message = str(error.value)
    assert "orders.csv" in message and "source.columns.customer_id names 'cust'" in message
    assert "fix the mapping under source.columns" in message
    assert not config.warehouse_path.exists()


def test_a_crash_mid_load_leaves_the_previous_state(tmp_path, monkeypatch):
    config = _config(tmp_path, [LINES[None]])
    _load(config, monkeypatch)
    before = _table(config, "select * from raw.orders")
    audits_before = _table(config, "select * from raw.load_audit").height
    (tmp_path / "orders.csv").write_text(
        "\n".join([HEADER, "o7,Z,2024-02-01 10:00:00,99,completed,0,USD,,"]) + "\n"
    )
    real_execute = duckdb.DuckDBPyConnection.execute

    class CrashingConnection:
        """A real connection that dies right after the rows are inserted."""

        def __init__(self, con):
            self.con = con

        def __getattr__(self, name):
            return getattr(self.con, name)

        def execute(self, sql, *args):
            if "insert into raw.rejected_orders" in sql:
                raise RuntimeError("simulated crash")
            return real_execute(self.con, sql, *args)

    batch = validate(scan_source_rows(config), config, EVERYTHING, NOW)
    with connect(config.warehouse_path) as con, pytest.raises(RuntimeError):
        write_load(CrashingConnection(con), "orders", EVERYTHING, [batch], NOW, hash_emails=True)
    assert _table(config, "select * from raw.orders").equals(before)
    assert _table(config, "select * from raw.load_audit").height == audits_before


def test_running_a_load_twice_leaves_the_same_rows(tmp_path, monkeypatch):
    config = _config(tmp_path, list(LINES.values()))
    _load(config, monkeypatch)
    columns = "order_id, customer_id, ordered_at, amount, source_row"
    first = _table(config, f"select {columns} from raw.orders order by order_id")
    _load(config, monkeypatch)
    assert _table(config, f"select {columns} from raw.orders order by order_id").equals(first)
    assert _table(config, "select count(*) as n from raw.rejected_orders").item() == 9


def test_emails_are_stored_only_as_their_hmac(tmp_path, monkeypatch):
    config = _config(tmp_path, list(LINES.values()))
    _load(config, monkeypatch)
    stored = _table(config, "select customer_email_hash from raw.orders").item()
    expected = hmac.new(b"test-key", b"a@example.com", hashlib.sha256).hexdigest()
    assert stored == expected
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        for schema, table in con.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall():
            text = str(con.execute(f'select * from "{schema}"."{table}"').fetchall())
            assert "a@example.com" not in text, f"{schema}.{table} holds a clear email"


def test_an_email_mapping_without_a_key_is_refused(tmp_path, monkeypatch):
    config = _config(tmp_path, [LINES[None]])
    monkeypatch.delenv("RETENTION_PII_KEY", raising=False)
    batch = validate(scan_source_rows(config), config, EVERYTHING, NOW)
    with (
        connect(config.warehouse_path) as con,
        pytest.raises(ConfigError, match="RETENTION_PII_KEY"),
    ):
        write_load(con, "orders", EVERYTHING, [batch], NOW, hash_emails=True)


def test_line_level_exports_add_up_to_orders(tmp_path, monkeypatch):
    (tmp_path / "lines.csv").write_text(
        "InvoiceNo,CustomerID,InvoiceDate,Quantity,UnitPrice\n"
        "I1,A,2024-01-05 10:05:00,2,1.25\n"
        "I1,A,2024-01-05 10:00:00,1,7.50\n"
        "I2,B,2024-01-06 09:00:00,-3,2.00\n"
        "I3,,2024-01-06 09:00:00,1,2.00\n"
    )
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "source": {
                    "path": "lines.csv",
                    "line_items": True,
                    "columns": {
                        "order_id": "InvoiceNo",
                        "customer_id": "CustomerID",
                        "ordered_at": "InvoiceDate",
                        "quantity": "Quantity",
                        "unit_price": "UnitPrice",
                    },  # fmt: skip
                },
                "warehouse": {"path": "warehouse.duckdb"},
            }
        )
    )
    config = load_config(tmp_path / "config.yaml")
    batch = validate(scan_source_rows(config), config, EVERYTHING, NOW)
    with connect(config.warehouse_path) as con:
        result = write_load(con, "orders", EVERYTHING, [batch], NOW, hash_emails=False)
    orders = _table(config, "select order_id, amount, ordered_at, line_count from raw.orders")
    assert orders.rows() == [("I1", 10.0, datetime(2024, 1, 5, 10, 0), 2)]
    reasons = _table(config, "select source_row, reason_code from raw.rejected_orders order by 1")
    assert reasons.rows() == [
        ("lines.csv:4", "negative_amount"),
        ("lines.csv:5", "missing_customer_id"),
    ]
    assert (result.rows_read, result.rows_loaded, result.rows_rejected) == (4, 2, 2)


def test_whitespace_separated_files_without_order_ids(tmp_path):
    (tmp_path / "cdnow.txt").write_text(
        " customer_id  date number_of_cds  dollar_value\n"
        " 00001 19970101  1   11.77\n"
        " 00002 19970112  5   77.00\n"
    )
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "source": {
                    "path": "cdnow.txt",
                    "delimiter": "whitespace",
                    "generate_order_id": True,
                    "timestamp_format": "%Y%m%d",
                    "columns": {
                        "customer_id": "customer_id",
                        "ordered_at": "date",
                        "amount": "dollar_value",
                    },
                },  # fmt: skip
            }
        )
    )
    config = load_config(tmp_path / "config.yaml")
    batch = validate(scan_source_rows(config), config, EVERYTHING, NOW)
    assert batch.orders.select("order_id", "customer_id", "order_date", "amount").rows() == [
        ("cdnow.txt:2", "00001", date(1997, 1, 1), 11.77),
        ("cdnow.txt:3", "00002", date(1997, 1, 12), 77.0),
    ]


def test_naive_times_are_read_in_the_source_timezone(tmp_path):
    config = _config(
        tmp_path,
        [
            "o1,A,2024-03-10 02:30:00,10,completed,0,USD,,",  # skipped by the DST change
            "o2,A,2024-03-10 23:30:00,10,completed,0,USD,,",  # 04:30 UTC the next day
        ],
        timezone="America/New_York",
    )
    batch = validate(scan_source_rows(config), config, EVERYTHING, NOW)
    assert batch.orders.sort("order_id").select("ordered_at", "order_date").rows() == [
        (datetime(2024, 3, 10, 7, 30), date(2024, 3, 10)),
        (datetime(2024, 3, 11, 3, 30), date(2024, 3, 11)),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "blue"}, "colour: unknown key"),
        ({"source": {"path": "orders.csv", "columns": {"order_id": "id"}}},
         "no mapping for required field(s) ['customer_id', 'ordered_at', 'amount']"),
        ({"source": {"path": "nothing-*.csv", "columns": COLUMNS}}, "matches no file"),
        ({"reporting_timezone": "Mars/Olympus"}, "reporting_timezone: 'Mars/Olympus'"),
        ({"schedule": {"time": "25:00"}}, "schedule.time"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key_and_the_fix(tmp_path, change, message):
    (tmp_path / "orders.csv").write_text(HEADER + "\n")
    config = {"source": {"path": "orders.csv", "columns": COLUMNS}, **change}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "config.yaml").source_files()
    assert message in str(error.value)


def test_rejected_rows_keep_no_clear_email(tmp_path, monkeypatch):
    config = _config(tmp_path, ["o1,,2024-01-05 10:00:00,10,completed,0,USD,,b@example.com"])
    _load(config, monkeypatch)
    raw_record = _table(config, "select raw_record from raw.rejected_orders").item()
    assert "b@example.com" not in raw_record and "<redacted>" in raw_record


def test_an_unmapped_email_column_is_redacted_in_rejected_rows(tmp_path, monkeypatch):
    unmapped = {k: v for k, v in COLUMNS.items() if k != "customer_email"}
    config = _config(
        tmp_path, ["o1,,2024-01-05 10:00:00,10,completed,0,USD,,b@example.com"], columns=unmapped
    )
    _load(config, monkeypatch)
    raw_record = _table(config, "select raw_record from raw.rejected_orders").item()
    assert "b@example.com" not in raw_record and '"mail":"<redacted>"' in raw_record
