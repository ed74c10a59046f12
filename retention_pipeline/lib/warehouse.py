"""The raw layer of the DuckDB warehouse: landed orders, quarantined rows, load audits and
the FX rates in force.

dbt reads these tables as sources. A load replaces its window and every order it read
in one transaction, so a crash leaves the previous state and running a load twice equals
running it once.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

from retention_pipeline.lib.config import ConfigError
from retention_pipeline.lib.fx import FX_COLUMNS
from retention_pipeline.lib.quarantine import LoadBatch, LoadWindow

RAW_SCHEMA = "raw"
PII_KEY_ENV = "RETENTION_PII_KEY"

DDL = f"""
create schema if not exists {RAW_SCHEMA};
create table if not exists {RAW_SCHEMA}.orders (
    load_id varchar not null,
    load_sequence bigint not null,
    source varchar not null,
    source_row varchar not null,
    order_id varchar not null,
    customer_id varchar not null,
    ordered_at timestamp not null,
    order_date date not null,
    updated_at timestamp,
    amount double not null,
    refunded_amount double,
    currency varchar not null,
    status varchar,
    channel varchar,
    customer_email_hash varchar,
    line_count integer not null,
    loaded_at timestamp not null,
    fx_rate double,
    refund_rows integer
);
-- Warehouses made before FX rates and refund rows existed get the columns.
alter table {RAW_SCHEMA}.orders add column if not exists fx_rate double;
alter table {RAW_SCHEMA}.orders add column if not exists refund_rows integer;
create table if not exists {RAW_SCHEMA}.fx_rates (
    currency varchar not null,
    rate_date date not null,
    rate double not null,
    source_row varchar not null,
    load_id varchar not null,
    loaded_at timestamp not null
);
create table if not exists {RAW_SCHEMA}.rejected_orders (
    load_id varchar not null,
    source varchar not null,
    source_row varchar not null,
    raw_record varchar,
    reason_code varchar not null,
    reason varchar not null,
    order_id varchar,
    order_date date,
    rejected_at timestamp not null
);
-- Per database source: updated_at (naive UTC) up to which it has been read.
create table if not exists {RAW_SCHEMA}.source_watermarks (
    source varchar not null,
    watermark timestamp not null,
    load_id varchar not null,
    updated_at timestamp not null
);
create table if not exists {RAW_SCHEMA}.load_audit (
    load_id varchar not null,
    load_sequence bigint not null,
    source varchar not null,
    window_first date,
    window_last date not null,
    started_at timestamp not null,
    finished_at timestamp,
    rows_read bigint,
    rows_loaded bigint,
    rows_rejected bigint,
    rows_deduplicated bigint,
    status varchar not null,
    error varchar
);
"""


@dataclass(frozen=True)
class LoadResult:
    load_id: str
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    rows_deduplicated: int

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_rejected + self.rows_deduplicated


@contextmanager
def connect(path: Path, read_only: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def _email_hash_sql(column: str) -> str:
    """HMAC-SHA256 of the email in SQL, so clear emails never reach a table."""
    key = os.environ.get(PII_KEY_ENV)
    if not key:
        raise ConfigError(
            f"source.columns maps customer_email but {PII_KEY_ENV} is not set: export a secret "
            "key in that environment variable (emails are stored only as its HMAC-SHA256)"
        )
    raw_key = key.encode()
    # RFC 2104: a key longer than the block is hashed first.
    block = (hashlib.sha256(raw_key).digest() if len(raw_key) > 64 else raw_key).ljust(64, b"\0")
    inner = bytes(b ^ 0x36 for b in block).hex()
    outer = bytes(b ^ 0x5C for b in block).hex()
    return f"sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}') || encode({column}))))"


def read_watermark(con: duckdb.DuckDBPyConnection, source: str) -> datetime | None:
    con.execute(DDL)
    row = con.execute(
        f"select watermark from {RAW_SCHEMA}.source_watermarks where source = $source",
        {"source": source},
    ).fetchone()
    return None if row is None else row[0]


def write_load(
    con: duckdb.DuckDBPyConnection,
    source: str,
    window: LoadWindow,
    batch: LoadBatch,
    started_at: datetime,
    hash_emails: bool,
    replace: Literal["window", "orders", "source"] = "window",
    watermark: datetime | None = None,
) -> LoadResult:
    """Replaces rows of `source` with the batch, and records the load, atomically. What is
    replaced: the window's days and the batch's orders ("window", file loads); only the
    batch's orders ("orders", a watermark load, which reads changed orders of any date); or
    everything ("source", a full read of a database). `watermark` is stored with the load."""
    con.execute(DDL)
    load_id = uuid.uuid4().hex
    # DuckDB reads a frame of one chunk much faster than one of many (as a scan leaves it).
    con.register("batch_orders", batch.orders.rechunk())
    con.register("batch_rejected", batch.rejected)
    con.register("batch_fx_rates", _fx_rates_frame(batch))
    email = _email_hash_sql("batch_orders.customer_email") if hash_emails else "null"
    first = "null" if window.first is None else f"date '{window.first.isoformat()}'"
    in_window = {
        "window": f"order_date <= date '{window.last.isoformat()}'"
        + ("" if window.first is None else f" and order_date >= {first}"),
        "orders": "false",
        "source": "true",
    }[replace]
    # Rejected rows no window can place are read by every load, so a load replaces them;
    # a watermark load reads changed rows only, and replaces by key (an identical copy of a
    # row without order_id).
    unplaced = {
        "window": "order_date is null",
        "orders": "order_id is null and raw_record in "
        "(select raw_record from batch_rejected where order_id is null)",
        "source": "true",
    }[replace]
    con.execute("begin transaction")
    try:
        sequence = con.execute(
            f"select coalesce(max(load_sequence), 0) + 1 from {RAW_SCHEMA}.load_audit"
        ).fetchone()[0]
        # The batch holds every row of each order it touches (validate reads orders whole), so
        # it replaces those orders in both tables, wherever they were placed before; and the
        # window's days, where an order may have left. Loads in any order end alike.
        batch_ids = (
            "select order_id from batch_orders "
            "union all select order_id from batch_rejected where order_id is not null"
        )
        con.execute(
            f"delete from {RAW_SCHEMA}.orders where source = $source and ({in_window} "
            f"or order_id in ({batch_ids}))",
            {"source": source},
        )
        con.execute(
            f"delete from {RAW_SCHEMA}.rejected_orders where source = $source and "
            f"({in_window} or {unplaced} or order_id in ({batch_ids}))",
            {"source": source},
        )
        now = datetime.now(UTC).replace(tzinfo=None)
        con.execute(
            f"""
            insert into {RAW_SCHEMA}.orders (load_id, load_sequence, source, source_row,
                order_id, customer_id, ordered_at, order_date, updated_at, amount,
                refunded_amount, currency, status, channel, customer_email_hash, line_count,
                loaded_at, fx_rate, refund_rows)
            select $load_id, $sequence, $source, source_row, order_id, customer_id, ordered_at,
                order_date, updated_at, amount, refunded_amount, currency, status, channel,
                {email}, line_count, $now, fx_rate, refund_rows
            from batch_orders
            """,
            {"load_id": load_id, "sequence": sequence, "source": source, "now": now},
        )
        con.execute(
            f"""
            insert into {RAW_SCHEMA}.rejected_orders
            select $load_id, $source, source_row, raw_record, reason_code, reason, order_id,
                order_date, $now
            from batch_rejected
            """,
            {"load_id": load_id, "source": source, "now": now},
        )
        # The rates in force replace the previous ones whole: the table mirrors the FX input.
        con.execute(f"delete from {RAW_SCHEMA}.fx_rates")
        con.execute(
            f"""
            insert into {RAW_SCHEMA}.fx_rates
            select currency, rate_date, rate, source_row, $load_id, $now from batch_fx_rates
            """,
            {"load_id": load_id, "now": now},
        )
        # A netted refund row is loaded inside its original order, like a line.
        loaded, rejected_count = con.execute(
            f"""
            select
                (select coalesce(sum(line_count + coalesce(refund_rows, 0)), 0)
                 from {RAW_SCHEMA}.orders
                 where load_id = $load_id),
                (select count(*) from {RAW_SCHEMA}.rejected_orders where load_id = $load_id)
            """,
            {"load_id": load_id},
        ).fetchone()
        result = LoadResult(
            load_id, batch.rows_read, int(loaded), int(rejected_count), batch.rows_deduplicated
        )
        con.execute(
            f"""
            insert into {RAW_SCHEMA}.load_audit values (
                $load_id, $sequence, $source, {first}, $last, $started_at, $finished_at,
                $read, $loaded, $rejected, $deduplicated, 'succeeded', null)
            """,
            {
                "load_id": load_id,
                "sequence": sequence,
                "source": source,
                "last": window.last,
                "started_at": started_at.astimezone(UTC).replace(tzinfo=None),
                "finished_at": datetime.now(UTC).replace(tzinfo=None),
                "read": result.rows_read,
                "loaded": result.rows_loaded,
                "rejected": result.rows_rejected,
                "deduplicated": result.rows_deduplicated,
            },
        )
        if watermark is not None or replace == "source":
            con.execute(
                f"delete from {RAW_SCHEMA}.source_watermarks where source = $source",
                {"source": source},
            )
        if watermark is not None:
            con.execute(
                f"insert into {RAW_SCHEMA}.source_watermarks "
                "values ($source, $watermark, $load_id, $now)",
                {"source": source, "watermark": watermark, "load_id": load_id, "now": now},
            )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.unregister("batch_orders")
        con.unregister("batch_rejected")
        con.unregister("batch_fx_rates")
    return result


def _fx_rates_frame(batch: LoadBatch) -> pl.DataFrame:
    if batch.fx_rates is not None:
        return batch.fx_rates.select(FX_COLUMNS)
    return pl.DataFrame(
        schema={
            "currency": pl.String,
            "rate_date": pl.Date,
            "rate": pl.Float64,
            "source_row": pl.String,
        }
    )


def record_failed_load(
    con: duckdb.DuckDBPyConnection,
    source: str,
    window: LoadWindow,
    started_at: datetime,
    error: str,
) -> None:
    con.execute(DDL)
    con.execute(
        f"""
        insert into {RAW_SCHEMA}.load_audit (load_id, load_sequence, source, window_first,
            window_last, started_at, finished_at, status, error)
        select $load_id, coalesce(max(load_sequence), 0) + 1, $source, $first, $last,
            $started_at, $finished_at, 'failed', $error
        from {RAW_SCHEMA}.load_audit
        """,
        {
            "load_id": uuid.uuid4().hex,
            "source": source,
            "first": window.first,
            "last": window.last,
            "started_at": started_at.astimezone(UTC).replace(tzinfo=None),
            "finished_at": datetime.now(UTC).replace(tzinfo=None),
            "error": error,
        },
    )
