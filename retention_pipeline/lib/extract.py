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
REDACTED = "<redacted>"
# A file's rows come after every row of the files before it: _seq is (file << bits) + line.
FILE_SEQ_BITS = 40


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


def _scan_lines(path: Path) -> pl.LazyFrame:
    """Every physical line of a text file as `_text`, numbered from 1 in `_line`."""
    return pl.scan_csv(
        path,
        separator=_NO_SEPARATOR,
        has_header=False,
        quote_char=None,
        infer_schema=False,
        new_columns=["_text"],
    ).with_row_index("_line", offset=1)


def _scan_ndjson(path: Path) -> pl.LazyFrame:
    """Records decoded from the file's lines, so `_line` counts blank lines as well
    (scan_ndjson skips them); the schema is the one scan_ndjson infers."""
    schema = pl.Struct(pl.scan_ndjson(path).collect_schema())
    return (
        _scan_lines(path)
        .filter(pl.col("_text").str.strip_chars() != "")
        .select("_line", pl.col("_text").str.json_decode(schema).struct.unnest())
    )


def _scan_whitespace(config: PipelineConfig, path: Path) -> pl.LazyFrame:
    lines = _scan_lines(path)
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


def _fixed_folder(config: PipelineConfig) -> Path:
    """The folder of the source glob up to its first wildcard."""
    pattern = Path(config.source.path or "")
    fixed = []
    for part in pattern.parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return config.base_dir.joinpath(*fixed).resolve()


def _label(path: Path, folder: Path) -> str:
    """The file's name in source_row: relative to the glob's fixed folder, so that
    same-named files in different folders stay apart."""
    return (path.relative_to(folder) if path.is_relative_to(folder) else path).as_posix()


def _scan_file(config: PipelineConfig, path: Path, label: str) -> pl.LazyFrame:
    fmt = _format_of(config, path)
    source = config.source
    if fmt == "parquet":
        frame = pl.scan_parquet(path).with_row_index("_line", offset=1)
    elif fmt == "ndjson":
        frame = _scan_ndjson(path)
    elif source.delimiter == WHITESPACE:
        frame = _scan_whitespace(config, path)
    else:
        frame = pl.scan_csv(
            path,
            separator=source.delimiter,
            has_header=source.has_header,
            quote_char=source.quote_char,
            infer_schema=False,
        )
        if not source.has_header:
            # Polars numbers unnamed columns from column_0; ours, like the whitespace format's,
            # start at column_1.
            names = frame.collect_schema().names()
            frame = frame.rename({name: f"column_{i + 1}" for i, name in enumerate(names)})
        frame = frame.with_row_index("_line", offset=2 if source.has_header else 1)
    if fmt not in ("parquet", "ndjson"):
        # In a text file a blank line is no row: every column empty.
        text = pl.all().exclude("_line").str.strip_chars().fill_null("")
        frame = frame.filter(pl.any_horizontal(text != ""))
    return frame.with_columns(pl.lit(label).alias("_file"))


def _check_mapping(config: PipelineConfig, where: str, available: list[str]) -> None:
    missing = {
        ours: theirs for ours, theirs in config.source.columns.items() if theirs not in available
    }
    if missing:
        details = "; ".join(
            f"source.columns.{ours} names '{theirs}'" for ours, theirs in missing.items()
        )
        raise SourceSchemaError(
            f"{where}: column(s) not found: {details}. It has columns {available}; "
            "fix the mapping under source.columns in the config."
        )


def _holds_email(column: str, email_column: str | None) -> bool:
    """The mapped email column, and any other whose name mentions mail: an unmapped email
    column must not reach rejected_orders in clear either."""
    return column == email_column or "mail" in column.lower()


def mapped_rows(
    frame: pl.LazyFrame,
    config: PipelineConfig,
    where: str,
    source_row: pl.Expr,
    reading_order: pl.Expr,
) -> pl.LazyFrame:
    """The source's rows with our column names, as text, `source_row`, `raw_record` (the
    source row as a struct, emails redacted) and `_seq` (`reading_order`: a later row has a
    larger one). Fails before reading data when a mapped column is absent; `where` names the
    file or table in that message."""
    mapping = config.source.columns
    email_column = mapping.get("customer_email")
    available = [c for c in frame.collect_schema().names() if c not in ("_line", "_file")]
    _check_mapping(config, where, available)
    raw_record = pl.struct(
        [
            pl.lit(REDACTED).alias(c) if _holds_email(c, email_column) else pl.col(c)
            for c in available
        ]
    )
    return frame.select(
        *[
            pl.col(theirs).cast(pl.String).alias(ours)
            for ours, theirs in mapping.items()
            if ours in ORDER_COLUMNS or ours in LINE_COLUMNS
        ],
        source_row.alias("source_row"),
        raw_record.alias("raw_record"),
        reading_order.cast(pl.UInt64).alias("_seq"),
    )


def scan_source_rows(config: PipelineConfig) -> pl.LazyFrame:
    """All rows of every matched file, with our column names, as text, plus provenance.

    Columns: the mapped fields present in the config, `source_row` ("file:line"),
    `raw_record` (the source row, emails redacted; `encode_raw_records` makes it JSON) and
    `_seq`, the reading order. Fails before reading data when a mapped column is absent from
    any file.
    """
    frames = []
    folder = _fixed_folder(config)
    line = pl.concat_str(pl.col("_file"), pl.lit(":"), pl.col("_line").cast(pl.String))
    for index, path in enumerate(config.source_files()):
        frame = _scan_file(config, path, _label(path, folder))
        # Computed row by row, unlike a row index over all files, so that a part of the rows
        # can be read without holding the rest (quarantine.validate_in_parts).
        reading_order = pl.lit(index << FILE_SEQ_BITS, dtype=pl.UInt64) + pl.col("_line")
        frames.append(mapped_rows(frame, config, str(path), line, reading_order))
    # A struct costs nothing until encoded, and only rejected rows need JSON. Files of different
    # columns are encoded here, since a concatenation would merge their structs' fields.
    raw_types = [frame.collect_schema()["raw_record"] for frame in frames]
    if any(raw_type != raw_types[0] for raw_type in raw_types):
        frames = [frame.with_columns(pl.col("raw_record").struct.json_encode()) for frame in frames]
    return pl.concat(frames, how="diagonal_relaxed")


def encode_raw_records(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` with `raw_record` as JSON text, as the quarantine stores it."""
    if rows.schema["raw_record"] == pl.String:
        return rows
    return rows.with_columns(pl.col("raw_record").struct.json_encode())
