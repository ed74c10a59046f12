"""The PostgreSQL warehouse: the same generated orders built on DuckDB and on PostgreSQL
(dbt-postgres, the raw layer landed with COPY) give the same marts, cell by cell."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from pipeline_helpers import (
    POSTGRES_URL,
    RUN_COLUMNS,
    drop_postgres_schemas,
    mart_names,
    postgres_connection,
    postgres_table_names,
    read_postgres_table,
    read_table,
    run_cli,
    write_config,
)

from retention_pipeline.lib.generate import generate_orders, write_orders

CUSTOMERS = 300
SEED = 23
# The config names this variable; the test sets it to the test server's URL.
URL_ENV = "RETENTION_TEST_WAREHOUSE_URL"
RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Warehouses:
    duckdb: Path
    schema: str  # the PostgreSQL warehouse's schema


@pytest.fixture(scope="module")
def pg():
    con = postgres_connection()
    yield con
    con.close()


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory, pg) -> Warehouses:
    """One generated shop, run once into a DuckDB file and once into PostgreSQL (a schema
    of this test's own, dropped afterwards)."""
    directory = tmp_path_factory.mktemp("postgres_warehouse")
    write_orders(generate_orders(customers=CUSTOMERS, seed=SEED), directory / "orders.csv")
    schema = f"test_pgwh_{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(URL_ENV, POSTGRES_URL)
        for name, warehouse in [
            ("duckdb", {"type": "duckdb", "path": "warehouse.duckdb"}),
            ("postgres", {"type": "postgres", "url_env": URL_ENV, "schema": schema}),
        ]:
            (directory / name).mkdir()
            run_cli(write_config(directory / name, data="../orders.csv", warehouse=warehouse))
        yield Warehouses(directory / "duckdb" / "warehouse.duckdb", schema)
    drop_postgres_schemas(pg, schema)


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """Without the columns of a run (load ids, wall-clock times); decimals (numeric on
    PostgreSQL, decimal(18, 4) in DuckDB) as floats and integers as Int64; sorted."""
    frame = frame.drop([c for c in frame.columns if c in RUN_COLUMNS])
    frame = frame.with_columns(
        [
            pl.col(c).cast(pl.Float64 if isinstance(t, pl.Decimal) else pl.Int64)
            for c, t in frame.schema.items()
            if isinstance(t, pl.Decimal) or t.is_integer()
        ]
    )
    return frame.sort(frame.columns, nulls_last=True)


def _differing_columns(duck: pl.DataFrame, pg: pl.DataFrame) -> list[str]:
    differing = []
    for column in duck.columns:
        a, b = duck[column], pg[column]
        if a.dtype == pl.Null or b.dtype == pl.Null:
            a, b = a.cast(pl.String), b.cast(pl.String)  # a column with no values
        if a.dtype.is_float():
            both = pl.DataFrame({"a": a, "b": b})
            same = both.select(
                (pl.col("a").is_null() & pl.col("b").is_null())
                | (pl.col("a") == pl.col("b")).fill_null(False)
                | (
                    (pl.col("a") - pl.col("b")).abs()
                    <= RELATIVE_TOLERANCE * pl.max_horizontal(pl.col("a").abs(), pl.col("b").abs())
                ).fill_null(False)
            )
            if not same.to_series().all():
                differing.append(column)
        elif a.dtype != b.dtype or not a.equals(b):
            differing.append(column)
    return differing


def test_the_same_marts_are_built(warehouses, pg):
    duck = mart_names(warehouses.duckdb)
    assert duck == postgres_table_names(pg, warehouses.schema)
    assert {"fct_orders", "cohort_retention", "retention_rates", "customer_segments"} <= set(duck)


def test_every_cell_of_every_mart_is_the_same_on_duckdb_and_postgres(warehouses, pg):
    problems = []
    for table in mart_names(warehouses.duckdb):
        duck = _comparable(read_table(warehouses.duckdb, table))
        post = _comparable(read_postgres_table(pg, warehouses.schema, table))
        if duck.columns != post.columns:
            problems.append(f"{table}: columns {duck.columns} != {post.columns}")
        elif duck.height != post.height:
            problems.append(f"{table}: {duck.height} rows on DuckDB, {post.height} on PostgreSQL")
        elif differing := _differing_columns(duck, post):
            problems.append(f"{table}: columns {differing} differ")
    assert not problems, "\n".join(problems)


def test_the_raw_layer_lands_in_the_warehouse_schemas_raw_schema(warehouses, pg):
    duck = read_table(warehouses.duckdb, "raw.orders")
    post = read_postgres_table(pg, f"{warehouses.schema}_raw", "orders")
    assert post.height == duck.height > 0
    # Emails are hashed in SQL on both: the same HMAC-SHA256, never the clear address.
    hashes = "customer_email_hash"
    assert sorted(post[hashes].drop_nulls()) == sorted(duck[hashes].drop_nulls())
    assert not post[hashes].drop_nulls().str.contains("@").any()
    for table in ("rejected_orders", "load_audit", "fx_rates", "marketing_spend"):
        assert read_postgres_table(pg, f"{warehouses.schema}_raw", table).height == (
            read_table(warehouses.duckdb, f"raw.{table}").height
        ), table
