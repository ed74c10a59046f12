"""Reads a database source (PostgreSQL, MySQL/MariaDB, SQLite) into order rows as text, like
the file sources, so that the same validation and quarantine apply.

ConnectorX streams the result from the server in Arrow record batches; each batch is turned
into text and appended to a Parquet spill file, so memory holds one batch at a time whatever
the table's size. The connection URL is read from the environment variable the config names
and never appears in a log line or an error.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import connectorx as cx
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from retention_pipeline.lib.config import ConfigError, PipelineConfig, SourceConfig
from retention_pipeline.lib.extract import mapped_rows

QUOTES = {"postgres": '"', "mysql": "`", "sqlite": '"'}
SCHEMES = {
    "postgres": ("postgresql", "postgres"),
    "mysql": ("mysql", "mariadb"),
    "sqlite": ("sqlite",),
}
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}
CONNECT_TIMEOUT_SECONDS = 5


class SourceDatabaseError(ConfigError):
    """The source database cannot be reached or refuses the query."""


def quote(identifier: str, dialect: str) -> str:
    """`identifier` quoted for the dialect (config validation allows only plain names)."""
    mark = QUOTES[dialect]
    return mark + identifier.replace(mark, mark * 2) + mark


def source_url(source: SourceConfig) -> str:
    """The connection URL from the environment, in the scheme ConnectorX reads."""
    url = os.environ.get(source.url_env or "", "").strip()
    if not url:
        raise ConfigError(
            f"source.url_env names the environment variable {source.url_env}, which is not set: "
            f"export the {source.type} connection URL in {source.url_env}"
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES[source.type]:
        raise ConfigError(
            f"{source.url_env} does not hold a {source.type} URL: it must start with "
            + " or ".join(f"{s}://" for s in SCHEMES[source.type])
        )
    # ConnectorX knows MariaDB as mysql.
    return SCHEMES[source.type][0] + url[len(scheme) :]


def _check_reachable(source: SourceConfig, url: str) -> None:
    """Fails fast with the variable's name: ConnectorX's pool retries for 30 s, and SQLite
    would create a missing file."""
    parts = urlsplit(url)
    if source.type == "sqlite":
        if not Path(parts.path).is_file():
            raise SourceDatabaseError(
                f"the SQLite file named by {source.url_env} does not exist; the URL must be "
                "sqlite:///absolute/path/to/file.db"
            )
        return
    host, port = parts.hostname or "localhost", parts.port or DEFAULT_PORTS[source.type]
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as exc:
        raise SourceDatabaseError(
            f"cannot reach the {source.type} server named by {source.url_env} "
            f"({host}:{port}): {exc.strerror or exc}; check that it runs and that "
            f"{source.url_env} is right"
        ) from None


def _literal(moment: datetime) -> str:
    """A timestamp literal every dialect compares with its timestamp and text columns. Whole
    seconds, rounded down: a text column (SQLite) then compares as ISO text, and rounding
    down only reads more."""
    return f"'{moment:%Y-%m-%d %H:%M:%S}'"


def select_sql(source: SourceConfig, since: datetime | None) -> str:
    """The query that reads the source: the mapped columns of `table`, or the user's `query`
    as a subquery; with `since` (source-local wall time) only rows updated since then, and
    rows without updated_at (they cannot be placed by the watermark)."""
    name = lambda identifier: quote(identifier, source.type)  # noqa: E731
    if source.table is not None:
        names = dict.fromkeys(source.columns.values())
        # SQLite types values, not columns: text keeps a column of mixed types one type.
        if source.type == "sqlite":
            columns = ", ".join(f"cast({name(c)} as text) as {name(c)}" for c in names)
        else:
            columns = ", ".join(name(c) for c in names)
        relation = ".".join(name(part) for part in source.table.split("."))
        sql = f"select {columns} from {relation}"
    else:
        sql = f"select * from ({source.query.strip().rstrip(';')}) as source_query"
    if since is not None:
        updated = name(source.columns["updated_at"])
        sql += f" where {updated} >= {_literal(since)} or {updated} is null"
    return sql


def _session_setup(config: PipelineConfig) -> str | None:
    """PostgreSQL reads a naive literal against a timestamptz column in the session's time
    zone: make it the source's, in which the literal is written."""
    if config.source.type != "postgres":
        return None
    return f"set time zone '{config.source_timezone}'"


def _as_text(batch: pa.RecordBatch) -> pa.Table:
    """Every column as text, as the file sources read them. Instants (timestamptz) keep
    their UTC offset, so validation does not read them in the source timezone."""
    frame = pl.from_arrow(batch)
    return frame.select(
        pl.col(name).dt.convert_time_zone("UTC").dt.to_string("%Y-%m-%d %H:%M:%S%.f%:z")
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
        else pl.col(name).cast(pl.String)
        for name, dtype in frame.schema.items()
    ).to_arrow()


def extract_to_parquet(config: PipelineConfig, since: datetime | None, spill: Path) -> int:
    """Streams the source's rows (those updated since `since`, source-local wall time, when
    given) into the Parquet file `spill`, all as text; returns the number of rows."""
    source = config.source
    url = source_url(source)
    _check_reachable(source, url)
    what = f"table {source.table}" if source.table else "source.query"
    try:
        reader = cx.read_sql(
            url,
            select_sql(source, since),
            return_type="arrow_stream",
            batch_size=source.batch_size,
            pre_execution_query=_session_setup(config),
        )
        schema = pa.schema([(field.name, pa.string()) for field in reader.schema])
        rows = 0
        with pq.ParquetWriter(spill, schema) as writer:
            for batch in reader:
                writer.write_table(_as_text(batch).cast(schema))
                rows += batch.num_rows
    # ConnectorX raises RuntimeError, or a Rust panic that derives from BaseException only.
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit | SourceDatabaseError):
            raise
        # The driver's message names the column or table at fault; the URL is cut out.
        message = str(exc).replace(url, "<url>").splitlines()[0]
        raise SourceDatabaseError(
            f"the {source.type} database named by {source.url_env} refused to read {what}: "
            f"{message}. Check source.table / source.query and the names under source.columns"
        ) from None
    return rows


def watermark_since(config: PipelineConfig, watermark: datetime) -> datetime:
    """Where the next read starts, in source-local wall time: the watermark (naive UTC)
    less the lookback for transactions that commit late."""
    start = watermark - timedelta(hours=config.source.lookback_hours)
    local = start.replace(tzinfo=UTC).astimezone(ZoneInfo(config.source_timezone))
    return local.replace(tzinfo=None)


def scan_database_rows(config: PipelineConfig, spill: Path) -> pl.LazyFrame:
    """The rows `extract_to_parquet` spilled, as `scan_source_rows` gives a file's: our column
    names, `source_row` ("table:order_id", the row's key) and `raw_record`."""
    source = config.source
    label = source.table or source.name
    where = f"table {source.table}" if source.table else "source.query"
    order_id = pl.col(source.columns["order_id"]).cast(pl.String).fill_null("")
    return mapped_rows(
        pl.scan_parquet(spill).with_row_index("_line"),
        config,
        where,
        pl.concat_str(pl.lit(f"{label}:"), order_id),
        pl.col("_line"),
    )
