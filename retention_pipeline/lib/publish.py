"""Publishing: the consistent copy of the marts that BI reads, swapped in whole after a run
whose checks passed, so that BI never blocks a run and never reads a half-built table.

DuckDB: a snapshot file (`<publish_dir>/<warehouse file name>`) written beside the old one
and moved over it with os.replace, and one Parquet file per table in a version folder that
the `parquet` link is moved to. A reader holding the old file keeps reading it whole.
PostgreSQL: the marts are copied into a fresh schema, which replaces the published schema
by two renames in one transaction; only the reader role may select from it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
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


@dataclass(frozen=True)
class Published:
    version: str
    tables: list[str]
    location: str  # the snapshot file, or the published schema
    parquet: Path | None = None  # the Parquet link (DuckDB only)


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
    with connect(config.warehouse_path) as con:
        tables = [
            name
            for (name,) in con.execute(
                "select table_name from information_schema.tables "
                "where table_catalog = current_database() and table_schema = 'main' "
                "order by table_name"
            ).fetchall()
        ]
        # Tables have no row order to keep; DuckDB then writes each Parquet file in parallel
        # (a 10M publish: docs/benchmarks.md, 2026-12-04).
        con.execute("set preserve_insertion_order = false")
        con.execute(f"attach {sql_path(partial)} as snapshot")
        try:
            for table in tables:
                # Views (the wide cohort pivot) become tables: the snapshot stands alone.
                con.execute(f'create table snapshot."{table}" as select * from main."{table}"')
                out = sql_path(parquet / f"{table}.parquet")
                con.execute(f'copy snapshot."{table}" to {out} (format parquet)')
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
    return Published(version, tables, str(target), folder / PARQUET_LINK)


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
