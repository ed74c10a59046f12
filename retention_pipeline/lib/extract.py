"""Reads a configured file source into order rows named as in SPEC §2, lazily, all as text.

Typing and validation happen in `quarantine`; this module only finds the rows, maps the
columns and remembers where each row came from (file and line) and what it said.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from retention_pipeline.lib.config import LINE_COLUMNS, ORDER_COLUMNS, ConfigError, PipelineConfig

WHITESPACE = "whitespace"
# A byte that never occurs in text files, so a whitespace-separated file reads as one column.
_NO_SEPARATOR = "\x1f"


class SourceSchemaError(ConfigError):
    """The source lacks a column the mapping names."""


def _format_of(config: PipelineConfig, path: Path) -> str:
    if config.source.format:
        return config.source.format
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    return {".parquet": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson"}.get(
        last, "csv"
    )


def _scan_whitespace(config: PipelineConfig, path: Path) -> pl.LazyFrame:
    lines = pl.scan_csv(
        path,
        separator=_NO_SEPARATOR,
        has_header=False,
        quote_char=None,
        infer_schema=False,
        new_columns=["_text"],
    ).with_row_index("_line", offset=1)
    fields = pl.col("_text").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    if config.source.has_header:
        header = lines.head(1).select(fields).collect().item()
        names = list(header)
        lines = lines.slice(1)
    else:
        first = lines.head(1).select(fields).collect().item()
        names = [f"column_{i + 1}" for i in range(len(first))]
    return lines.select(
        "_line",
        *[fields.list.get(i, null_on_oob=True).alias(name) for i, name in enumerate(names)],
    )


def _scan_file(config: PipelineConfig, path: Path) -> pl.LazyFrame:
    fmt = _format_of(config, path)
    source = config.source
    if fmt == "parquet":
        frame = pl.scan_parquet(path).with_row_index("_line", offset=1)
    elif fmt == "ndjson":
        frame = pl.scan_ndjson(path).with_row_index("_line", offset=1)
    elif source.delimiter == WHITESPACE:
        frame = _scan_whitespace(config, path)
    else:
        frame = pl.scan_csv(
            path,
            separator=source.delimiter,
            has_header=source.has_header,
            quote_char=source.quote_char,
            infer_schema=False,
        ).with_row_index("_line", offset=2 if source.has_header else 1)
    if fmt not in ("parquet", "ndjson"):
        # In a text file a blank line is no row: every column empty.
        text = pl.all().exclude("_line").str.strip_chars().fill_null("")
        frame = frame.filter(pl.any_horizontal(text != ""))
    return frame.with_columns(pl.lit(path.name).alias("_file"))


def _check_mapping(config: PipelineConfig, path: Path, available: list[str]) -> None:
    missing = {
        ours: theirs for ours, theirs in config.source.columns.items() if theirs not in available
    }
    if missing:
        details = "; ".join(
            f"source.columns.{ours} names '{theirs}'" for ours, theirs in missing.items()
        )
        raise SourceSchemaError(
            f"{path}: column(s) not found: {details}. The file has columns {available}; "
            "fix the mapping under source.columns in the config."
        )


def scan_source_rows(config: PipelineConfig) -> pl.LazyFrame:
    """All rows of every matched file, with our column names, as text, plus provenance.

    Columns: the mapped fields present in the config, `source_row` ("file:line") and
    `raw_record` (the source row as JSON). Fails before reading data when a mapped column
    is absent from any file.
    """
    frames = []
    mapping = config.source.columns
    for path in config.source_files():
        frame = _scan_file(config, path)
        available = [c for c in frame.collect_schema().names() if c not in ("_line", "_file")]
        _check_mapping(config, path, available)
        email_column = mapping.get("customer_email")
        raw_record = pl.struct(
            [pl.lit("<redacted>").alias(c) if c == email_column else pl.col(c) for c in available]
        ).struct.json_encode()
        frames.append(
            frame.select(
                *[
                    pl.col(theirs).cast(pl.String).alias(ours)
                    for ours, theirs in mapping.items()
                    if ours in ORDER_COLUMNS or ours in LINE_COLUMNS
                ],
                pl.concat_str(pl.col("_file"), pl.lit(":"), pl.col("_line").cast(pl.String)).alias(
                    "source_row"
                ),
                raw_record.alias("raw_record"),
            )
        )
    return pl.concat(frames, how="diagonal_relaxed")
