"""Shared helpers for the loading tests; the pipeline helpers are in pipeline_helpers.py."""

import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the independent reference: `import reference`

LOAD_NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
# A source's column names mapped to ours, for the hand-made CSV files of the loading tests.
COLUMNS = {
    "order_id": "id",
    "customer_id": "cust",
    "ordered_at": "placed",
    "updated_at": "changed",
    "amount": "total",
    "refunded_amount": "refund",
    "currency": "cur",
    "status": "state",
}

# Set in CI (.ci/run): a test that needs an outside service or program fails when it is
# missing instead of skipping.
REQUIRE_SERVICES = os.environ.get("RETENTION_REQUIRE_SERVICES") == "1"
# The database servers of the database tests (DEVELOPERS.md: local trust auth, no password).
POSTGRES_URL = os.environ.get(
    "RETENTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("RETENTION_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def service_unavailable(reason: str):
    """Skips the test for `reason`, or fails it when RETENTION_REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}, and RETENTION_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


def file_source(directory: Path, path: str, columns: dict[str, str], **options):
    """The pipeline config of a file source at `path`, relative to `directory`."""
    from retention_pipeline.lib.config import parse_config

    top = {k: options.pop(k) for k in list(options) if k not in _SOURCE_KEYS}
    raw = {"source": {"type": "file", "path": path, "columns": columns, **options}, **top}
    return parse_config(raw, directory)


def headerless_text_source(directory: Path, path: str, columns: dict[str, str] | None = None):
    """A whitespace-separated file without header or order ids, CDNOW's layout: columns
    column_1 (customer), column_2 (date) and column_4 (amount) unless `columns` says."""
    columns = columns or {"customer_id": "column_1", "ordered_at": "column_2", "amount": "column_4"}
    return file_source(
        directory, path, columns, delimiter="whitespace", has_header=False, generate_order_id=True
    )


_SOURCE_KEYS = {
    "name", "format", "delimiter", "has_header", "quote_char", "timestamp_format",
    "timezone", "line_items", "generate_order_id", "negative_amounts_are_refunds",
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
