"""The raw layer of the warehouse (DuckDB or PostgreSQL): landed orders, quarantined rows,
load audits and the FX rates in force.

dbt reads these tables as sources. A load replaces its window and every order it read
in one transaction, so a crash leaves the previous state and running a load twice equals
running it once. The SQL is written once, in DuckDB's `$name` parameter style; a
`PostgresSession` speaks it to PostgreSQL and lands frames with COPY.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

from retention_pipeline.lib.config import ConfigError, PipelineConfig
from retention_pipeline.lib.fx import FX_COLUMNS
from retention_pipeline.lib.quarantine import LoadBatch, LoadWindow

RAW_SCHEMA = "raw"
PII_KEY_ENV = "RETENTION_PII_KEY"
DUCKDB_MEMORY_LIMIT_ENV = "RETENTION_DUCKDB_MEMORY_LIMIT"


def raw_ddl(raw: str) -> str:
    """The raw tables in schema `raw` (a quoted identifier), created when missing."""
    return f"""
create schema if not exists {raw};
create table if not exists {raw}.orders (
    load_id varchar not null,
    load_sequence bigint not null,
    source varchar not null,
    source_row varchar not null,
    order_id varchar not null,
    customer_id varchar not null,
    ordered_at timestamp not null,
    order_date date not null,
    updated_at timestamp,
    amount double precision not null,
    refunded_amount double precision,
    currency varchar not null,
    status varchar,
    channel varchar,
    customer_email_hash varchar,
    line_count integer not null,
    loaded_at timestamp not null,
    fx_rate double precision,
    refund_rows integer
);
-- Warehouses made before FX rates and refund rows existed get the columns.
alter table {raw}.orders add column if not exists fx_rate double precision;
alter table {raw}.orders add column if not exists refund_rows integer;
create table if not exists {raw}.fx_rates (
    currency varchar not null,
    rate_date date not null,
    rate double precision not null,
    source_row varchar not null,
    load_id varchar not null,
    loaded_at timestamp not null
);
create table if not exists {raw}.rejected_orders (
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
create table if not exists {raw}.source_watermarks (
    source varchar not null,
    watermark timestamp not null,
    load_id varchar not null,
    updated_at timestamp not null
);
create table if not exists {raw}.load_audit (
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
-- What a load replaced (write_load's `replace`): the incremental models' changes follow it.
alter table {raw}.load_audit add column if not exists replaced varchar;
"""


@dataclass(frozen=True)
class LoadResult:
    load_id: str
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    rows_deduplicated: int
    fx_rates: int  # rates of the FX input stored with the load

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_rejected + self.rows_deduplicated


# A size as DuckDB writes them: 6GB (powers of 1000) or 512MiB (of 1024).
DUCKDB_SIZE = r"(\d+(?:\.\d+)?)\s*([KMGT])(i?)B"


def memory_limit() -> str:
    """DuckDB's memory bound, past which it spills to disk; the same as dbt's profile."""
    limit = os.environ.get(DUCKDB_MEMORY_LIMIT_ENV, "6GB")
    if not re.fullmatch(DUCKDB_SIZE, limit):
        raise ValueError(f"{DUCKDB_MEMORY_LIMIT_ENV}={limit!r} is not a size such as 6GB or 512MiB")
    return limit


def spill_folder(path: Path) -> Path:
    """Where DuckDB spills past its memory bound for the database file `path` (its default
    temp_directory)."""
    return path.with_name(path.name + ".tmp")


@contextmanager
def connect(path: Path, read_only: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    # A setting, not a connect option: DuckDB refuses a second connection to an open file
    # with a different configuration.
    con.execute(f"set memory_limit = '{memory_limit()}'")
    # Freed memory goes back to the system in the background: without it DuckDB's allocator
    # kept gigabytes its queries had freed, beside the CLV step's own frames.
    con.execute("set allocator_background_threads = true")
    try:
        yield con
    finally:
        con.close()


def _hmac_pads() -> tuple[str, str]:
    """The HMAC-SHA256 inner and outer key pads (hex) of the PII key, so that emails are
    hashed in SQL and clear emails never reach a table."""
    key = os.environ.get(PII_KEY_ENV)
    if not key:
        raise ConfigError(
            f"source.columns maps customer_email but {PII_KEY_ENV} is not set: export a secret "
            "key in that environment variable (emails are stored only as its HMAC-SHA256)"
        )
    raw_key = key.encode()
    # RFC 2104: a key longer than the block is hashed first.
    block = (hashlib.sha256(raw_key).digest() if len(raw_key) > 64 else raw_key).ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block).hex(), bytes(b ^ 0x5C for b in block).hex()


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_path(path: str | Path) -> str:
    """A file path as a SQL string literal."""
    return sql_string(str(path))


class DuckDBSession:
    """The raw layer's statements on a DuckDB connection, which speaks them natively."""

    raw_schema = RAW_SCHEMA

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self._files: dict[str, Path] = {}

    def execute(self, sql: str, params: dict | None = None):
        return self.con.execute(sql, params)

    def register(self, name: str, frame: pl.DataFrame) -> None:
        """`frame` as the temporary view `name`, read from a Parquet file: what DuckDB inserts
        from a registered frame stays in memory until the transaction ends (30M orders loaded
        in parts held 10 GiB), and what it reads from a file does not."""
        handle, path = tempfile.mkstemp(prefix=f"retention-{name}-", suffix=".parquet")
        os.close(handle)
        self._files[name] = Path(path)
        frame.write_parquet(path)
        self.con.execute(
            f'create or replace temp view "{name}" as select * from read_parquet({sql_path(path)})'
        )

    def unregister(self, name: str) -> None:
        self.con.execute(f'drop view if exists temp."{name}"')
        if name in self._files:
            self._files.pop(name).unlink(missing_ok=True)

    @staticmethod
    def email_hash_sql(column: str) -> str:
        inner, outer = _hmac_pads()
        return f"sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}') || encode({column}))))"


# Polars types as PostgreSQL column types, for the temporary tables frames are copied into.
_PG_TYPES = {
    pl.String: "text",
    pl.Float64: "double precision",
    pl.Float32: "double precision",
    pl.Date: "date",
    pl.Boolean: "boolean",
    pl.Null: "text",
}


def _pg_type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "bigint"
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            raise TypeError("timestamps reach the raw layer as naive UTC")
        return "timestamp"
    if isinstance(dtype, pl.Decimal):
        return "numeric"
    return _PG_TYPES[dtype.base_type()]


class PostgresSession:
    """The raw layer's statements on PostgreSQL: `$name` parameters become psycopg2's, and
    a registered frame is a temporary table filled by one COPY (not row inserts)."""

    def __init__(self, con, raw_schema: str):
        self.con = con  # a psycopg2 connection in autocommit: transactions are explicit
        self.raw_schema = raw_schema

    def execute(self, sql: str, params: dict | None = None):
        cursor = self.con.cursor()
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(_NAMED_PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%")), params)
        return cursor

    def register(self, name: str, frame: pl.DataFrame) -> None:
        columns = ", ".join(f'"{c}" {_pg_type(t)}' for c, t in frame.schema.items())
        cursor = self.con.cursor()
        cursor.execute(f'drop table if exists pg_temp."{name}"')
        cursor.execute(f'create temporary table "{name}" ({columns})')
        # CSV keeps nulls (unquoted empty) apart from empty strings (""), and Polars writes
        # floats so that they read back exactly.
        buffer = io.BytesIO(frame.write_csv(include_header=False).encode())
        cursor.copy_expert(f'copy "{name}" from stdin with (format csv)', buffer)

    def unregister(self, name: str) -> None:
        self.con.cursor().execute(f'drop table if exists pg_temp."{name}"')

    @staticmethod
    def email_hash_sql(column: str) -> str:
        inner, outer = _hmac_pads()
        # The same HMAC as DuckDB's: lowercase hex of sha256(outer || sha256(inner || email)).
        return (
            f"encode(sha256(decode('{outer}', 'hex') || sha256(decode('{inner}', 'hex') || "
            f"convert_to({column}, 'UTF8'))), 'hex')"
        )


# Names the pipeline puts in SQL: lower case, at most PostgreSQL's 63 characters.
_PG_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_NAMED_PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

Session = DuckDBSession | PostgresSession


def as_session(con: duckdb.DuckDBPyConnection | Session) -> Session:
    """A warehouse session; a bare DuckDB connection is one on that connection."""
    return con if isinstance(con, DuckDBSession | PostgresSession) else DuckDBSession(con)


@contextmanager
def open_warehouse(config: PipelineConfig):
    """A session on the configured warehouse for writing the raw layer."""
    if config.warehouse.type == "duckdb":
        with connect(config.warehouse_path) as con:
            yield DuckDBSession(con)
        return
    con = pg_connect(config)
    try:
        yield PostgresSession(con, quote_identifier(config.raw_schema))
    finally:
        con.close()


def pg_connect(config: PipelineConfig):
    """A psycopg2 connection in autocommit to the warehouse URL in the environment."""
    import psycopg2

    con = psycopg2.connect(config.warehouse_url)
    con.autocommit = True
    return con


def read_postgres(con, sql: str) -> pl.DataFrame:
    """A query's rows on PostgreSQL as a frame."""
    return pl.read_database(sql, con)


def postgres_tables(con, schema: str) -> list[str]:
    """The tables and views of `schema`, sorted."""
    cursor = con.cursor()
    cursor.execute(
        "select table_name from information_schema.tables where table_schema = %s order by 1",
        (schema,),
    )
    return [name for (name,) in cursor.fetchall()]


@contextmanager
def marts_file(config: PipelineConfig):
    """A DuckDB file with the warehouse's marts (schema main) and its as-of date, for the
    readers written for DuckDB (the report, the run summary): the warehouse file itself, or
    on PostgreSQL a temporary local copy of the marts the last build left."""
    if config.warehouse.type == "duckdb":
        yield config.warehouse_path
        return
    schema = quote_identifier(config.warehouse.schema_name)
    intermediate = quote_identifier(f"{config.warehouse.schema_name}_intermediate")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "marts.duckdb"
        pg = pg_connect(config)
        try:
            with connect(path) as con:
                copies = [
                    (f'main."{table}"', f'{schema}."{table}"')
                    for table in postgres_tables(pg, config.warehouse.schema_name)
                ]
                con.execute("create schema intermediate")
                copies.append(("intermediate.int_run__as_of", f"{intermediate}.int_run__as_of"))
                for target, source in copies:
                    con.register("copied", read_postgres(pg, f"select * from {source}"))
                    con.execute(f"create table {target} as select * from copied")
                    con.unregister("copied")
        finally:
            pg.close()
        yield path


def warehouse_label(config: PipelineConfig) -> str:
    """The warehouse in words, for people: its file, or its PostgreSQL schema."""
    if config.warehouse.type == "duckdb":
        return str(config.warehouse_path)
    return f"PostgreSQL schema {config.warehouse.schema_name} (from ${config.warehouse.url_env})"


def quote_identifier(name: str) -> str:
    """A validated identifier, double-quoted: config names never reach SQL unchecked."""
    if not _PG_IDENTIFIER.fullmatch(name):
        raise ConfigError(f"'{name}' is not a plain SQL identifier (letters, digits, _)")
    return f'"{name}"'


def read_watermark(con: duckdb.DuckDBPyConnection | Session, source: str) -> datetime | None:
    con = as_session(con)
    con.execute(raw_ddl(con.raw_schema))
    row = con.execute(
        f"select watermark from {con.raw_schema}.source_watermarks where source = $source",
        {"source": source},
    ).fetchone()
    return None if row is None else row[0]


def write_load(
    con: duckdb.DuckDBPyConnection | Session,
    source: str,
    window: LoadWindow,
    batches: Iterable[LoadBatch],
    started_at: datetime,
    hash_emails: bool,
    replace: Literal["window", "orders", "source"] = "window",
    watermark: datetime | None = None,
) -> LoadResult:
    """Replaces rows of `source` with the batches, and records the load, atomically. What is
    replaced: the window's days and the batches' orders ("window", file loads); only the
    batches' orders ("orders", a watermark load, which reads changed orders of any date); or
    everything ("source", a full read of a database). Batches hold disjoint orders (the parts
    of `validate_in_parts`), each taken as it comes. `watermark` is stored with the load."""
    con = as_session(con)
    raw = con.raw_schema
    con.execute(raw_ddl(raw))
    load_id = uuid.uuid4().hex
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
    rows_read = rows_deduplicated = 0
    fx_rates = None
    con.execute("begin transaction")
    try:
        sequence = con.execute(
            f"select coalesce(max(load_sequence), 0) + 1 from {raw}.load_audit"
        ).fetchone()[0]
        con.execute(
            f"delete from {raw}.orders where source = $source and {in_window}", {"source": source}
        )
        now = datetime.now(UTC).replace(tzinfo=None)
        for batch in batches:
            _write_batch(
                con, source, batch, load_id, sequence, now, hash_emails, unplaced, in_window
            )
            rows_read += batch.rows_read
            rows_deduplicated += batch.rows_deduplicated
            fx_rates = batch.fx_rates
            del batch  # so that it is gone while the next part is validated
        # The rates in force replace the previous ones whole: the table mirrors the FX input.
        con.execute(f"delete from {raw}.fx_rates")
        rates = _fx_rates_frame(fx_rates)
        con.register("batch_fx_rates", rates)
        con.execute(
            f"""
            insert into {raw}.fx_rates
            select currency, rate_date, rate, source_row, $load_id, $now from batch_fx_rates
            """,
            {"load_id": load_id, "now": now},
        )
        # A netted refund row is loaded inside its original order, like a line.
        loaded, rejected_count = con.execute(
            f"""
            select
                (select coalesce(sum(line_count + coalesce(refund_rows, 0)), 0)
                 from {raw}.orders
                 where load_id = $load_id),
                (select count(*) from {raw}.rejected_orders where load_id = $load_id)
            """,
            {"load_id": load_id},
        ).fetchone()
        result = LoadResult(
            load_id, rows_read, int(loaded), int(rejected_count), rows_deduplicated, rates.height
        )
        con.execute(
            f"""
            insert into {raw}.load_audit values (
                $load_id, $sequence, $source, {first}, $last, $started_at, $finished_at,
                $read, $loaded, $rejected, $deduplicated, 'succeeded', null, $replace)
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
                "replace": replace,
            },
        )
        if watermark is not None or replace == "source":
            con.execute(
                f"delete from {raw}.source_watermarks where source = $source",
                {"source": source},
            )
        if watermark is not None:
            con.execute(
                f"insert into {raw}.source_watermarks values ($source, $watermark, $load_id, $now)",
                {"source": source, "watermark": watermark, "load_id": load_id, "now": now},
            )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        for name in ("batch_orders", "batch_rejected", "batch_fx_rates"):
            con.unregister(name)
    return result


def _write_batch(
    con: Session,
    source: str,
    batch: LoadBatch,
    load_id: str,
    sequence: int,
    now: datetime,
    hash_emails: bool,
    unplaced: str,
    in_window: str,
) -> None:
    """One batch of `write_load`, inside its transaction. The batch holds every row of each
    order it touches (validate reads orders whole), so it replaces those orders in both
    tables, wherever they were placed before. Loads in any order end alike."""
    raw = con.raw_schema
    con.register("batch_orders", batch.orders)
    con.register("batch_rejected", batch.rejected)
    email = con.email_hash_sql("batch_orders.customer_email") if hash_emails else "null"
    batch_ids = (
        "select order_id from batch_orders "
        "union all select order_id from batch_rejected where order_id is not null"
    )
    con.execute(
        f"delete from {raw}.orders where source = $source and order_id in ({batch_ids})",
        {"source": source},
    )
    con.execute(
        f"delete from {raw}.rejected_orders where source = $source and "
        f"({in_window} or {unplaced} or order_id in ({batch_ids})) and load_id <> $load_id",
        {"source": source, "load_id": load_id},
    )
    con.execute(
        f"""
        insert into {raw}.orders (load_id, load_sequence, source, source_row,
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
        insert into {raw}.rejected_orders
        select $load_id, $source, source_row, raw_record, reason_code, reason, order_id,
            order_date, $now
        from batch_rejected
        """,
        {"load_id": load_id, "source": source, "now": now},
    )
    # After a failure, write_load unregisters them once the transaction is rolled back.
    for name in ("batch_orders", "batch_rejected"):
        con.unregister(name)


def _fx_rates_frame(fx_rates: pl.DataFrame | None) -> pl.DataFrame:
    if fx_rates is not None:
        return fx_rates.select(FX_COLUMNS)
    return pl.DataFrame(
        schema={
            "currency": pl.String,
            "rate_date": pl.Date,
            "rate": pl.Float64,
            "source_row": pl.String,
        }
    )


def record_failed_load(
    con: duckdb.DuckDBPyConnection | Session,
    source: str,
    window: LoadWindow,
    started_at: datetime,
    error: str,
) -> None:
    con = as_session(con)
    raw = con.raw_schema
    con.execute(raw_ddl(raw))
    con.execute(
        f"""
        insert into {raw}.load_audit (load_id, load_sequence, source, window_first,
            window_last, started_at, finished_at, status, error)
        select $load_id, coalesce(max(load_sequence), 0) + 1, $source, $first, $last,
            $started_at, $finished_at, 'failed', $error
        from {raw}.load_audit
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


def read_frame(con: duckdb.DuckDBPyConnection | Session, sql: str) -> pl.DataFrame:
    """The rows of a query as a Polars frame, on DuckDB or PostgreSQL."""
    if isinstance(con, PostgresSession):
        return read_postgres(con.con, sql)
    if isinstance(con, DuckDBSession):
        con = con.con
    return pl.from_arrow(con.sql(sql).to_arrow_table())


def table_exists(con: duckdb.DuckDBPyConnection | Session, schema: str, table: str) -> bool:
    """Whether `schema.table` exists (names unquoted, plain identifiers)."""
    for name in (schema, table):
        quote_identifier(name)  # validated before it reaches SQL
    found = read_frame(
        con,
        "select count(*) as n from information_schema.tables "
        f"where table_schema = '{schema}' and table_name = '{table}'",
    )
    return bool(found["n"][0])


def model_schemas(config: PipelineConfig) -> tuple[str, str]:
    """Where dbt builds the marts and the intermediate models, as SQL names."""
    if config.warehouse.type == "duckdb":
        return "main", "intermediate"
    schema = config.warehouse.schema_name
    return quote_identifier(schema), quote_identifier(f"{schema}_intermediate")


def replace_tables(
    con: duckdb.DuckDBPyConnection | Session, tables: Mapping[str, pl.DataFrame]
) -> None:
    """Replaces each table named `schema.table` with the rows and columns of its frame, all
    in one transaction: readers see every old table or every new one. Schemas are created
    as needed.

    The one way Python writes a computed table to the warehouse (the CLV tables today). It
    speaks through a warehouse session, in SQL that DuckDB and PostgreSQL share; on
    PostgreSQL a frame reaches the server as a temporary table (PostgresSession.register).
    """
    session = as_session(con)
    for name in tables:
        if not re.fullmatch(r'("?)[a-z_][a-z0-9_]*\1\.[a-z_][a-z0-9_]*', name):
            raise ValueError(f"'{name}' is not a schema-qualified lower-case table name")
    registered = []
    session.execute("begin")
    try:
        for schema in sorted({name.split(".")[0] for name in tables}):
            session.execute(f"create schema if not exists {schema}")
        for i, (name, frame) in enumerate(tables.items()):
            view = f"_replacement_{i}"
            session.register(view, frame)
            registered.append(view)
            session.execute(f"drop table if exists {name}")
            session.execute(f"create table {name} as select * from {view}")
        session.execute("commit")
    except BaseException:
        session.execute("rollback")
        raise
    finally:
        for view in registered:
            session.unregister(view)
