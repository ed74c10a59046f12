"""Shared fixtures: run the real pipeline on real files and a real DuckDB warehouse."""

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # the independent reference: `import reference`

ALL_COLUMNS = (
    "order_id", "customer_id", "ordered_at", "amount", "status", "refunded_amount",
    "currency", "updated_at", "channel",
)  # fmt: skip


def write_config(directory: Path, data: str, **overrides) -> Path:
    """A config for `data` (relative to `directory`) with a warehouse beside it."""
    config = {
        "source": {"type": "file", "path": data, "columns": {c: c for c in ALL_COLUMNS}},
        "warehouse": {"type": "duckdb", "path": "warehouse.duckdb"},
        "schedule": {"partitions_start": "2020-01-01"},
        **overrides,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(config: Path, as_of: date | None = None) -> subprocess.CompletedProcess:
    """`retention-pipeline run` in its own process, as a user runs it."""
    command = [str(Path(sys.executable).parent / "retention-pipeline"), "run", "--config",
               str(config)]  # fmt: skip
    if as_of:
        command += ["--as-of", as_of.isoformat()]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def read_table(warehouse: Path, table: str) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return pl.from_arrow(con.sql(f"select * from {table}").to_arrow_table())


def as_of_of(warehouse: Path) -> date:
    return read_table(warehouse, "intermediate.int_run__as_of").item()


def assert_same_cells(actual: pl.DataFrame, expected: pl.DataFrame, keys: list[str]) -> None:
    """Every key on both sides, and every other column equal (floats to 1e-9 relative)."""
    actual = actual.select(expected.columns).with_columns(
        [pl.col(c).cast(expected.schema[c]) for c in expected.columns]
    )
    missing = expected.join(actual, on=keys, how="anti")
    extra = actual.join(expected, on=keys, how="anti")
    assert missing.is_empty(), f"cells missing from the pipeline:\n{missing.head(10)}"
    assert extra.is_empty(), f"cells the reference does not have:\n{extra.head(10)}"
    both = expected.join(actual, on=keys, suffix="_actual")
    for column in expected.columns:
        if column in keys:
            continue
        want, got = pl.col(column), pl.col(f"{column}_actual")
        if expected.schema[column] == pl.Float64:
            same = (want.is_null() & got.is_null()) | (
                (want - got).abs() <= 1e-9 * pl.max_horizontal(want.abs(), pl.lit(1.0))
            )
        else:
            same = want.eq_missing(got)
        wrong = both.filter(~same.fill_null(False))
        assert wrong.is_empty(), (
            f"{column} differs in {wrong.height} cells:\n"
            f"{wrong.select(*keys, column, f'{column}_actual').head(10)}"
        )


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """Generated orders (with bad rows) through the whole pipeline, once per session."""
    from retention_pipeline.lib.generate import generate_orders, write_orders

    directory = tmp_path_factory.mktemp("pipeline")
    orders = generate_orders(customers=600, seed=11)
    write_orders(orders, directory / "orders.csv")
    config = write_config(directory, "orders.csv")
    run_cli(config)
    return directory, orders, directory / "warehouse.duckdb"


# --- Extraction, quarantine and warehouse-write helpers (test_config / test_extract /
# test_quarantine / test_warehouse): real files in a directory, parsed like a YAML file.

#: `now` of every validation in those tests, so that "the future" is fixed.
LOAD_NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def file_source(directory: Path, path: str, columns: dict[str, str], **options):
    """The pipeline config of a file source at `path`, relative to `directory`."""
    from retention_pipeline.lib.config import parse_config

    top = {k: options.pop(k) for k in list(options) if k not in _SOURCE_KEYS}
    raw = {"source": {"type": "file", "path": path, "columns": columns, **options}, **top}
    return parse_config(raw, directory)


_SOURCE_KEYS = {
    "name", "format", "delimiter", "has_header", "quote_char", "timestamp_format",
    "timezone", "line_items", "generate_order_id",
}  # fmt: skip


def load_batch(config, window=None, now: datetime = LOAD_NOW):
    """Extract and validate the configured source for `window` (default: every order)."""
    from retention_pipeline.lib.extract import scan_source_rows
    from retention_pipeline.lib.quarantine import LoadWindow, validate

    window = window or LoadWindow(first=None, last=date(2099, 12, 31))
    return validate(scan_source_rows(config), config, window, now)


def write_lines(path: Path, *lines: str, newline: str = "\n") -> Path:
    """A text file of `lines`, each ended by `newline`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode())
    return path
