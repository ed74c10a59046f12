"""The dbt models on Spark give the same marts as on DuckDB, cell by cell.

One generated shop runs through the pipeline into DuckDB. Its raw layer (every table of
the schema raw) goes to Parquet with DuckDB's COPY; dbt-spark's session method, on the
local PySpark and this machine's JDK, registers those files as the sources' tables
(macros/spark.sql, the var raw_parquet_dir) and builds every model with the vars the
pipeline passed, and the same process reads every mart back from Spark.

The build runs the models and every data test (keys, relationships, the column rules of
column_values and the metric identities), which must pass on Spark as they do on DuckDB.
Then rows breaking two of fct_orders' column rules are appended, and its column_values
test must fail on Spark with a row per broken rule, so the passes above come from tests
that can fail there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import service_unavailable
from pipeline_helpers import (
    ROOT,
    mart_differences,
    mart_names,
    run_cli,
    run_script,
    write_config,
)

from retention_pipeline.lib.generate import generate_orders, write_orders

CUSTOMERS = 120
SEED = 23
AS_OF = date(2025, 12, 31)
# The Spark schema of the marts: the spark target's default (profiles.yml).
SPARK_SCHEMA = "retention"
DBT_PROJECT = ROOT / "dbt_project"

# The vars the pipeline's dbt step passes (dbt_vars), for this process's config, and the
# as-of date (which the pipeline passes in the environment).
DBT_VARS_SCRIPT = """
import json, sys
from retention_pipeline.defs.transformation.assets import dbt_vars
print(json.dumps({**dbt_vars(), "as_of": sys.argv[1]}))
"""

# dbt build on the spark target, then every table and view of the marts' schema written to
# <out>/<name>.parquet through the Spark session dbt built them in (one JVM start, not two).
# Last, copies of a few fct_orders rows with a null order_date and a negative net_amount
# are appended, and its column_values test runs with --store-failures: its status, failure
# count and stored rows go to <work>/broken_rules.json.
SPARK_BUILD_SCRIPT = """
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
from dbt.cli.main import dbtRunner
from pyspark.sql import SparkSession, functions as F

project, dbt_vars, work, schema, broken_orders = sys.argv[1:]
work = Path(work)
def dbt(*args):
    return dbtRunner().invoke([
        *args, "--target", "spark",
        "--project-dir", project, "--profiles-dir", project,
        "--target-path", str(work / "dbt-target"), "--log-path", str(work / "dbt-logs"),
        "--vars", dbt_vars,
    ])
result = dbt("build", "--exclude-resource-type", "unit_test")
if not result.success:
    sys.exit(f"dbt build on Spark failed: {result.exception or 'see the log above'}")
spark = SparkSession.builder.getOrCreate()  # the session the build ran in
out = work / "marts"
out.mkdir()
for table in spark.catalog.listTables(schema):
    pq.write_table(spark.table(f"{schema}.{table.name}").toArrow(), out / f"{table.name}.parquet")

orders = spark.table(f"{schema}.fct_orders")
broken = spark.createDataFrame(orders.limit(int(broken_orders)).collect(), orders.schema)
broken = broken.withColumn("order_date", F.lit(None).cast("date")).withColumn(
    "net_amount", F.lit(-5).cast(orders.schema["net_amount"].dataType)
)
broken.write.insertInto(f"{schema}.fct_orders")
test = "column_values_fct_orders"
result = dbt("test", "--select", test, "--store-failures")
(outcome,) = [r for r in result.result.results if r.node.name == test]
stored = spark.table(f"{outcome.node.schema}.{outcome.node.alias}").collect()
(work / "broken_rules.json").write_text(json.dumps({
    "status": str(outcome.status),
    "failures": outcome.failures,
    "rows": sorted([r.column_name, r.rule, r.failing_rows] for r in stored),
}))
"""
BROKEN_ORDERS = 3


@dataclass(frozen=True)
class SparkRun:
    duckdb: Path
    marts: Path  # one Parquet file per mart, as read from Spark
    broken_rules: dict  # column_values_fct_orders on Spark, after rows broke two rules

    def mart_names(self) -> list[str]:
        return sorted(path.stem for path in self.marts.glob("*.parquet"))

    def read_mart(self, name: str) -> pl.DataFrame:
        return pl.read_parquet(self.marts / f"{name}.parquet")


def _require_spark() -> None:
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        service_unavailable("Spark needs a JDK: no java on PATH and JAVA_HOME is unset")
    if importlib.util.find_spec("pyspark") is None:
        service_unavailable("pyspark is not installed (`make install` installs the dev extra)")


def _export_raw_layer(warehouse: Path, directory: Path) -> None:
    """Every table of the schema raw as <directory>/<table>/part-0.parquet."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "select table_name from information_schema.tables where table_schema = 'raw'"
        ).fetchall()
        for (table,) in tables:
            (directory / table).mkdir(parents=True)
            target = directory / table / "part-0.parquet"
            con.execute(f"copy raw.{table} to '{target}' (format parquet)")


@pytest.fixture(scope="module")
def spark_run(tmp_path_factory) -> SparkRun:
    _require_spark()
    directory = tmp_path_factory.mktemp("spark")
    write_orders(generate_orders(customers=CUSTOMERS, seed=SEED), directory / "orders.csv")
    config = write_config(directory)
    run_cli(config, AS_OF)
    warehouse = directory / "warehouse.duckdb"
    _export_raw_layer(warehouse, directory / "raw_parquet")

    printed = run_script(DBT_VARS_SCRIPT, AS_OF.isoformat(), config=config, what="dbt_vars")
    dbt_vars = {
        **json.loads(printed.stdout.strip().splitlines()[-1]),
        "raw_parquet_dir": str(directory / "raw_parquet"),
    }
    run_script(
        SPARK_BUILD_SCRIPT,
        str(DBT_PROJECT),
        json.dumps(dbt_vars),
        str(directory),
        SPARK_SCHEMA,
        str(BROKEN_ORDERS),
        config=config,
        what="dbt build on Spark",
        env={"RETENTION_SPARK_DIR": str(directory / "spark")},
    )
    broken_rules = json.loads((directory / "broken_rules.json").read_text())
    return SparkRun(warehouse, directory / "marts", broken_rules)


def test_the_same_marts_are_built_on_spark(spark_run):
    duck = mart_names(spark_run.duckdb)
    assert spark_run.mart_names() == duck
    assert {"fct_orders", "cohort_retention", "retention_rates", "customer_ltv"} <= set(duck)


def test_every_cell_of_every_mart_is_the_same_on_duckdb_and_spark(spark_run):
    problems = mart_differences(spark_run.duckdb, "Spark", spark_run.read_mart)
    assert not problems, "\n".join(problems)


def test_a_broken_column_rule_fails_its_test_on_spark(spark_run):
    assert spark_run.broken_rules == {
        "status": "fail",
        "failures": 2,
        "rows": [
            ["net_amount", "value_between", BROKEN_ORDERS],
            ["order_date", "not_null", BROKEN_ORDERS],
        ],
    }
