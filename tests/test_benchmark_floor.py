"""The benchmark's engine floor computes what the pipeline computes: every cell of its
headline tables equals the pipeline's marts built from the same generated Parquet file, so
the benchmark's ratio compares like with like."""

from __future__ import annotations

import duckdb
import polars as pl
import polars.selectors as cs
import pytest
from pipeline_helpers import assert_same_cells, read_table, run_cli, write_config

from benchmarks.floor import HEADLINE_TABLES, compute_floor
from retention_pipeline.lib.config import load_config
from retention_pipeline.lib.generate import GENERATED_COLUMNS, generate_orders, write_orders


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The pipeline's warehouse and the floor's tables, from the same 3,000 customers."""
    directory = tmp_path_factory.mktemp("floor")
    write_orders(generate_orders(customers=3_000, seed=11), directory / "orders.parquet")
    # The benchmark's source: every generated column but the email.
    columns = {c: c for c in GENERATED_COLUMNS if c != "customer_email"}
    source = {"type": "file", "path": "orders.parquet", "columns": columns}
    config = write_config(directory, source=source)
    run_cli(config)
    with duckdb.connect() as con:
        compute_floor(con, directory / "orders.parquet", load_config(config))
        floor = {
            table: pl.from_arrow(con.sql(f"select * from {table}").to_arrow_table()).with_columns(
                cs.decimal().cast(pl.Float64), cs.integer().cast(pl.Int64)
            )
            for table in HEADLINE_TABLES
        }
    return directory / "warehouse.duckdb", floor


def test_the_floor_builds_cohort_retention(built):
    warehouse, floor = built
    expected = floor["cohort_retention"]
    assert expected.height > 1_000
    assert_same_cells(
        read_table(warehouse, "cohort_retention"),
        expected,
        ["grain", "cohort_start", "period_number"],
        "cohort_retention",
    )


def test_the_floor_builds_the_activity_retention_rates(built):
    warehouse, floor = built
    rates = read_table(warehouse, "retention_rates").filter(base="activity")
    assert_same_cells(rates, floor["retention_rates"], ["grain", "period_start"], "retention_rates")


def test_the_floor_builds_customer_base_daily(built):
    warehouse, floor = built
    expected = floor["customer_base_daily"]
    assert expected["reactivated_customers"].sum() > 0 and expected["churned_customers"].sum() > 0
    assert_same_cells(
        read_table(warehouse, "customer_base_daily"),
        expected,
        ["activity_date"],
        "customer_base_daily",
    )


def test_the_floor_builds_the_kpis(built):
    warehouse, floor = built
    kpis = floor["kpis"]
    assert_same_cells(
        read_table(warehouse, "kpi_daily"),
        kpis.filter(grain="day").drop("grain").rename({"period_start": "activity_date"}),
        ["activity_date"],
        "kpi_daily",
    )
    assert_same_cells(
        read_table(warehouse, "kpi_periodic"),
        kpis.filter(pl.col("grain") != "day"),
        ["grain", "period_start"],
        "kpi_periodic",
    )
