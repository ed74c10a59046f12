"""The optional FX rates input: one rate per currency and day, to the reporting currency.

A rate is how many units of the reporting currency one unit of the currency buys, so an
amount converts as amount × rate. The file is reference data, not orders: a bad line fails
the load with a message that names the file, the line and the fix, rather than quarantining
it, since a silently dropped rate would convert orders with an older one.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from retention_pipeline.lib.config import ConfigError, PipelineConfig

FX_COLUMNS = ("currency", "rate_date", "rate", "source_row")


class FxRatesError(ConfigError):
    """The FX rates file cannot be read as rates."""


def _scan(path: Path, fmt: str | None) -> pl.LazyFrame:
    fmt = fmt or ("parquet" if path.suffix.lower() == ".parquet" else "csv")
    if fmt == "parquet":
        return pl.scan_parquet(path).with_row_index("_line", offset=1)
    return pl.scan_csv(path, infer_schema=False).with_row_index("_line", offset=2)


def _as_date(column: str, dtype: pl.DataType, date_format: str) -> pl.Expr:
    if dtype == pl.Date:
        return pl.col(column)
    if isinstance(dtype, pl.Datetime):
        return pl.col(column).dt.date()
    text = pl.col(column).cast(pl.String).str.strip_chars()
    return text.str.to_date(date_format, strict=False)


def read_fx_rates(config: PipelineConfig) -> pl.DataFrame | None:
    """The configured rates as currency (upper case), rate_date, rate and source_row
    ("file:line"), sorted; None when the config has no `fx_rates`."""
    if config.fx_rates is None:
        return None
    fx = config.fx_rates
    path = config.fx_rates_path
    if not path.is_file():
        raise FxRatesError(
            f"fx_rates.path: '{fx.path}' is not a file (looked for {path}); fix the path, "
            "which is relative to the config file"
        )
    frame = _scan(path, fx.format)
    schema = frame.collect_schema()
    mapping = fx.columns.model_dump()
    missing = {ours: theirs for ours, theirs in mapping.items() if theirs not in schema}
    if missing:
        details = "; ".join(f"fx_rates.columns.{o} names '{t}'" for o, t in missing.items())
        available = [c for c in schema.names() if c != "_line"]
        raise FxRatesError(
            f"{path}: column(s) not found: {details}. The file has columns {available}; "
            "fix the mapping under fx_rates.columns in the config."
        )
    raw_rate = pl.col(mapping["rate"]).cast(pl.String).str.strip_chars()
    rates = frame.select(
        pl.col(mapping["currency"])
        .cast(pl.String)
        .str.strip_chars()
        .str.to_uppercase()
        .replace("", None)
        .alias("currency"),
        _as_date(mapping["date"], schema[mapping["date"]], fx.date_format).alias("rate_date"),
        raw_rate.cast(pl.Float64, strict=False).alias("rate"),
        pl.col(mapping["date"]).cast(pl.String).alias("_raw_date"),
        raw_rate.alias("_raw_rate"),
        pl.format("{}:{}", pl.lit(path.name), pl.col("_line")).alias("source_row"),
    ).collect()
    problems = rates.filter(
        pl.col("currency").is_null()
        | pl.col("rate_date").is_null()
        | ~(pl.col("rate").is_finite() & (pl.col("rate") > 0)).fill_null(False)
    )
    if problems.height:
        row = problems.row(0, named=True)
        raise FxRatesError(
            f"{path}: {problems.height} line(s) are not rates, first {row['source_row']}: "
            f"currency '{row['currency'] or ''}', date '{row['_raw_date'] or ''}', rate "
            f"'{row['_raw_rate'] or ''}'. Each line needs a currency code, a date "
            f"(fx_rates.date_format, now '{fx.date_format}') and a positive rate."
        )
    clashes = rates.filter(pl.col("rate").n_unique().over("currency", "rate_date") > 1).sort(
        "currency", "rate_date", "source_row"
    )
    if clashes.height:
        row = clashes.row(0, named=True)
        same_day = clashes.filter(
            pl.col("currency") == row["currency"], pl.col("rate_date") == row["rate_date"]
        )
        raise FxRatesError(
            f"{path}: {row['currency']} has different rates on {row['rate_date']} (lines "
            f"{', '.join(same_day['source_row'])}); keep one rate per currency and date"
        )
    return (
        rates.unique(["currency", "rate_date"], keep="first", maintain_order=True)
        .select(FX_COLUMNS)
        .sort("currency", "rate_date")
    )
