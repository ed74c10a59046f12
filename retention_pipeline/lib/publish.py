"""Publishing: the consistent copy of the marts that BI reads, swapped in whole after a run
whose checks passed, so that BI never blocks a run and never reads a half-built table.

DuckDB: a snapshot file (`<publish_dir>/<warehouse file name>`) written beside the old one
and moved over it with os.replace, and a folder of Parquet files per table in a version
folder that the `parquet` link is moved to. A reader holding the old file keeps reading it
whole. Each table is published in parts (a month of the large monthly tables, else the whole
table); the snapshot records each part's row count and content hash, so the next publish
starts from a copy of the last snapshot and rewrites only the parts whose rows changed, and
links the last version's Parquet files of the others.
PostgreSQL: the marts are copied into a fresh schema, which replaces the published schema
by two renames in one transaction; only the reader role may select from it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from retention_pipeline.lib.config import PipelineConfig
from retention_pipeline.lib.warehouse import (
    connect,
    pg_connect,
    postgres_tables,
    quote_identifier,
    sql_path,
)

PARQUET_LINK = "parquet"
# Retired PostgreSQL schemas a reader still holds are dropped at a later publish; this long
# at most does a publish wait for one.
RETIRE_LOCK_TIMEOUT = "1s"
# Tables published a month per part, by the month of this (not null) column: a night
# changes the last months of these, which grow with the history. Every other table is
# one part.
MONTHLY_TABLES = {"customer_segment_history": "snapshot_month", "fct_orders": "order_date"}
WHOLE = "all"  # the part of a table published whole
# The snapshot's record of its parts, outside schema main (BI's tables).
MANIFEST = "publishing.published_parts"


@dataclass(frozen=True)
class Published:
    version: str
    tables: list[str]
    location: str  # the snapshot file, or the published schema
    parquet: Path | None = None  # the Parquet link (DuckDB only)
    parts_written: int = 0  # DuckDB: the parts copied from the warehouse
    parts_kept: int = 0  # DuckDB: the parts unchanged since the last publish


@dataclass(frozen=True)
class Part:
    """What the snapshot holds of one part of a table."""

    rows: int
    content_hash: str  # the sum of its rows' hashes: the same whatever the row order
    parquet_files: tuple[str, ...]  # relative to the publish folder


def publish(config: PipelineConfig) -> Published:
    """Publishes the marts of the warehouse's last build."""
    version = f"{datetime.now(UTC):%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:6]}"
    if config.warehouse.type == "duckdb":
        return _publish_duckdb(config, version)
    return _publish_postgres(config, version)


def snapshot_path(config: PipelineConfig) -> Path:
    """The published DuckDB file BI opens (read-only)."""
    return config.publish_dir / config.warehouse_path.name


def published_location(config: PipelineConfig) -> str:
    """Where BI reads, in words."""
    if config.warehouse.type == "duckdb":
        return f"{snapshot_path(config)} (read-only) and {config.publish_dir / PARQUET_LINK}/"
    warehouse = config.warehouse
    return f"PostgreSQL schema {warehouse.published} (role {warehouse.reader_role})"


def _publish_duckdb(config: PipelineConfig, version: str) -> Published:
    target = snapshot_path(config)
    folder = config.publish_dir
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(f".{target.name}.*.partial"):  # of a publish that died
        leftover.unlink()
    partial = folder / f".{target.name}.{version}.partial"
    parquet = folder / f".parquet-{version}"
    parquet.mkdir()
    if target.exists():
        # The new copy starts as the last one, changed where the marts changed: a night
        # rewrites the months it rebuilt, not the whole history (readers keep the old file).
        shutil.copyfile(target, partial)
    written = kept = 0
    with connect(config.warehouse_path) as con:
        warehouse = con.execute("select current_database()").fetchall()[0][0]
        tables = _tables(con, warehouse)
        # Tables have no row order to keep; DuckDB then writes each Parquet file in parallel
        # (a 10M publish: docs/benchmarks.md, 2026-12-04).
        con.execute("set preserve_insertion_order = false")
        con.execute(f"attach {sql_path(partial)} as snapshot")
        try:
            previous = _published_parts(con)
            manifest = []
            for table in tables:
                if _columns(con, warehouse, table) != _columns(con, "snapshot", table):
                    previous.pop(table, None)  # new, or its columns changed: copied whole
                parts, rewritten = _publish_table(
                    con, table, previous.get(table, {}), folder, parquet
                )
                manifest += [
                    (table, name, part.rows, part.content_hash, list(part.parquet_files))
                    for name, part in parts.items()
                ]
                written += len(rewritten)
                kept += len(parts) - len(rewritten)
            for stale in set(_tables(con, "snapshot")) - set(tables):
                con.execute(f'drop table snapshot.main."{stale}"')
            _write_manifest(con, manifest)
        finally:
            con.execute("detach snapshot")
    partial.chmod(0o444)
    os.replace(partial, target)
    # A symbolic link is swapped as atomically as a file; the folder it left stays until the
    # next publish, for a reader still listing it.
    link = folder / f".{PARQUET_LINK}-{version}.link"
    link.symlink_to(parquet.name)
    # A copied folder (cp -r, shutil.copytree) turns the link into a real folder, which no
    # link can replace: that copy goes first.
    if (folder / PARQUET_LINK).is_dir() and not (folder / PARQUET_LINK).is_symlink():
        shutil.rmtree(folder / PARQUET_LINK)
    os.replace(link, folder / PARQUET_LINK)
    _remove_old_parquet(folder, keep={parquet.name})
    return Published(version, tables, str(target), folder / PARQUET_LINK, written, kept)


def _tables(con, catalog: str, schema: str = "main") -> list[str]:
    """The tables and views of `catalog`'s `schema`."""
    rows = con.execute(
        "select table_name from information_schema.tables "
        "where table_catalog = ? and table_schema = ? order by table_name",
        [catalog, schema],
    ).fetchall()
    return [name for (name,) in rows]


def _columns(con, catalog: str, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_catalog = ? and table_schema = 'main' and table_name = ? "
        "order by ordinal_position",
        [catalog, table],
    ).fetchall()


def _part_key_sql(table: str) -> str:
    """The part of each row of `table`, in SQL: for a monthly table the month as a number
    (202601 for the part 2026-01), which costs less per row than formatting it."""
    column = MONTHLY_TABLES.get(table)
    return f"(year({column}) * 100 + month({column}))" if column else f"'{WHOLE}'"


def _part_name(table: str, key) -> str:
    return f"{key // 100}-{key % 100:02d}" if table in MONTHLY_TABLES else key


def _parts_filter(table: str, months: list[str]) -> str:
    """SQL selecting the rows of `months` (parts of a monthly table; a table published
    whole is only ever copied whole). The range on the month's column lets DuckDB skip the
    row groups of other months instead of computing every row's part (DECISIONS.md,
    "Publishing")."""
    column = MONTHLY_TABLES[table]
    months = sorted(months)
    first = date.fromisoformat(f"{months[0]}-01")
    last = date.fromisoformat(f"{months[-1]}-01")
    after_last = date(last.year + last.month // 12, last.month % 12 + 1, 1)
    keys = ", ".join(month.replace("-", "") for month in months)
    return (
        f"{column} >= date '{first}' and {column} < date '{after_last}' "
        f"and {_part_key_sql(table)} in ({keys})"
    )


def _published_parts(con) -> dict[str, dict[str, Part]]:
    """What the last copy holds, per table and part (nothing for a new copy, or one
    published before the manifest existed)."""
    schema, name = MANIFEST.split(".")
    if name not in _tables(con, "snapshot", schema):
        return {}
    parts: dict[str, dict[str, Part]] = {}
    for table, part, rows, content_hash, files in con.execute(
        f"select * from snapshot.{MANIFEST}"
    ).fetchall():
        parts.setdefault(table, {})[part] = Part(rows, content_hash, tuple(files))
    return parts


def _publish_table(
    con, table: str, previous: dict[str, Part], folder: Path, parquet: Path
) -> tuple[dict[str, Part], set[str]]:
    """Brings `table` up to date in the snapshot and writes its Parquet folder: the parts
    whose rows changed are copied from the warehouse, the others kept (a hard link to the
    last version's file). Returns its parts and those it copied."""
    source = f'main."{table}"'
    current = {
        _part_name(table, key): (rows, content_hash)
        for key, rows, content_hash in con.execute(
            f"select {_part_key_sql(table)} as part, count(*), cast(sum(hash(t)) as varchar) "
            f"from {source} as t group by part"
        ).fetchall()
    } or {WHOLE: (0, "0")}  # an empty table is one empty part
    unchanged = {
        name
        for name, (rows, content_hash) in current.items()
        if name in previous
        and (previous[name].rows, previous[name].content_hash) == (rows, content_hash)
    }
    replaced = sorted(set(current) - unchanged)
    removed = sorted(set(previous) - set(current))
    copy = f'snapshot.main."{table}"'
    if not unchanged:
        # Views (the wide cohort pivot) become tables: the snapshot stands alone.
        con.execute(f"create or replace table {copy} as select * from {source}")
    elif replaced or removed:
        con.execute(f"delete from {copy} where {_parts_filter(table, replaced + removed)}")
        if replaced:
            con.execute(
                f"insert into {copy} select * from {source} where {_parts_filter(table, replaced)}"
            )
    directory = parquet / table
    directory.mkdir()
    files = {}
    for name in sorted(unchanged):
        try:
            files[name] = _link_files(folder, previous[name].parquet_files, directory)
        except FileNotFoundError:  # the last version's folder is gone: write it again
            replaced.append(name)
    files |= _write_parquet(con, table, replaced, directory)
    parts = {
        name: Part(rows, content_hash, tuple(str(f.relative_to(folder)) for f in files[name]))
        for name, (rows, content_hash) in current.items()
    }
    return parts, set(replaced)


def _link_files(folder: Path, files: tuple[str, ...], directory: Path) -> list[Path]:
    """Hard links to the last version's files of a part (files are never changed once
    written, so both versions share them)."""
    linked = []
    try:
        for file in files:
            linked.append(directory / Path(file).name)
            os.link(folder / file, linked[-1])
    except FileNotFoundError:
        for path in linked[:-1]:
            path.unlink()
        raise
    return linked


def _write_parquet(con, table: str, parts: list[str], directory: Path) -> dict[str, list[Path]]:
    """Writes each of `parts` of `table` as `<part>.parquet` in `directory`, one copy per
    part (faster than one copy partitioned by part: DECISIONS.md, "Publishing")."""
    source = f'main."{table}"'
    files = {}
    for name in parts:
        path = directory / f"{name}.parquet"
        where = "" if name == WHOLE else f" where {_parts_filter(table, [name])}"
        con.execute(f"copy (select * from {source}{where}) to {sql_path(path)} (format parquet)")
        files[name] = [path]
    return files


def _write_manifest(con, manifest: list[tuple]) -> None:
    con.execute(f"create schema if not exists snapshot.{MANIFEST.split('.')[0]}")
    con.execute(
        f"create or replace table snapshot.{MANIFEST} (table_name varchar, part varchar, "
        "row_count bigint, content_hash varchar, parquet_files varchar[])"
    )
    if manifest:
        con.executemany(f"insert into snapshot.{MANIFEST} values (?, ?, ?, ?, ?)", manifest)


def _remove_old_parquet(folder: Path, keep: set[str]) -> None:
    """Every Parquet version but the current and the one before it."""
    versions = sorted(p for p in folder.glob(".parquet-*") if p.is_dir() and p.name not in keep)
    for old in versions[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def _publish_postgres(config: PipelineConfig, version: str) -> Published:
    warehouse = config.warehouse
    schema = quote_identifier(warehouse.schema_name)
    published = quote_identifier(warehouse.published)
    staged = quote_identifier(f"{warehouse.published}__next")
    retired = f"{warehouse.published}__old_{uuid.uuid4().hex[:6]}"
    role = quote_identifier(warehouse.reader_role)
    con = pg_connect(config)
    try:
        cursor = con.cursor()
        tables = postgres_tables(con, warehouse.schema_name)
        # A publish that died half-way leaves its staged schema behind; start afresh.
        cursor.execute(f"drop schema if exists {staged} cascade")
        cursor.execute(f"create schema {staged}")
        for table in tables:
            cursor.execute(f'create table {staged}."{table}" as select * from {schema}."{table}"')
        _ensure_reader_role(cursor, warehouse.reader_role)
        cursor.execute(f"grant usage on schema {staged} to {role}")
        cursor.execute(f"grant select on all tables in schema {staged} to {role}")
        # Renaming a schema takes no lock on its tables: readers are not waited for.
        cursor.execute("begin")
        cursor.execute("select 1 from pg_namespace where nspname = %s", (warehouse.published,))
        if cursor.fetchone():
            cursor.execute(f"alter schema {published} rename to {quote_identifier(retired)}")
        cursor.execute(f"alter schema {staged} rename to {published}")
        cursor.execute("commit")
        _drop_retired(cursor, warehouse.published)
    finally:
        con.close()
    return Published(version, tables, warehouse.published)


def _ensure_reader_role(cursor, role: str) -> None:
    """Creates the reader role (no login: grant it to BI's users) when it is missing."""
    cursor.execute("select 1 from pg_roles where rolname = %s", (role,))
    if cursor.fetchone():
        return
    import psycopg2

    try:
        cursor.execute(f"create role {quote_identifier(role)} nologin")
    except psycopg2.errors.DuplicateObject:
        pass  # created meanwhile by another warehouse's publish
    except psycopg2.errors.InsufficientPrivilege:
        raise PermissionError(
            f"the role {role} does not exist and this user may not create it: as an "
            f"administrator, run once `create role {role} nologin` (then grant {role} to "
            "the BI users), or set warehouse.reader_role to an existing role"
        ) from None


def _drop_retired(cursor, published: str) -> None:
    """Drops the published schemas that were replaced, except those a reader still holds
    (in an open transaction): the next publish tries them again."""
    import psycopg2

    cursor.execute(
        "select nspname from pg_namespace where starts_with(nspname, %s)",
        (f"{published}__old_",),
    )
    for (name,) in cursor.fetchall():
        try:
            cursor.execute("begin")
            cursor.execute(f"set local lock_timeout = '{RETIRE_LOCK_TIMEOUT}'")
            cursor.execute(f"drop schema {quote_identifier(name)} cascade")
            cursor.execute("commit")
        except psycopg2.errors.LockNotAvailable:
            cursor.execute("rollback")
