"""Reading the marketing spend: column mapping, formats, the quarantine of bad rows and the
raw tables it replaces."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import polars as pl
import pytest
from conftest import write_lines

from retention_pipeline.lib.config import parse_config
from retention_pipeline.lib.marketing import (
    SpendSchemaError,
    read_spend,
    write_spend,
)

ORDERS = {"order_id": "o", "customer_id": "c", "ordered_at": "t", "amount": "a"}


def _config(directory, **spend):
    raw = {"source": {"type": "file", "path": "orders.csv", "columns": ORDERS}}
    if spend:
        raw["marketing_spend"] = spend
    return parse_config(raw, directory)


def test_good_rows_are_typed_and_keep_their_line(tmp_path):
    write_lines(
        tmp_path / "spend.csv",
        "date,channel,spend",
        "2024-01-05,Paid_Search,100.50",
        "",
        "2024-01-06, email ,20",
        "2024-01-07 00:00:00,social,0",
    )
    batch = read_spend(_config(tmp_path, path="spend.csv"))
    assert batch.rejected.is_empty()
    assert batch.spend.to_dicts() == [
        {"source_row": "spend.csv:2", "spend_date": date(2024, 1, 5), "channel": "Paid_Search",
         "spend": 100.5},
        {"source_row": "spend.csv:4", "spend_date": date(2024, 1, 6), "channel": "email",
         "spend": 20.0},
        {"source_row": "spend.csv:5", "spend_date": date(2024, 1, 7), "channel": "social",
         "spend": 0.0},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "reason_code"),
    [
        (",email,5", "missing_spend_date"),
        ("2024-13-01,email,5", "unparseable_spend_date"),
        ("05/01/2024,email,5", "unparseable_spend_date"),
        ("2024-01-07,,5", "missing_channel"),
        ("2024-01-07,  ,5", "missing_channel"),
        ("2024-01-07,social,abc", "unparseable_spend"),
        ("2024-01-07,social,", "unparseable_spend"),
        ("2024-01-07,social,nan", "unparseable_spend"),
        ("2024-01-07,social,inf", "unparseable_spend"),
        ("2024-01-07,social,-3", "negative_spend"),
        (",,-3", "missing_spend_date"),  # the first failing check names the row
    ],
)
def test_a_bad_row_is_quarantined_with_its_reason(tmp_path, row, reason_code):
    write_lines(tmp_path / "spend.csv", "date,channel,spend", "2024-01-05,email,1", row)
    batch = read_spend(_config(tmp_path, path="spend.csv"))
    assert batch.spend["source_row"].to_list() == ["spend.csv:2"]
    (rejected,) = batch.rejected.to_dicts()
    assert rejected["source_row"] == "spend.csv:3"
    assert rejected["reason_code"] == reason_code
    assert rejected["reason"]
    raw = json.loads(rejected["raw_record"])
    assert list(raw) == ["date", "channel", "spend"]
    assert batch.rows_read == 2


def test_columns_are_mapped_and_a_date_format_is_used(tmp_path):
    write_lines(tmp_path / "ads.csv", "Day;Source;Cost;Clicks", "05/01/2024;google;12.5;7")
    config = _config(
        tmp_path,
        path="ads.csv",
        delimiter=";",
        date_format="%d/%m/%Y",
        columns={"spend_date": "Day", "channel": "Source", "spend": "Cost"},
    )
    batch = read_spend(config)
    assert batch.spend.select("spend_date", "channel", "spend").row(0) == (
        date(2024, 1, 5),
        "google",
        12.5,
    )


def test_a_missing_column_names_the_column_and_the_mapping(tmp_path):
    write_lines(tmp_path / "spend.csv", "day,channel,spend", "2024-01-05,email,1")
    with pytest.raises(SpendSchemaError) as excinfo:
        read_spend(_config(tmp_path, path="spend.csv"))
    message = str(excinfo.value)
    assert "'date' (for spend_date)" in message
    assert "marketing_spend.columns" in message
    assert "['day', 'channel', 'spend']" in message


def test_parquet_with_typed_dates_and_numbers(tmp_path):
    pl.DataFrame(
        {
            "date": [date(2024, 1, 5), date(2024, 1, 6)],
            "channel": ["email", "social"],
            "spend": [12.5, -1.0],
        }
    ).write_parquet(tmp_path / "spend.parquet")
    batch = read_spend(_config(tmp_path, path="spend.parquet"))
    assert batch.spend.select("spend_date", "spend").rows() == [(date(2024, 1, 5), 12.5)]
    assert batch.rejected["reason_code"].to_list() == ["negative_spend"]


def test_several_files_are_read_together(tmp_path):
    write_lines(tmp_path / "spend" / "a.csv", "date,channel,spend", "2024-01-05,email,1")
    write_lines(tmp_path / "spend" / "b.csv", "date,channel,spend", "2024-02-05,email,2")
    batch = read_spend(_config(tmp_path, path="spend/*.csv"))
    assert sorted(batch.spend["source_row"]) == ["a.csv:2", "b.csv:2"]


def test_without_marketing_spend_the_batch_is_empty(tmp_path):
    batch = read_spend(_config(tmp_path))
    assert batch.spend.is_empty() and batch.rejected.is_empty()


def test_each_load_replaces_the_raw_tables_and_no_spend_leaves_them_empty(tmp_path):
    write_lines(tmp_path / "spend.csv", "date,channel,spend", "2024-01-05,email,1", "x,email,2")
    batch = read_spend(_config(tmp_path, path="spend.csv"))
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        write_spend(con, batch)
        write_spend(con, batch)
        counts = (
            "select (select count(*) from raw.marketing_spend), "
            "(select count(*) from raw.rejected_marketing_spend)"
        )
        assert con.execute(counts).fetchone() == (1, 1)
        write_spend(con, read_spend(_config(tmp_path)))
        assert con.execute(counts).fetchone() == (0, 0)
