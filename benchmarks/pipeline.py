"""The benchmark of record: the whole pipeline against the engine floor, on generated orders.

For each size (1M and 10M orders by default, 100M with --include-100m), in the same run and
interleaved so all see the same noise:

- the engine floor (benchmarks/floor.py): the fewest DuckDB statements computing SPEC's
  headline tables from the same Parquet file; the floor of cohort_retention and
  retention_rates alone, as earlier records measured it, is timed in the same run;
- the full build: `retention-pipeline run` on a new warehouse, with the wall time and peak
  memory of each Dagster step (times from the run's event log, memory sampled from the run's
  process tree) and dbt's time per model;
- the nightly run: one new day of orders beside the history, then what the schedule runs;
- the disk of each run: the warehouse file, DuckDB's spill beside it and the published copy,
  sampled with the memory, against what the run's free-disk check asks (lib/disk.py);
- the CLV fit (benchmarks/clv.py's) on the summary of the built history.

The fixed overhead (process and dbt start-up, one step per node) is the full build of a tiny
shop. Targets: full build <= 2 x floor + fixed; nightly < 5% of the full build; at 100M under
10 minutes and 8 GiB. Then it extracts a 5M-row PostgreSQL table (a database source, read
whole) and reports its peak memory, which must stay under 1 GiB: extraction streams.
Usage:

    python -m benchmarks.pipeline [--orders 1000000 10000000] [--include-100m] [--repeats 3]
    python -m benchmarks.pipeline --db-extract-only [--db-rows 5000000]
    python -m benchmarks.pipeline --clv [--customers 1000000]   # the CLV fit alone
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import psutil
import yaml
from dagster._core.instance.ref import InstanceRef

from benchmarks import clv
from benchmarks.floor import FloorTimes, compute_floor
from retention_pipeline.lib.clv.summary import OrderHistory
from retention_pipeline.lib.config import load_config
from retention_pipeline.lib.disk import disk_in_use
from retention_pipeline.lib.generate import GENERATED_COLUMNS, generate_orders, write_orders
from retention_pipeline.lib.warehouse import DuckDBSession, spill_folder

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
HUNDRED_MILLION = 100_000_000
SAMPLE_SECONDS = 0.2  # how often the run's process tree is measured
SLOWEST_SHOWN = 8  # dbt models listed per size
CHUNK_ORDERS = 10_000_000  # generated at a time
# The nightly run of one day, in a process of its own, as the schedule would start it.
NIGHTLY_SCRIPT = """
import sys
from datetime import date
from pathlib import Path
from retention_pipeline.lib.runner import run_nightly
sys.exit(0 if run_nightly(Path(sys.argv[1]), date.fromisoformat(sys.argv[2])).success else 1)
"""


@dataclass
class Run:
    """One profiled pipeline run: its wall time, its process tree's peak resident memory,
    and per Dagster step the seconds (from the run's event log) and the peak memory."""

    seconds: float
    peak_gib: float
    steps: dict[str, tuple[float, float]]
    dbt_models: dict[str, float]
    disk_at_start_gb: float  # the installation's files (warehouse, spill, published copy)
    peak_disk_gb: float
    disk_at_end_gb: float


def _dataset(orders: int) -> Path:
    """The generated history of `orders` orders, as a glob of Parquet files in a folder the
    config reads whole, so that the nightly benchmark can add a day's file beside it. Sizes
    past `CHUNK_ORDERS` are generated a chunk at a time (the generator holds its frame in
    memory), each chunk with customers and orders of its own."""
    folder = WORK / f"orders-{orders}"
    complete = folder / "complete"
    if not complete.exists():
        shutil.rmtree(folder, ignore_errors=True)
        chunks = max(1, round(orders / CHUNK_ORDERS))
        for chunk in range(chunks):
            customers = round(orders / chunks / ORDERS_PER_CUSTOMER)
            frame = generate_orders(customers=customers, seed=7 + chunk)
            if chunk:
                # Empty ids stay empty: they are the generator's bad rows.
                frame = frame.with_columns(
                    pl.when(pl.col(c) != "")
                    .then(pl.format("{}-{}", chunk, pl.col(c)))
                    .otherwise(pl.col(c))
                    .alias(c)
                    for c in ("order_id", "customer_id", "customer_email")
                )
            write_orders(frame, folder / f"history-{chunk:03d}.parquet")
        complete.touch()
    return folder / "history-*.parquet"


def _config(orders: int, data: Path) -> Path:
    config = {
        "source": {
            "type": "file",
            "path": f"{data.parent.name}/*.parquet",
            # Every order column but the email, which would need RETENTION_PII_KEY.
            "columns": {c: c for c in GENERATED_COLUMNS if c != "customer_email"},
        },
        "warehouse": {
            "type": "duckdb",
            "path": f"warehouse-{orders}.duckdb",
            "publish_dir": f"published-{orders}",
        },
        "schedule": {"partitions_start": "2023-01-01"},
    }
    path = WORK / f"config-{orders}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _next_day(data: Path) -> date:
    """Writes one new day of orders beside the history: the history's last day again, a day
    later, under new order ids (so a repeat buyer mix like a real night's). Returns it."""
    history = pl.scan_parquet(data)
    ordered_at = pl.col("ordered_at").str.to_datetime(strict=False)
    # The generator's bad rows include orders dated in the future; they are no day of history.
    last = history.select(ordered_at.filter(ordered_at < datetime.now()).max()).collect()
    last_day = last.item().date()
    day = last_day + timedelta(days=1)
    shifted = [
        (pl.col(c).str.to_datetime(strict=False) + timedelta(days=1)).dt.to_string(
            "%Y-%m-%d %H:%M:%S"
        )
        for c in ("ordered_at", "updated_at")
    ]
    orders = (
        history.filter(pl.col("ordered_at").str.starts_with(last_day.isoformat()))
        .with_columns(*shifted, order_id=pl.lit("N") + pl.col("order_id"))
        .collect()
    )
    write_orders(orders, data.with_name("next-day.parquet"))
    return day


def _floor_times(data: Path, config: Path) -> FloorTimes:
    # An in-memory database spills into `.tmp` in the working directory unless told otherwise.
    with duckdb.connect(config={"temp_directory": str(WORK / "floor.tmp")}) as con:
        con.execute("set enable_progress_bar = false")
        return compute_floor(con, data, load_config(config))


def _installation_disk(orders: int) -> int | None:
    """Bytes of the installation's files: the warehouse file, DuckDB's spill beside it and
    the published copy (None when a file vanished while it was counted)."""
    warehouse = WORK / f"warehouse-{orders}.duckdb"
    paths = (warehouse, spill_folder(warehouse), WORK / f"published-{orders}")
    try:
        return sum(disk_in_use(path) for path in paths if path.exists())
    except FileNotFoundError:
        return None


def _profiled(command: list[str], dagster_home: Path, orders: int) -> Run:
    """Runs `command` (one Dagster run) and profiles it: the resident memory of its process
    tree (the run process and dbt's) and the installation's disk are sampled in a thread,
    and each memory sample is attributed to the step running then; steps run one at a time
    in an in-process run."""
    samples: list[tuple[float, int]] = []
    disk = [_installation_disk(orders) or 0]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
    )
    sampler = threading.Thread(target=_sample, args=(process, orders, samples, disk), daemon=True)
    sampler.start()
    exit_code = process.wait()
    seconds = time.perf_counter() - started
    sampler.join()
    steps, dbt_models = _step_profile(dagster_home, samples)
    peak = max((rss for _, rss in samples), default=0) / 2**30
    if exit_code != 0:
        # A failed 100M run costs an hour: its profile so far is worth keeping.
        ended = "; ".join(f"{step} {s:.1f} s, {gib:.2f} GiB" for step, (s, gib) in steps.items())
        raise RuntimeError(
            f"{' '.join(command)} failed (exit {exit_code}) after {seconds:.1f} s, peak "
            f"{peak:.2f} GiB, peak disk {max(disk) / 1e9:.1f} GB; the steps that ended: "
            f"{ended or 'none'}"
        )
    disk.append(_installation_disk(orders) or 0)
    return Run(seconds, peak, steps, dbt_models, disk[0] / 1e9, max(disk) / 1e9, disk[-1] / 1e9)


def _sample(
    process: subprocess.Popen, orders: int, samples: list[tuple[float, int]], disk: list[int]
) -> None:
    root = psutil.Process(process.pid)
    while process.poll() is None:
        if (used := _installation_disk(orders)) is not None:
            disk.append(used)
        rss = 0
        try:
            for member in [root, *root.children(recursive=True)]:
                rss += member.memory_info().rss
        except psutil.Error:  # a process ended while being measured
            pass
        samples.append((time.time(), rss))
        time.sleep(SAMPLE_SECONDS)


def _step_profile(
    dagster_home: Path, samples: list[tuple[float, int]]
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Per step of the home's latest run: (seconds, peak GiB), from the step start and
    success (or failure: the step's name then ends in "(failed)") events; per dbt model:
    dbt's execution time, from its materialization event."""
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home)))
    runs = instance.get_runs(limit=1)
    if not runs:  # the command failed before it started a run
        instance.dispose()
        return {}, {}
    run = runs[0]
    ends = {dg.DagsterEventType.STEP_SUCCESS: "", dg.DagsterEventType.STEP_FAILURE: " (failed)"}
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.ASSET_MATERIALIZATION, *ends}
    starts, steps, dbt_models = {}, {}, {}
    for entry in instance.all_logs(run.run_id, of_type=kinds):
        kind = entry.dagster_event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif kind in ends:
            began = starts[entry.step_key]
            during = [rss for at, rss in samples if began <= at <= entry.timestamp]
            step = entry.step_key + ends[kind]
            steps[step] = (entry.timestamp - began, max(during, default=0) / 2**30)
        elif duration := entry.asset_materialization.metadata.get("Execution Duration"):
            dbt_models[entry.asset_materialization.asset_key.to_user_string()] = duration.value
    instance.dispose()
    return steps, dbt_models


def _fresh_home(orders: int) -> Path:
    """An empty Dagster instance folder, so the run's event log can be read afterwards."""
    home = WORK / f"dagster-{orders}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _full_build(orders: int, config: Path) -> Run:
    """A new installation: no warehouse, and no published copy to start the publish from."""
    (WORK / f"warehouse-{orders}.duckdb").unlink(missing_ok=True)
    shutil.rmtree(WORK / f"published-{orders}", ignore_errors=True)
    command = [str(Path(sys.executable).parent / "retention-pipeline"), "run", "--config"]
    return _profiled([*command, str(config)], _fresh_home(orders), orders)


def _nightly(orders: int, config: Path, data: Path) -> Run:
    """After a full build: one new day of orders, and what the nightly schedule runs."""
    day = _next_day(data)
    try:
        command = [sys.executable, "-c", NIGHTLY_SCRIPT, str(config), day.isoformat()]
        return _profiled(command, WORK / f"dagster-{orders}", orders)
    finally:
        data.with_name("next-day.parquet").unlink()


def _clv_fit_seconds(orders: int, repeats: int) -> float:
    """Our BG/NBD + Gamma-Gamma fit (benchmarks/clv.py's) on the built history's summary."""
    with duckdb.connect(str(WORK / f"warehouse-{orders}.duckdb"), read_only=True) as con:
        (last_day,) = con.execute("select max(order_date) from main.fct_orders").fetchall()[0]
        summary = OrderHistory(DuckDBSession(con), "main.fct_orders").summary(last_day, "week")
    arrays = [summary[c].to_numpy() for c in ("frequency", "recency", "age", "monetary_value")]
    seconds, _ = clv.timed(clv.fit_ours, *arrays, repeats=repeats)
    return seconds


def _measure(orders: int, repeats: int, nightly: bool = True) -> dict:
    """Medians of `repeats` interleaved floor, full-build and nightly runs (the same noise
    for all three), the per-step profile of each, and the CLV fit on the same history."""
    data = _dataset(orders)
    # A nightly benchmark stopped by a signal leaves its day behind, which would be history.
    data.with_name("next-day.parquet").unlink(missing_ok=True)
    config = _config(orders, data)
    floors, builds, nights = [], [], []
    for _ in range(repeats):
        builds.append(_full_build(orders, config))
        if nightly:
            nights.append(_nightly(orders, config, data))
        # Last: at 100M the in-memory floor spills for a long while, and the build's figures
        # are the ones the targets name.
        floors.append(_floor_times(data, config))
    return {
        "floor": statistics.median(floor.headline for floor in floors),
        "cohorts_and_rates_floor": statistics.median(f.cohorts_and_rates for f in floors),
        "builds": builds,
        "nights": nights,
        "clv": _clv_fit_seconds(orders, repeats) if nightly else None,
    }


def _median_steps(runs: list[Run]) -> dict[str, tuple[float, float]]:
    """Per step: the median seconds and the largest peak over the runs."""
    return {
        step: (
            statistics.median(run.steps[step][0] for run in runs),
            max(run.steps[step][1] for run in runs),
        )
        for step in runs[0].steps
    }


def _print_size(orders: int, result: dict, fixed: float) -> None:
    builds, nights, floor = result["builds"], result["nights"], result["floor"]
    build = statistics.median(run.seconds for run in builds)
    night = statistics.median(run.seconds for run in nights)
    peak = max(run.peak_gib for run in builds + nights)
    within = "yes" if build <= 2 * floor + fixed else "no"
    ratio = (build - fixed) / floor
    earlier = result["cohorts_and_rates_floor"]
    print(
        f"| {orders:,} | {len(builds)} | {floor:.2f} | {build:.1f} | {ratio:.1f}x | {within} "
        f"| {earlier:.2f} ({(build - fixed) / earlier:.1f}x) "
        f"| {night:.1f} | {night / build:.1%} | {peak:.2f} | {result['clv']:.2f} |"
    )


def _print_disk(results: dict[int, dict]) -> None:
    """The installation's disk per size: a night's peak above its start is what the free
    disk check's estimate (the files at the night's start, as much again) must cover."""
    print("\nDisk (GB: the warehouse file, DuckDB's spill beside it, the published copy):")
    print(
        "| orders | full build: peak | after it | a night: the check asks "
        "| its peak above its start | after it |\n|---|---|---|---|---|---|"
    )
    for orders, result in results.items():
        builds, nights = result["builds"], result["nights"]
        print(
            f"| {orders:,} | {max(run.peak_disk_gb for run in builds):.2f} "
            f"| {statistics.median(run.disk_at_end_gb for run in builds):.2f} "
            f"| {statistics.median(run.disk_at_start_gb for run in nights):.2f} "
            f"| {max(run.peak_disk_gb - run.disk_at_start_gb for run in nights):.2f} "
            f"| {statistics.median(run.disk_at_end_gb for run in nights):.2f} |"
        )


def _print_profile(orders: int, runs: list[Run], kind: str) -> None:
    print(f"\n{kind} at {orders:,} orders, per Dagster step (median s, peak GiB of the tree):")
    print("| step | seconds | peak RSS (GiB) |\n|---|---|---|")
    for step, (seconds, peak) in sorted(_median_steps(runs).items(), key=lambda s: -s[1][0]):
        print(f"| {step} | {seconds:.1f} | {peak:.2f} |")
    models = {
        model: statistics.median(run.dbt_models.get(model, 0.0) for run in runs)
        for model in runs[0].dbt_models
    }
    print(f"slowest dbt models ({kind}, dbt's execution time, median s):")
    print("| model | seconds |\n|---|---|")
    for model, seconds in sorted(models.items(), key=lambda m: -m[1])[:SLOWEST_SHOWN]:
        print(f"| {model} | {seconds:.1f} |")


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
    parser.add_argument(
        "--include-100m", action="store_true", help="also 100M orders (tens of minutes)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db-rows", type=int, default=DB_ROWS)
    parser.add_argument(
        "--db-extract-only", action="store_true", help="only the database extraction benchmark"
    )
    parser.add_argument(
        "--clv", action="store_true", help="only the CLV benchmark (benchmarks/clv.py)"
    )
    parser.add_argument("--no-clv", action="store_true", help="leave the CLV benchmark out")
    parser.add_argument("--no-db", action="store_true", help="leave the database extraction out")
    args, rest = parser.parse_known_args()
    if not args.no_clv and not args.db_extract_only:
        sys.argv = [sys.argv[0], *rest]
        clv.main()
        if args.clv:
            return
    WORK.mkdir(parents=True, exist_ok=True)
    memory = psutil.virtual_memory().total / 2**30
    load = os.getloadavg()[0]
    print(
        f"machine: {_cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"load average {load:.1f} at start"
    )
    if args.db_extract_only:
        _db_extract(args.db_rows)
        return
    fixed = statistics.median(
        run.seconds for run in _measure(TINY_SHOP_ORDERS, args.repeats, nightly=False)["builds"]
    )
    print(f"fixed overhead (full build of {TINY_SHOP_ORDERS:,} orders): {fixed:.1f} s")
    sizes = [*args.orders, *([HUNDRED_MILLION] if args.include_100m else [])]
    print(
        "| orders | runs | floor (s) | full build (s) | (build - fixed) / floor "
        "| within 2x floor + fixed | cohorts-and-rates floor (s, ratio) | nightly (s) "
        "| nightly / full | peak RSS (GiB) | CLV fit (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    for orders in sizes:
        # Each size's row as soon as it is measured: a 100M run takes long.
        results[orders] = _measure(orders, args.repeats)
        _print_size(orders, results[orders], fixed)
    _print_disk(results)
    for orders, result in results.items():
        _print_profile(orders, result["builds"], "full build")
        _print_profile(orders, result["nights"], "nightly run")
    if not args.no_db:
        _db_extract(args.db_rows)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
