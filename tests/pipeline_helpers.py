"""Helpers for the tests that run the real pipeline: configs, runs in their own process,
reading the warehouse, and cell-by-cell comparison with the independent reference.

Every run is a subprocess: the pipeline caches its configuration per process (the
RETENTION_PIPELINE_CONFIG variable), exactly as a user's `retention-pipeline run` would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import reference as ref
import yaml
from conftest import POSTGRES_URL, service_unavailable

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CDNOW_MASTER = (ROOT / ".." / "shared" / "data" / "cdnow" / "CDNOW_master.txt").resolve()

# Every column the generator writes, mapped one to one (as config/demo.yaml does, plus the
# e-mail, which needs a PII key in the environment).
ORDER_COLUMNS = (
    "order_id", "customer_id", "ordered_at", "amount", "status", "refunded_amount",
    "currency", "updated_at", "customer_email", "channel",
)  # fmt: skip
PII_KEY = "test-only-pii-key"
# The generator's orders start on 2023-01-01; the partitions start before them.
PARTITIONS_START = "2022-12-01"
WINDOW_DAYS = 90

COHORT_KEYS = list(ref.COHORT_RETENTION_KEYS)
RATE_KEYS = list(ref.RETENTION_RATES_KEYS)
BASE_KEYS = list(ref.CUSTOMER_BASE_DAILY_KEYS)
# Money columns: the pipeline keeps amounts as decimal(18, 4), the reference as floats.
MONEY_COLUMNS = (
    "net_amount",
    "net_revenue",
    "new_revenue",
    "returning_revenue",
    "cumulative_net_revenue",
    "cumulative_revenue_per_customer",
)
# Columns that name a load or the wall-clock time of a run: they differ between runs.
RUN_COLUMNS = frozenset(
    {
        "load_id",
        "load_sequence",
        "loaded_at",
        "rejected_at",
        "started_at",
        "finished_at",
        "fitted_at",
    }
)

# The reason code each kind of the generator's bad rows must end with in rejected_orders;
# exact duplicates and older versions are deduplicated, not rejected.
REASON_OF_BAD_ROW = {
    "empty_customer_id": "missing_customer_id",
    "empty_order_id": "missing_order_id",
    "unparseable_ordered_at": "unparseable_ordered_at",
    "unparseable_amount": "unparseable_amount",
    "negative_amount": "negative_amount",
    "refund_exceeds_amount": "refund_exceeds_amount",
    "future_ordered_at": "future_ordered_at",
    "unknown_currency": "unknown_currency",
    "conflicting_duplicate": "duplicate_conflict",
    "exact_duplicate": None,
    "newer_version": None,
}


# --------------------------------------------------------------------------------------------
# Outside services
# --------------------------------------------------------------------------------------------


def postgres_connection(url: str = POSTGRES_URL):
    """An autocommit psycopg2 connection to the test server, or a skip (a failure in CI)
    that says how to point the tests at one."""
    import psycopg2

    try:
        con = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0]
        service_unavailable(
            f"PostgreSQL is unreachable at {url} ({first_line}); start it or set "
            "RETENTION_TEST_POSTGRES_URL"
        )
    con.autocommit = True
    return con


def drop_postgres_schemas(con, prefix: str) -> None:
    """Drops every schema whose name starts with `prefix` (a test's own names)."""
    cursor = con.cursor()
    cursor.execute("select nspname from pg_namespace where starts_with(nspname, %s)", (prefix,))
    for (name,) in cursor.fetchall():
        cursor.execute(f'drop schema "{name}" cascade')


def read_postgres_table(con, schema: str, table: str) -> pl.DataFrame:
    # Types from every row: a numeric column whose first rows are whole numbers is no integer.
    return pl.read_database(f'select * from "{schema}"."{table}"', con, infer_schema_length=None)


def postgres_table_names(con, schema: str) -> list[str]:
    cursor = con.cursor()
    cursor.execute(
        "select table_name from information_schema.tables where table_schema = %s order by 1",
        (schema,),
    )
    return [name for (name,) in cursor.fetchall()]


# --------------------------------------------------------------------------------------------
# Configs and runs
# --------------------------------------------------------------------------------------------


def write_config(directory: Path, data: str = "orders.csv", **overrides) -> Path:
    """`directory`/config.yaml for the generated orders file `data` (relative to it), with
    the warehouse beside it; top-level keys in `overrides` replace the defaults."""
    config = {
        "source": {
            "type": "file",
            "path": data,
            "format": "csv",
            "columns": {column: column for column in ORDER_COLUMNS},
        },
        "warehouse": {"type": "duckdb", "path": "warehouse.duckdb"},
        "reporting_timezone": "UTC",
        "active_window_days": WINDOW_DAYS,
        "schedule": {"time": "02:00", "partitions_start": PARTITIONS_START},
        **overrides,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_env(config: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a pipeline process: the PII key set, and no DAGSTER_HOME, so that
    each run has its own ephemeral instance (a shared one would queue parallel runs on the
    one-writer pool and keep their history)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DAGSTER_HOME", "RETENTION_PIPELINE_CONFIG")
    }
    env["RETENTION_PII_KEY"] = PII_KEY
    env.update(extra)
    if config is not None:
        env["RETENTION_PIPELINE_CONFIG"] = str(config)
    return env


def _check(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    output = (result.stdout or "")[-4000:] + "\n" + (result.stderr or "")[-4000:]
    assert result.returncode == 0, f"{what} failed (exit {result.returncode}):\n{output}"
    return result


def run_cli(
    config: Path, as_of: date | None = None, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`retention-pipeline run --config FILE [--as-of DATE] [OPTIONS]`, as a user runs it,
    with `env` added to the environment."""
    command = [str(BIN / "retention-pipeline"), "run", "--config", str(config), *options]
    if as_of is not None:
        command += ["--as-of", as_of.isoformat()]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=run_env(**(env or {}))
    )
    return _check(result, " ".join(command[1:]))


# Runs the nightly job in one process, one run per step, the way the schedule (partition_key)
# and a UI backfill of a range as one run (the partition range tags) launch it. After each
# step the warehouse file is copied to the step's snapshot path.
NIGHTLY_SCRIPT = """
import json, shutil, sys
import dagster as dg
from retention_pipeline.definitions import defs
from retention_pipeline.defs.transformation.assets import dbt_ops_config

spec = json.loads(sys.argv[1])
job = defs().resolve_job_def("retention_nightly")
for step in spec["steps"]:
    run_config = {"ops": {
        "raw_orders": {"config": {"lookback_days": step["lookback_days"]}},
        **dbt_ops_config(job, step["as_of"]),
    }}
    result = job.execute_in_process(
        run_config=run_config,
        partition_key=step.get("partition_key"),
        tags=step.get("tags"),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    if not result.success:
        sys.exit(f"step {step} failed")
    shutil.copyfile(spec["warehouse"], step["snapshot"])
"""


def partition_step(day: date, snapshot: Path, lookback_days: int = 3) -> dict:
    """The nightly schedule's run of one day's partition, with `day` as the as-of date."""
    return {
        "partition_key": day.isoformat(),
        "lookback_days": lookback_days,
        "as_of": day.isoformat(),
        "snapshot": str(snapshot),
    }


def backfill_step(first: date, last: date, snapshot: Path) -> dict:
    """A backfill of the days first..last as one run, with `last` as the as-of date."""
    return {
        "tags": {
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        "lookback_days": 0,
        "as_of": last.isoformat(),
        "snapshot": str(snapshot),
    }


def run_nightly_steps(config: Path, warehouse: Path, steps: list[dict]) -> None:
    spec = json.dumps({"warehouse": str(warehouse), "steps": steps})
    run_script(NIGHTLY_SCRIPT, spec, config=config, what=f"the nightly job ({len(steps)} runs)")


def run_script(
    script: str, *args: str, config: Path, what: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`script` run by this Python with `args`, in a pipeline process of `config` (run_env)
    with `env` added; fails the test, naming `what`, when it fails."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=run_env(config, **(env or {})),
    )
    return _check(result, what)


def copy_run_directory(source: Path, target: Path) -> Path:
    """A copy of a run's directory (data, config and the warehouse it built)."""
    shutil.copytree(source, target)
    return target


# --------------------------------------------------------------------------------------------
# Reading the warehouse
# --------------------------------------------------------------------------------------------


def read_table(warehouse: Path, table: str) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return pl.from_arrow(con.sql(f"select * from {table}").to_arrow_table())


def as_of_of(warehouse: Path) -> date:
    """The as-of date the warehouse was built with."""
    return read_table(warehouse, "intermediate.int_run__as_of").item()


def mart_names(warehouse: Path) -> list[str]:
    """Every table and view BI can read (schema main)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select table_name from information_schema.tables "
            "where table_schema = 'main' order by table_name"
        ).fetchall()
    return [name for (name,) in rows]


def columns_holding(warehouse: Path, pattern: str) -> list[str]:
    """Every text column, in every schema of the warehouse, with a value LIKE `pattern`."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type = 'VARCHAR'"
        ).fetchall()
        return [
            f"{schema}.{table}.{column}"
            for schema, table, column in columns
            if con.execute(
                f'select count(*) from "{schema}"."{table}" where "{column}" like ?', [pattern]
            ).fetchone()[0]
        ]


def mart_snapshot(warehouse: Path, exclude: tuple[str, ...] = ("load_audit",)) -> dict:
    """Every mart as a frame sorted on all its columns, without the run columns (load ids,
    wall-clock times): what must not change when the same data is loaded again."""
    snapshot = {}
    for name in mart_names(warehouse):
        if name in exclude:
            continue
        frame = read_table(warehouse, name)
        snapshot[name] = sorted_rows(frame.drop([c for c in frame.columns if c in RUN_COLUMNS]))
    return snapshot


def sorted_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in one order: views (the wide cohort pivot) have none of their own."""
    return frame.sort(frame.columns, nulls_last=True)


def assert_same_marts(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected), "the two warehouses have different marts"
    for name, want in expected.items():
        got = actual[name]
        assert got.columns == want.columns, f"{name}: columns differ"
        assert got.height == want.height, f"{name}: {got.height} rows, expected {want.height}"
        floats = [c for c, t in want.schema.items() if t.is_float()]
        exact = [c for c in want.columns if c not in floats]
        differing = [c for c in exact if not got[c].equals(want[c])]
        for column in floats:
            a, b = got[column], want[column]
            close = (a.is_null() & b.is_null()) | (
                (a - b).abs() <= 1e-12 * pl.max_horizontal(a.abs(), b.abs(), pl.lit(1.0))
            ).fill_null(False)
            if not pl.select(close).to_series().all():
                differing.append(column)
        assert not differing, f"{name}: columns {differing} differ"


# --------------------------------------------------------------------------------------------
# The same marts on another engine
# --------------------------------------------------------------------------------------------

# Floats (rates, CLV predictions) may differ in the last bits between engines.
ENGINE_RELATIVE_TOLERANCE = 1e-9


def mart_differences(
    duckdb_warehouse: Path, engine: str, read_mart: Callable[[str], pl.DataFrame]
) -> list[str]:
    """What differs between every mart of the DuckDB warehouse and the same mart on
    `engine`, as `read_mart(name)` reads it: columns, row counts, or the columns whose
    cells differ (run columns left out, floats to ENGINE_RELATIVE_TOLERANCE)."""
    return [
        problem
        for table in mart_names(duckdb_warehouse)
        if (
            problem := table_differences(
                table, read_table(duckdb_warehouse, table), read_mart(table), ("DuckDB", engine)
            )
        )
    ]


def table_differences(
    table: str, expected: pl.DataFrame, actual: pl.DataFrame, labels: tuple[str, str]
) -> str | None:
    """What differs between two versions of `table`, labelled `labels` in the message (see
    mart_differences), or None."""
    expected, actual = _comparable(expected), _comparable(actual)
    if expected.columns != actual.columns:
        return f"{table}: columns {expected.columns} != {actual.columns}"
    if expected.height != actual.height:
        return f"{table}: {expected.height} rows in {labels[0]}, {actual.height} in {labels[1]}"
    if differing := _differing_columns(expected, actual):
        return f"{table}: columns {differing} differ"
    return None


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """Without the columns of a run (load ids, wall-clock times); decimals (numeric on
    PostgreSQL, decimal(18, 4) in DuckDB, wider ones from Spark's arithmetic) as floats
    and integers (int or bigint by engine) as Int64; sorted."""
    frame = frame.drop([c for c in frame.columns if c in RUN_COLUMNS])
    frame = frame.with_columns(
        [
            pl.col(c).cast(pl.Float64 if isinstance(t, pl.Decimal) else pl.Int64)
            for c, t in frame.schema.items()
            if isinstance(t, pl.Decimal) or t.is_integer()
        ]
    )
    return sorted_rows(frame)


def _differing_columns(duck: pl.DataFrame, other: pl.DataFrame) -> list[str]:
    differing = []
    for column in duck.columns:
        a, b = duck[column], other[column]
        if a.dtype == pl.Null or b.dtype == pl.Null:
            a, b = a.cast(pl.String), b.cast(pl.String)  # a column with no values
        if a.dtype.is_float():
            both = pl.DataFrame({"a": a, "b": b})
            same = both.select(
                (pl.col("a").is_null() & pl.col("b").is_null())
                | (pl.col("a") == pl.col("b")).fill_null(False)
                | (
                    (pl.col("a") - pl.col("b")).abs()
                    <= ENGINE_RELATIVE_TOLERANCE
                    * pl.max_horizontal(pl.col("a").abs(), pl.col("b").abs())
                ).fill_null(False)
            )
            if not same.to_series().all():
                differing.append(column)
        elif a.dtype != b.dtype or not a.equals(b):
            differing.append(column)
    return differing


# --------------------------------------------------------------------------------------------
# The reference side
# --------------------------------------------------------------------------------------------


def read_raw_orders(path: Path) -> pl.DataFrame:
    """A generated CSV, every column as text (the reference parses them itself)."""
    return pl.read_csv(path, infer_schema=False)


def csv_data_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1


def without_future_orders(raw: pl.DataFrame, now: datetime | None = None) -> pl.DataFrame:
    """The raw rows without those dated more than a day after now: the pipeline quarantines
    them (future_ordered_at, default tolerance 24 hours), a rule the reference leaves out."""
    horizon = (now or datetime.now(UTC)).replace(tzinfo=None) + timedelta(hours=24)
    ordered_at = pl.col("ordered_at").str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False)
    return raw.filter(ordered_at.is_null() | (ordered_at <= horizon))


def reference_orders(
    raw: pl.DataFrame, as_of: date | None = None, keep_ordered_at: bool = False
) -> pl.DataFrame:
    return ref.valid_orders_from_raw(
        without_future_orders(raw), as_of=as_of, keep_ordered_at=keep_ordered_at
    )


def assert_same_cells(
    actual: pl.DataFrame, expected: pl.DataFrame, keys: list[str], what: str = ""
) -> None:
    """Every key on both sides, and every other column equal: counts, dates and flags
    exactly, rates to 1e-9 relative, money (decimal(18, 4) in the warehouse) to 1e-6."""
    missing_columns = [c for c in expected.columns if c not in actual.columns]
    assert not missing_columns, f"{what}: the pipeline has no column(s) {missing_columns}"
    actual = actual.select(expected.columns).cast(dict(expected.schema))
    assert actual.select(keys).is_duplicated().sum() == 0, f"{what}: duplicate keys"
    missing = expected.join(actual, on=keys, how="anti")
    extra = actual.join(expected, on=keys, how="anti")
    assert missing.is_empty(), f"{what}: {missing.height} rows missing, e.g.\n{missing.head(10)}"
    assert extra.is_empty(), f"{what}: {extra.height} rows the reference lacks:\n{extra.head(10)}"
    both = expected.join(actual, on=keys, suffix="_actual")
    failures = []
    for column in expected.columns:
        if column in keys:
            continue
        want, got = pl.col(column), pl.col(f"{column}_actual")
        if expected.schema[column] == pl.Float64:
            if column in MONEY_COLUMNS:
                close = (want - got).abs() <= 1e-6
            else:
                close = (want - got).abs() <= 1e-9 * pl.max_horizontal(want.abs(), pl.lit(1e-300))
            same = (want.is_null() & got.is_null()) | close.fill_null(False)
        else:
            same = want.eq_missing(got)
        wrong = both.filter(~same)
        if wrong.height:
            failures.append(
                f"{column} differs in {wrong.height} of {both.height} rows, e.g.\n"
                f"{wrong.select(*keys, column, f'{column}_actual').head(8)}"
            )
    assert not failures, f"{what}:\n" + "\n".join(failures)


def assert_marts_match_reference(warehouse: Path, orders: pl.DataFrame, as_of: date) -> None:
    """cohort_retention, retention_rates and customer_base_daily against the reference for
    the valid `orders`, grain by grain, and fct_orders / dim_customers against the orders."""
    fct = read_table(warehouse, "fct_orders")
    assert sorted(fct["order_id"]) == sorted(orders["order_id"])
    dim = read_table(warehouse, "dim_customers")
    assert sorted(dim["customer_id"]) == sorted(orders["customer_id"].unique())
    cohorts = read_table(warehouse, "cohort_retention")
    expected = ref.cohort_retention(orders, as_of)
    for grain in ref.COHORT_GRAINS:
        assert_same_cells(
            cohorts.filter(pl.col("grain") == grain),
            expected.filter(pl.col("grain") == grain),
            COHORT_KEYS,
            f"cohort_retention, {grain}",
        )
    rates = read_table(warehouse, "retention_rates")
    expected = ref.retention_rates(orders, as_of, WINDOW_DAYS)
    for grain in ref.RATE_GRAINS:
        assert_same_cells(
            rates.filter(pl.col("grain") == grain),
            expected.filter(pl.col("grain") == grain),
            RATE_KEYS,
            f"retention_rates, {grain}",
        )
    assert_same_cells(
        read_table(warehouse, "customer_base_daily"),
        ref.customer_base_daily(orders, as_of, WINDOW_DAYS),
        BASE_KEYS,
        "customer_base_daily",
    )
