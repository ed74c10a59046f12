"""Database sources on real servers: the same generated orders, loaded into PostgreSQL,
MariaDB and SQLite tables, give the same marts as the file source; an incremental run after
rows were updated and inserted reads only those and corrects every mart (equal to the
reference, and to a full re-sync); the watermark and its lookback; clear errors for bad
identifiers, a missing variable and an unreachable server.

The file-source run is the one baseline the database runs compare with. Tests that need a
server skip when it is unreachable, and fail instead with RETENTION_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import sqlite3
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl
import psycopg2
import psycopg2.extras
import pymysql
import pytest
from conftest import MYSQL_URL, POSTGRES_URL, service_unavailable
from pipeline_helpers import (
    BIN,
    ORDER_COLUMNS,
    as_of_of,
    assert_marts_match_reference,
    assert_same_marts,
    columns_holding,
    copy_run_directory,
    mart_snapshot,
    read_table,
    reference_orders,
    run_cli,
    write_config,
)

from retention_pipeline.lib.config import ConfigError, parse_config
from retention_pipeline.lib.database import (
    SourceDatabaseError,
    extract_to_parquet,
    select_sql,
    source_url,
    watermark_since,
)
from retention_pipeline.lib.generate import (
    BAD_AMOUNT,
    BAD_ORDERED_AT,
    generate_orders,
    write_orders,
)

CUSTOMERS = 300
SEED = 5_150
URL_ENV = "RETENTION_TEST_ORDERS_URL"
# Names of our own, so that parallel test runs of other suites do not collide.
PG_SCHEMA = "retention_dbsrc_tests"
MYSQL_TABLE = "retention_dbsrc_orders"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
TIMESTAMPS = ("ordered_at", "updated_at")
AMOUNTS = ("amount", "refunded_amount")
# load_audit differs by nature (load ids, times); rejected_orders names file lines in one and
# keys in the other, so it is compared on what it rejected.
RUN_TABLES = ("load_audit", "rejected_orders")


def _generated() -> pl.DataFrame:
    """The generator's orders without the rows a typed column cannot hold (an unreadable
    timestamp or amount): the same rows go to the file and to every database."""
    orders = generate_orders(customers=CUSTOMERS, seed=SEED)
    typeable = (pl.col("ordered_at") != BAD_ORDERED_AT) & (pl.col("amount") != BAD_AMOUNT)
    return orders.filter(typeable)


def _typed_rows(orders: pl.DataFrame) -> list[tuple]:
    """Rows with timestamps and amounts typed, as a database driver takes them."""
    return orders.with_columns(
        *[pl.col(c).str.to_datetime(TIMESTAMP_FORMAT) for c in TIMESTAMPS],
        *[pl.col(c).replace("", None).cast(pl.Float64) for c in AMOUNTS],
    ).rows()


def _column_types(timestamp: str, amount: str, text: str) -> str:
    types = {**dict.fromkeys(TIMESTAMPS, timestamp), **dict.fromkeys(AMOUNTS, amount)}
    return ", ".join(f"{c} {types.get(c, text)}" for c in ORDER_COLUMNS)


class Postgres:
    kind = "postgres"
    url = POSTGRES_URL
    table = f"{PG_SCHEMA}.orders"

    def connect(self):
        try:
            return psycopg2.connect(self.url, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            service_unavailable(f"PostgreSQL is unreachable at RETENTION_TEST_POSTGRES_URL: {exc}")

    def execute(self, *statements: str, rows: list[tuple] = ()) -> None:
        with self.connect() as con, con.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            if rows:
                psycopg2.extras.execute_values(cur, f"insert into {self.table} values %s", rows)
        con.close()

    def load(self, orders: pl.DataFrame) -> None:
        self.execute(
            f"create schema if not exists {PG_SCHEMA}",
            f"drop table if exists {self.table}",
            f"create table {self.table} ({_column_types('timestamp', 'numeric(12, 2)', 'text')})",
            rows=_typed_rows(orders),
        )

    def replace(self, orders: pl.DataFrame) -> None:
        ids = ", ".join(f"'{i}'" for i in orders["order_id"])
        self.execute(
            f"delete from {self.table} where order_id in ({ids})", rows=_typed_rows(orders)
        )


class MariaDB(Postgres):
    kind = "mysql"
    url = MYSQL_URL
    table = MYSQL_TABLE

    def connect(self):
        url = urlsplit(self.url)
        try:
            return pymysql.connect(
                host=url.hostname,
                port=url.port or 3306,
                user=url.username,
                password=url.password or "",
                database=url.path.lstrip("/"),
                connect_timeout=5,
                autocommit=True,
            )
        except pymysql.err.OperationalError as exc:
            service_unavailable(f"MariaDB is unreachable at RETENTION_TEST_MYSQL_URL: {exc}")

    def execute(self, *statements: str, rows: list[tuple] = ()) -> None:
        con = self.connect()
        with con.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            if rows:
                marks = ", ".join(["%s"] * len(ORDER_COLUMNS))
                cur.executemany(f"insert into {self.table} values ({marks})", rows)
        con.close()

    def load(self, orders: pl.DataFrame) -> None:
        self.execute(
            f"drop table if exists {self.table}",
            f"create table {self.table} "
            f"({_column_types('datetime(6)', 'decimal(12, 2)', 'varchar(200)')})",
            rows=_typed_rows(orders),
        )


class SQLite:
    """A file database; timestamps and amounts stay text, as SQLite applications keep them."""

    kind = "sqlite"
    table = "orders"

    def __init__(self, path: Path):
        self.path = path
        self.url = f"sqlite://{path}"

    def load(self, orders: pl.DataFrame) -> None:
        with sqlite3.connect(self.path) as con:
            con.execute(f"create table orders ({_column_types('text', 'numeric', 'text')})")
            marks = ", ".join(["?"] * len(ORDER_COLUMNS))
            con.executemany(f"insert into orders values ({marks})", orders.rows())
        con.close()


def _database_run(directory: Path, database, orders: pl.DataFrame) -> Path:
    """Loads `orders` into the database and runs the pipeline from it; the run directory."""
    database.load(orders)
    write_config(directory, source=_source(database))
    run_cli(directory / "config.yaml", env={URL_ENV: database.url})
    return directory


def _source(database, **options) -> dict:
    return {
        "type": database.kind,
        "url_env": URL_ENV,
        "table": database.table,
        "columns": {c: c for c in ORDER_COLUMNS},
        **options,
    }


@pytest.fixture(scope="module")
def orders() -> pl.DataFrame:
    return _generated()


def _file_run(directory: Path, orders: pl.DataFrame) -> Path:
    write_orders(orders, directory / "orders.csv")
    run_cli(write_config(directory))
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory, orders) -> dict[str, Future]:
    """The file run (the baseline every database run must equal) and one run from each
    database, two at a time in the background."""
    folder = tmp_path_factory.mktemp
    pool = ThreadPoolExecutor(max_workers=2)
    sqlite = folder("sqlite")
    futures = {
        "file": pool.submit(_file_run, folder("file"), orders),
        "postgres": pool.submit(_database_run, folder("postgres"), Postgres(), orders),
        "mariadb": pool.submit(_database_run, folder("mariadb"), MariaDB(), orders),
        "sqlite": pool.submit(_database_run, sqlite, SQLite(sqlite / "shop.db"), orders),
    }
    yield futures
    pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def file_warehouse(runs) -> Path:
    return runs["file"].result() / "warehouse.duckdb"


def _marts(warehouse: Path) -> dict:
    """The marts less the source_row of fct_orders, a file line in one and a key in the other."""
    marts = mart_snapshot(warehouse, exclude=RUN_TABLES)
    return {name: frame.drop("source_row", strict=False) for name, frame in marts.items()}


def _rejections(warehouse: Path) -> pl.DataFrame:
    return (
        read_table(warehouse, "rejected_orders")
        .select("order_id", "reason_code")
        .sort(pl.all(), nulls_last=True)
    )


@pytest.fixture(scope="module")
def postgres_run(runs) -> Path:
    return runs["postgres"].result()


@pytest.fixture(scope="module")
def mariadb_run(runs) -> Path:
    return runs["mariadb"].result()


@pytest.fixture(scope="module")
def sqlite_run(runs) -> Path:
    return runs["sqlite"].result()


# --------------------------------------------------------------------------------------------
# The same marts as the file source
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["postgres_run", "mariadb_run", "sqlite_run"])
def test_a_database_source_gives_the_marts_of_the_file_source(request, run, file_warehouse):
    warehouse = request.getfixturevalue(run) / "warehouse.duckdb"
    assert_same_marts(_marts(warehouse), _marts(file_warehouse))
    assert _rejections(warehouse).equals(_rejections(file_warehouse))
    audit = read_table(warehouse, "load_audit")
    assert audit.height == 1
    row = audit.row(0, named=True)
    assert row["rows_read"] == row["rows_loaded"] + row["rows_rejected"] + row["rows_deduplicated"]


def test_database_rows_are_quarantined_under_their_key(postgres_run):
    rejected = read_table(postgres_run / "warehouse.duckdb", "rejected_orders")
    keyed = rejected.filter(pl.col("order_id").is_not_null())
    assert (keyed["source_row"] == Postgres.table + ":" + keyed["order_id"]).all()
    assert rejected["raw_record"].str.contains('"customer_email":"<redacted>"').all()


def test_no_email_is_stored_in_clear_after_a_database_run(postgres_run):
    assert not columns_holding(postgres_run / "warehouse.duckdb", "%@example.com%")


def test_the_watermark_is_the_newest_update_read(postgres_run, orders):
    watermarks = read_table(postgres_run / "warehouse.duckdb", "raw.source_watermarks")
    updated = orders["updated_at"].str.to_datetime(TIMESTAMP_FORMAT)
    # The generator's future rows (2099) lie past the run's last day and do not count.
    newest = updated.filter(updated < datetime.now(UTC).replace(tzinfo=None)).max()
    assert watermarks.rows() == [("orders", newest, *watermarks.row(0)[2:])]


# --------------------------------------------------------------------------------------------
# Incremental runs
# --------------------------------------------------------------------------------------------


def _changes(orders: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the changed and new rows, all rows after the change): five old orders cancelled, five
    repriced, and ten new orders (new and known customers), all updated a day after the
    newest update."""
    updated = pl.col("updated_at").str.to_datetime(TIMESTAMP_FORMAT, strict=False)
    newest = orders.filter(updated.dt.year() < 2099).select(updated.max()).item()
    stamp = (newest + timedelta(days=1)).strftime(TIMESTAMP_FORMAT)
    single = orders.filter(
        pl.col("order_id").is_not_null(),
        pl.col("order_id").is_unique(),
        pl.col("status") == "completed",
        pl.col("refunded_amount").cast(pl.Float64, strict=False) == 0,
        pl.col("customer_id") != "",
    ).head(10)
    cancelled = single.head(5).with_columns(status=pl.lit("cancelled"), updated_at=pl.lit(stamp))
    repriced = single.tail(5).with_columns(
        amount=(pl.col("amount").cast(pl.Float64) + 100).round(2).cast(pl.String),
        updated_at=pl.lit(stamp),
    )
    customers = ["C900001", "C900002", *orders["customer_id"].unique().sort().head(8)]
    new = single.head(10).with_columns(
        order_id=pl.Series([f"N{i:07d}" for i in range(10)]),
        customer_id=pl.Series(customers),
        ordered_at=pl.lit((newest + timedelta(hours=20)).strftime(TIMESTAMP_FORMAT)),
        updated_at=pl.lit(stamp),
    )
    changed = pl.concat([cancelled, repriced, new])
    kept = ~pl.col("order_id").is_in(single["order_id"].implode()).fill_null(False)
    after = pl.concat([orders.filter(kept),
                       cancelled, repriced, new])  # fmt: skip
    return changed, after


@pytest.mark.parametrize(
    ("run", "database"), [("postgres_run", Postgres), ("mariadb_run", MariaDB)]
)
def test_an_incremental_run_reads_the_changes_and_corrects_every_mart(
    request, tmp_path, run, database, orders
):
    directory = copy_run_directory(request.getfixturevalue(run), tmp_path / "incremental")
    warehouse = directory / "warehouse.duckdb"
    watermark = read_table(warehouse, "raw.source_watermarks")["watermark"].item()
    changed, after = _changes(orders)
    database().replace(changed)
    run_cli(directory / "config.yaml", env={URL_ENV: database.url})

    # Only what changed since the watermark, less the 24 h lookback, was read: the changes,
    # the rows updated within the lookback and the future rows (updated in 2099).
    since = watermark - timedelta(hours=24)
    updated = pl.col("updated_at").str.to_datetime(TIMESTAMP_FORMAT)
    expected_read = after.filter((updated >= since) | updated.is_null()).height
    audit = read_table(warehouse, "load_audit").sort("load_sequence")
    assert audit.height == 2
    assert audit["rows_read"][-1] == expected_read < orders.height / 5
    newest = read_table(warehouse, "raw.source_watermarks")["watermark"].item()
    assert newest == changed["updated_at"].str.to_datetime(TIMESTAMP_FORMAT).max()

    as_of = as_of_of(warehouse)
    assert_marts_match_reference(warehouse, reference_orders(after, as_of), as_of)
    if database is Postgres:
        # A full re-sync of the same source ends where the incremental run did.
        resync = copy_run_directory(directory, tmp_path / "resync")
        run_cli(resync / "config.yaml", None, "--full-resync", env={URL_ENV: database.url})
        audit = read_table(resync / "warehouse.duckdb", "load_audit").sort("load_sequence")
        assert audit["rows_read"][-1] == after.height
        assert_same_marts(
            mart_snapshot(resync / "warehouse.duckdb", exclude=("load_audit",)),
            mart_snapshot(warehouse, exclude=("load_audit",)),
        )


# --------------------------------------------------------------------------------------------
# The watermark's query, and errors
# --------------------------------------------------------------------------------------------


def _config(tmp_path: Path, **source):
    columns = {c: c for c in ORDER_COLUMNS}
    raw = {"source": {"type": "sqlite", "url_env": URL_ENV, "columns": columns, **source}}
    return parse_config(raw, tmp_path)


@pytest.mark.parametrize(
    ("kind", "relation", "updated"),
    [
        ("postgres", '"shop"."orders"', '"updated_at"'),
        ("mysql", "`shop`.`orders`", "`updated_at`"),
        ("sqlite", '"shop"."orders"', '"updated_at"'),
    ],
)
def test_the_query_quotes_names_and_reads_from_the_watermark(tmp_path, kind, relation, updated):
    source = _config(tmp_path, type=kind, table="shop.orders").source
    sql = select_sql(source, datetime(2025, 3, 1, 10, 30, 15, 900))
    assert f" from {relation} where {updated} >= '2025-03-01 10:30:15' or {updated} is null" in sql
    query = _config(tmp_path, query="select * from orders;").source
    assert select_sql(query, None) == "select * from (select * from orders) as source_query"


def test_the_lookback_starts_the_read_earlier_in_source_time(tmp_path):
    config = _config(tmp_path, table="orders", lookback_hours=6, timezone="Europe/Berlin")
    # 12:00 UTC in July is 14:00 in Berlin; six hours earlier is 08:00 there.
    assert watermark_since(config, datetime(2025, 7, 1, 12)) == datetime(2025, 7, 1, 8)


def test_an_extract_from_the_watermark_reads_changed_rows_and_rows_without_updated_at(tmp_path):
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as con:
        con.execute("create table orders (order_id, updated_at)")
        con.executemany(
            "insert into orders values (?, ?)",
            [("old", "2025-01-01 09:00:00"), ("edge", "2025-01-02 10:00:00"),
             ("new", "2025-01-03 10:00:00.5"), ("undated", None)],
        )  # fmt: skip
    con.close()
    columns = {"order_id": "order_id", "customer_id": "order_id", "ordered_at": "updated_at",
               "amount": "order_id", "updated_at": "updated_at"}  # fmt: skip
    config = parse_config(
        {"source": {"type": "sqlite", "url_env": URL_ENV, "table": "orders", "columns": columns}},
        tmp_path,
    )
    spill = tmp_path / "rows.parquet"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(URL_ENV, f"sqlite://{database}")
        assert extract_to_parquet(config, datetime(2025, 1, 2, 10), spill) == 3
    assert sorted(pl.read_parquet(spill)["order_id"]) == ["edge", "new", "undated"]


@pytest.mark.parametrize(
    ("source", "key", "message"),
    [
        ({"table": "orders; drop table orders"}, "source", "is not a table name"),
        ({"table": "a.b.c"}, "source", "is not a table name"),
        ({"table": 'orders"'}, "source", "is not a table name"),
        ({"table": "orders", "columns": {"amount": "total amount"}}, "source", "column names"),
        ({"table": "orders", "query": "select 1"}, "source", "either 'table' or 'query'"),
        ({"table": "orders", "url_env": None}, "source", "url_env"),
        ({"table": "orders", "url_env": "postgres://u:p@h/db"}, "source", "url_env"),
        ({"table": "orders", "path": "orders.csv"}, "source", "not 'path'"),
    ],
)
def test_bad_database_settings_are_refused_with_the_key(tmp_path, source, key, message):
    columns = {c: c for c in ("order_id", "customer_id", "ordered_at", "amount")}
    raw = {"type": "postgres", "url_env": URL_ENV, "columns": columns}
    raw = {**raw, **source, "columns": {**columns, **source.get("columns", {})}}
    with pytest.raises(ConfigError, match=message) as error:
        parse_config({"source": raw}, tmp_path)
    assert f"  - {key}:" in str(error.value)


def test_a_missing_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    source = _config(tmp_path, table="orders").source
    with pytest.raises(ConfigError, match=f"names the environment variable {URL_ENV}, which is"):
        source_url(source)


def test_the_command_names_a_missing_variable_before_it_runs(tmp_path):
    config = write_config(tmp_path, source=_source(Postgres))
    command = [str(BIN / "retention-pipeline"), "run", "--config", str(config)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert f"environment variable {URL_ENV}, which is not set" in result.stderr


def test_an_unreachable_server_is_named_by_its_variable_never_its_url(tmp_path, monkeypatch):
    url = "postgresql://shop:s3cret@127.0.0.1:9/shop"
    monkeypatch.setenv(URL_ENV, url)
    config = _config(tmp_path, type="postgres", table="orders")
    with pytest.raises(SourceDatabaseError) as error:
        extract_to_parquet(config, None, tmp_path / "rows.parquet")
    message = str(error.value)
    assert f"cannot reach the postgres server named by {URL_ENV}" in message
    assert "s3cret" not in message and url not in message


def test_a_refused_query_names_the_table_not_the_url(tmp_path, monkeypatch):
    database = Postgres()
    database.execute(f"create schema if not exists {PG_SCHEMA}")
    monkeypatch.setenv(URL_ENV, database.url)
    config = _config(tmp_path, type="postgres", table=f"{PG_SCHEMA}.no_such_table")
    with pytest.raises(SourceDatabaseError) as error:
        extract_to_parquet(config, None, tmp_path / "rows.parquet")
    message = str(error.value)
    assert f"table {PG_SCHEMA}.no_such_table" in message and "does not exist" in message
    assert database.url not in message
