"""`retention-pipeline`: demo, run, report and generate, on the same assets the Dagster UI runs."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from retention_pipeline.lib.config import ConfigError
from retention_pipeline.lib.settings import DEMO_CONFIG, PROJECT_ROOT

DEMO_DATA = PROJECT_ROOT / "data" / "demo" / "orders.csv.gz"
DEMO_SPEND = PROJECT_ROOT / "data" / "demo" / "marketing_spend.csv"
DEMO_CUSTOMERS = 5_000
DEMO_SEED = 42


def _generate(args: argparse.Namespace) -> int:
    from retention_pipeline.lib.generate import (
        generate_marketing_spend,
        generate_orders,
        write_orders,
    )

    orders = generate_orders(customers=args.customers, seed=args.seed)
    for path in write_orders(orders, Path(args.out)):
        print(f"wrote {orders.height:,} rows to {path}")
    if args.marketing_spend:
        spend = generate_marketing_spend(orders, seed=args.seed)
        for path in write_orders(spend, Path(args.marketing_spend)):
            print(f"wrote {spend.height:,} marketing spend rows to {path}")
    return 0


def _run(config_path: Path, as_of: date | None, full_resync: bool = False) -> int:
    from retention_pipeline.lib.runner import run_pipeline
    from retention_pipeline.lib.summary import print_summary

    outcome = run_pipeline(config_path, as_of, full_resync)
    if not outcome.success:
        print("the run failed; see the log above for the failing step", file=sys.stderr)
        return 1
    print_summary(outcome)
    from retention_pipeline.lib.report import report_path

    print(f"report: {report_path(outcome.config.warehouse_path)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from retention_pipeline.lib.generate import (
        generate_marketing_spend,
        generate_orders,
        write_orders,
    )

    orders = generate_orders(customers=DEMO_CUSTOMERS, seed=DEMO_SEED)
    write_orders(orders, DEMO_DATA)
    print(f"sample data: {orders.height:,} orders in {DEMO_DATA.relative_to(PROJECT_ROOT)}")
    spend = generate_marketing_spend(orders, seed=DEMO_SEED)
    write_orders(spend, DEMO_SPEND)
    print(f"marketing spend: {spend.height:,} rows in {DEMO_SPEND.relative_to(PROJECT_ROOT)}")
    # The run's last asset writes the report (with the heatmap) beside the warehouse.
    return _run(DEMO_CONFIG, None)


def _report(config_path: Path, out: Path | None) -> int:
    from retention_pipeline.lib.config import load_config
    from retention_pipeline.lib.report import render_report, report_path
    from retention_pipeline.lib.warehouse import marts_file, warehouse_label

    config = load_config(config_path)
    if config.warehouse.type == "duckdb" and not config.warehouse_path.exists():
        raise ConfigError(
            f"no warehouse at {config.warehouse_path}; build it first with "
            f"`retention-pipeline run --config {config_path}`"
        )
    with marts_file(config) as marts:
        report = render_report(
            marts,
            out or report_path(config.warehouse_path),
            currency=config.reporting_currency,
            window_days=config.active_window_days,
            label=warehouse_label(config),
        )
    print(f"report: {report.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retention-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("demo", help="make the sample data and build the warehouse from it")

    run = commands.add_parser("run", help="build every table from the configured source")
    run.add_argument("--config", required=True, type=Path, help="the YAML configuration file")
    run.add_argument(
        "--as-of",
        type=date.fromisoformat,
        help="last complete day (YYYY-MM-DD); later orders are ignored",
    )
    run.add_argument(
        "--full-resync",
        action="store_true",
        help="read every row of a database source again (not only those changed since the last "
        "run), and rebuild the incremental models whole",
    )

    generate = commands.add_parser("generate", help="write realistic synthetic orders")
    generate.add_argument("--customers", type=int, default=10_000)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", required=True, help="a .csv, .csv.gz or .parquet path")
    generate.add_argument(
        "--marketing-spend",
        metavar="PATH",
        help="also write the matching daily marketing spend (date, channel, spend) there",
    )

    report = commands.add_parser(
        "report", help="write the HTML retention report from an existing warehouse"
    )
    report.add_argument("--config", required=True, type=Path, help="the YAML configuration file")
    report.add_argument(
        "--out", type=Path, help="the HTML file (default: retention_report.html by the warehouse)"
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "run":
            return _run(args.config, args.as_of, args.full_resync)
        if args.command == "report":
            return _report(args.config, args.out)
        return _generate(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
