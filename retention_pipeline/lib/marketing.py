"""The optional marketing spend input: files of (date, channel, spend) into the raw layer.

Every run replaces the whole spend (a small file, often edited in place) in one transaction:
good rows land in `raw.marketing_spend`, bad ones in `raw.rejected_marketing_spend` with a
reason. Without a `marketing_spend` block both tables exist and are empty, so the models
reading them build all the same.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import polars.selectors as cs

from retention_pipeline.lib.config import SPEND_COLUMNS, ConfigError, PipelineConfig
from retention_pipeline.lib.warehouse import Session, as_session


def spend_ddl(raw: str) -> str:
    """The raw spend tables in schema `raw` (a quoted identifier), created when missing."""
    return f"""
create schema if not exists {raw};
create table if not exists {raw}.marketing_spend (
    load_id varchar not null,
    source_row varchar not null,
    spend_date date not null,
    channel varchar not null,
    spend double precision not null,
    loaded_at timestamp not null
);
create table if not exists {raw}.rejected_marketing_spend (
    load_id varchar not null,
    source_row varchar not null,
    raw_record varchar,
    reason_code varchar not null,
    reason varchar not null,
    rejected_at timestamp not null
);
"""


# Checked in this order; a row is rejected with the first that fails.
SPEND_REASONS = {
    "missing_spend_date": "the date is empty",
    "unparseable_spend_date": "the date is not readable",
    "missing_channel": "the channel is empty",
    "unparseable_spend": "the spend is empty or not a number",
    "negative_spend": "the spend is below 0",
}


class SpendSchemaError(ConfigError):
    """A spend file lacks a column the mapping names."""


@dataclass(frozen=True)
class SpendBatch:
    spend: pl.DataFrame  # source_row, spend_date, channel, spend
    rejected: pl.DataFrame  # source_row, raw_record, reason_code, reason

    @property
    def rows_read(self) -> int:
        return self.spend.height + self.rejected.height


EMPTY_BATCH = SpendBatch(
    spend=pl.DataFrame(
        schema={
            "source_row": pl.String,
            "spend_date": pl.Date,
            "channel": pl.String,
            "spend": pl.Float64,
        }
    ),
    rejected=pl.DataFrame(
        schema={
            "source_row": pl.String,
            "raw_record": pl.String,
            "reason_code": pl.String,
            "reason": pl.String,
        }
    ),
)


def spend_files(config: PipelineConfig) -> list[Path]:
    """The files `marketing_spend.path` matches, relative to the config file, sorted."""
    return config.matching_files(config.marketing_spend.path or "", "marketing_spend.path")


def _scan_file(config: PipelineConfig, path: Path) -> pl.LazyFrame:
    spend = config.marketing_spend
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    fmt = spend.format or ("parquet" if suffixes[-1:] == [".parquet"] else "csv")
    if fmt == "parquet":
        frame = pl.scan_parquet(path).with_row_index("_line", offset=1)
        # Timestamps count by their date; everything is then text, as from a CSV file.
        frame = frame.with_columns(cs.datetime().dt.date())
        return frame.with_columns(pl.all().exclude("_line").cast(pl.String))
    frame = pl.scan_csv(path, separator=spend.delimiter, infer_schema=False)
    frame = frame.with_row_index("_line", offset=2)
    # A blank line is no row.
    text = pl.all().exclude("_line").str.strip_chars().fill_null("")
    return frame.filter(pl.any_horizontal(text != ""))


def scan_spend_rows(config: PipelineConfig) -> pl.LazyFrame:
    """Every row of the spend files as text: spend_date, channel, spend, source_row
    (`file:line`) and raw_record (the row as JSON). Fails before reading data when a mapped
    column is missing."""
    mapping = config.marketing_spend.column_mapping
    frames = []
    for path in spend_files(config):
        frame = _scan_file(config, path)
        available = [c for c in frame.collect_schema().names() if c != "_line"]
        missing = {ours: theirs for ours, theirs in mapping.items() if theirs not in available}
        if missing:
            details = "; ".join(f"'{theirs}' (for {ours})" for ours, theirs in missing.items())
            raise SpendSchemaError(
                f"{path}: marketing spend column(s) not found: {details}. The file has columns "
                f"{available}; map them under marketing_spend.columns in the config."
            )
        frames.append(
            frame.select(
                *[pl.col(mapping[ours]).alias(ours) for ours in SPEND_COLUMNS],
                pl.concat_str(
                    pl.lit(path.name), pl.lit(":"), pl.col("_line").cast(pl.String)
                ).alias("source_row"),
                pl.struct(available).struct.json_encode().alias("raw_record"),
            )
        )
    return pl.concat(frames)


def validate_spend(rows: pl.LazyFrame, date_format: str | None = None) -> SpendBatch:
    """Types the rows and splits them into good ones and rejected ones with a reason."""
    date_text = pl.col("spend_date").str.strip_chars()
    if date_format:
        spend_date = date_text.str.to_datetime(date_format, strict=False).dt.date()
    else:
        spend_date = pl.coalesce(
            date_text.str.to_date("%Y-%m-%d", strict=False),
            date_text.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False).dt.date(),
            date_text.str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False).dt.date(),
        )
    amount = pl.col("spend").str.strip_chars().cast(pl.Float64, strict=False)
    amount = pl.when(amount.is_finite()).then(amount)
    typed = rows.with_columns(
        pl.col("channel").str.strip_chars().alias("channel"),
        spend_date.alias("_date"),
        amount.alias("_spend"),
    )
    failing = {
        "missing_spend_date": date_text.fill_null("") == "",
        "unparseable_spend_date": pl.col("_date").is_null(),
        "missing_channel": pl.col("channel").fill_null("") == "",
        "unparseable_spend": pl.col("_spend").is_null(),
        "negative_spend": pl.col("_spend") < 0,
    }
    reason_code = pl.lit(None, pl.String)
    for code, fails in reversed(failing.items()):
        reason_code = pl.when(fails).then(pl.lit(code)).otherwise(reason_code)
    checked = typed.with_columns(reason_code.alias("reason_code")).collect()
    good = checked.filter(pl.col("reason_code").is_null()).select(
        "source_row", spend_date="_date", channel="channel", spend="_spend"
    )
    rejected = checked.filter(pl.col("reason_code").is_not_null()).select(
        "source_row",
        "raw_record",
        "reason_code",
        pl.col("reason_code").replace_strict(SPEND_REASONS, return_dtype=pl.String).alias("reason"),
    )
    return SpendBatch(good, rejected)


def read_spend(config: PipelineConfig) -> SpendBatch:
    """The configured spend, validated; the empty batch when none is configured."""
    if config.marketing_spend is None:
        return EMPTY_BATCH
    return validate_spend(scan_spend_rows(config), config.marketing_spend.date_format)


def write_spend(con: duckdb.DuckDBPyConnection | Session, batch: SpendBatch) -> str:
    """Replaces the raw spend tables with the batch, atomically; returns the load id."""
    con = as_session(con)
    raw = con.raw_schema
    con.execute(spend_ddl(raw))
    load_id = uuid.uuid4().hex
    now = datetime.now(UTC).replace(tzinfo=None)
    con.register("batch_spend", batch.spend)
    con.register("batch_rejected_spend", batch.rejected)
    con.execute("begin transaction")
    try:
        con.execute(f"delete from {raw}.marketing_spend")
        con.execute(f"delete from {raw}.rejected_marketing_spend")
        con.execute(
            f"insert into {raw}.marketing_spend select $load_id, source_row, "
            "spend_date, channel, spend, $now from batch_spend",
            {"load_id": load_id, "now": now},
        )
        con.execute(
            f"insert into {raw}.rejected_marketing_spend select $load_id, source_row, "
            "raw_record, reason_code, reason, $now from batch_rejected_spend",
            {"load_id": load_id, "now": now},
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.unregister("batch_spend")
        con.unregister("batch_rejected_spend")
    return load_id
