"""The whole pipeline against the engine floor, on generated orders.

The floor is one DuckDB query computing the monthly cohort counts from the same Parquet
file, timed in the same run, so the ratio survives a noisy machine. The fixed overhead
(process and dbt start-up, one step per node) is the pipeline's time on a tiny shop, also
timed in the same run; the target is pipeline <= 3 x floor + fixed, with fixed < 30 s.
Then it extracts a 5M-row PostgreSQL table (a database source, read whole) and reports its
peak memory, which must stay under 1 GiB: extraction streams in batches.
Usage:

    python -m benchmarks.pipeline [--orders 1000000 10000000] [--repeats 3]
    python -m benchmarks.pipeline --db-extract-only [--db-rows 5000000]
    python -m benchmarks.pipeline --clv [--customers 1000000]   # the CLV fit alone
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

from retention_pipeline.lib.generate import GENERATED_COLUMNS, generate_orders, write_orders

# The PostgreSQL database of the extraction benchmark, and its table (made once, kept).
DB_URL_ENV = "RETENTION_BENCH_POSTGRES_URL"
DB_URL = os.environ.get(DB_URL_ENV, "postgresql://postgres@127.0.0.1:5432/test")
DB_SCHEMA = "retention_bench"
DB_ROWS = 5_000_000
DB_MEMORY_LIMIT_GIB = 1.0
# One extraction, in a process of its own. It reports its own peak memory (VmHWM, which exec
# resets): ru_maxrss would also count the benchmark's memory at the fork.
EXTRACT_SCRIPT = """
import re, sys, time
from pathlib import Path
from retention_pipeline.lib.config import parse_config
from retention_pipeline.lib.database import extract_to_parquet
source = {"type": "postgres", "url_env": sys.argv[1], "table": sys.argv[2],
          "columns": {c: c for c in sys.argv[3].split(",")}}
config = parse_config({"source": source}, Path("."))
started = time.perf_counter()
rows = extract_to_parquet(config, None, Path(sys.argv[4]))
seconds = time.perf_counter() - started
peak_kib = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(rows, seconds, peak_kib)
"""

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "bench"
ORDERS_PER_CUSTOMER = 3.1  # what the generator yields on average
TINY_SHOP_ORDERS = 1_000

FLOOR_QUERY = """
with orders as (
    select
        customer_id,
        cast(cast(ordered_at as timestamp) as date) as order_date
    from read_parquet($path)
    where customer_id <> ''
        and lower(status) not in ('cancelled', 'canceled', 'failed', 'voided', 'fraud', 'test')
        and try_cast(amount as double) - coalesce(try_cast(refunded_amount as double), 0) > 0
        and try_cast(ordered_at as timestamp) is not null
),
cohorts as (
    select customer_id, date_trunc('month', min(order_date)) as cohort_month
    from orders group by customer_id
)
select cohorts.cohort_month, date_trunc('month', orders.order_date) as period_month,
    count(distinct orders.customer_id) as customers
from orders inner join cohorts on orders.customer_id = cohorts.customer_id
group by 1, 2
"""


def _dataset(orders: int) -> Path:
    path = WORK / f"orders-{orders}.parquet"
    if not path.exists():
        frame = generate_orders(customers=round(orders / ORDERS_PER_CUSTOMER), seed=7)
        write_orders(frame, path)
    return path


def _config(orders: int, data: Path) -> Path:
    config = {
        "source": {
            "type": "file",
            "path": data.name,
            # Every order column but the email, which would need RETENTION_PII_KEY.
            "columns": {c: c for c in GENERATED_COLUMNS if c != "customer_email"},
        },
        "warehouse": {"type": "duckdb", "path": f"warehouse-{orders}.duckdb"},
        "schedule": {"partitions_start": "2023-01-01"},
    }
    path = WORK / f"config-{orders}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _floor_seconds(data: Path) -> float:
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    started = time.perf_counter()
    con.execute(FLOOR_QUERY, {"path": str(data)}).fetchall()
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def _pipeline_seconds(config: Path) -> float:
    (WORK / config.name.replace("config-", "warehouse-").replace(".yaml", ".duckdb")).unlink(
        missing_ok=True
    )
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "retention-pipeline"), "run", "--config", str(config)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DAGSTER_HOME": ""},
    )
    return time.perf_counter() - started


def _medians(orders: int, repeats: int) -> tuple[float, float]:
    """Median floor and pipeline seconds, runs interleaved so both see the same noise."""
    data = _dataset(orders)
    config = _config(orders, data)
    floors, runs = [], []
    for _ in range(repeats):
        floors.append(_floor_seconds(data))
        runs.append(_pipeline_seconds(config))
    return statistics.median(floors), statistics.median(runs)


def _db_table(rows: int) -> str:
    """A PostgreSQL table of about `rows` generated orders (typed columns), made once."""
    import psycopg2

    table = f"{DB_SCHEMA}.orders_{rows}"
    with psycopg2.connect(DB_URL) as con, con.cursor() as cur:
        cur.execute(f"create schema if not exists {DB_SCHEMA}")
        cur.execute("select to_regclass(%s) is not null", [table])
        if cur.fetchone()[0]:
            return table
        data = WORK / f"db-orders-{rows}.csv"
        frame = generate_orders(customers=round(rows / ORDERS_PER_CUSTOMER), seed=7, bad_rows=False)
        write_orders(frame, data)
        del frame
        typed = {"ordered_at": "timestamp", "updated_at": "timestamp", "amount": "numeric(12, 2)",
                 "refunded_amount": "numeric(12, 2)"}  # fmt: skip
        columns = ", ".join(f"{c} {typed.get(c, 'text')}" for c in GENERATED_COLUMNS)
        cur.execute(f"create table {table} ({columns})")
        with data.open() as handle:
            names = ", ".join(GENERATED_COLUMNS)
            copy = f"copy {table} ({names}) from stdin with (format csv, header true)"
            cur.copy_expert(copy, handle)
        data.unlink()
    con.close()
    return table


def _db_extract(rows: int) -> None:
    """Extracts the table whole, as a first run or a full re-sync does, and prints the time
    and the peak resident memory of the extracting process."""
    table = _db_table(rows)
    spill = WORK / "db-extract.parquet"
    result = subprocess.run(
        [sys.executable, "-c", EXTRACT_SCRIPT, DB_URL_ENV, table, ",".join(GENERATED_COLUMNS),
         str(spill)],
        capture_output=True,
        env={**os.environ, DB_URL_ENV: DB_URL},
        text=True,
        check=True,
    )  # fmt: skip
    extracted, seconds, peak_kib = result.stdout.split()
    spill.unlink()
    peak = int(peak_kib) / 2**20
    within = "yes" if peak < DB_MEMORY_LIMIT_GIB else "no"
    print("| source rows | extraction (s) | peak RSS (GiB) | under 1 GiB |")
    print("|---|---|---|---|")
    print(f"| {int(extracted):,} (PostgreSQL) | {float(seconds):.1f} | {peak:.2f} | {within} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db-rows", type=int, default=DB_ROWS)
    parser.add_argument(
        "--db-extract-only", action="store_true", help="only the database extraction benchmark"
    )
    parser.add_argument(
        "--clv", action="store_true", help="only the CLV benchmark (benchmarks/clv.py)"
    )
    parser.add_argument("--no-clv", action="store_true", help="leave the CLV benchmark out")
    args, rest = parser.parse_known_args()
    if not args.no_clv and not args.db_extract_only:
        from benchmarks import clv

        sys.argv = [sys.argv[0], *rest]
        clv.main()
        if args.clv:
            return
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    if args.db_extract_only:
        _db_extract(args.db_rows)
        return
    _, fixed = _medians(TINY_SHOP_ORDERS, args.repeats)
    print(f"fixed overhead (pipeline on {TINY_SHOP_ORDERS:,} orders): {fixed:.1f} s")
    print(
        "| orders | floor median (s) | pipeline median (s) | (pipeline - fixed) / floor "
        "| within 3x floor + fixed | peak RSS (GiB) |"
    )
    print("|---|---|---|---|---|---|")
    for orders in args.orders:
        floor, run = _medians(orders, args.repeats)
        # ru_maxrss of waited-for children: the largest single process so far (KiB on Linux).
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        within = "yes" if run <= 3 * floor + fixed else "no"
        print(
            f"| {orders:,} | {floor:.2f} | {run:.1f} | {(run - fixed) / floor:.1f}x "
            f"| {within} | {peak:.2f} |"
        )
    _db_extract(args.db_rows)


if __name__ == "__main__":
    main()
