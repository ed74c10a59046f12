"""The whole pipeline against the engine floor, on generated orders.

The floor is one DuckDB query computing the monthly cohort counts from the same Parquet
file, timed in the same run, so the ratio survives a noisy machine. The fixed overhead
(process and dbt start-up, one step per node) is the pipeline's time on a tiny shop, also
timed in the same run; the target is pipeline <= 3 x floor + fixed, with fixed < 30 s.
Usage:

    python -m benchmarks.pipeline [--orders 1000000 10000000] [--repeats 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
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


if __name__ == "__main__":
    main()
