"""The active configuration of this process, and what derives from it at load time."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import dagster as dg

from retention_pipeline.lib.config import CONFIG_ENV_VAR, ConfigError, PipelineConfig, load_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = PROJECT_ROOT / "config" / "demo.yaml"
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
WAREHOUSE_POOL = "warehouse_writer"
DUCKDB_PATH_ENV = "RETENTION_DUCKDB_PATH"
DBT_TARGET_ENV = "RETENTION_DBT_TARGET"


@cache
def active_config() -> PipelineConfig:
    """The config named by RETENTION_PIPELINE_CONFIG, else the bundled demo config.

    Also points dbt's profile at the configured warehouse for this process.
    """
    config = load_config(os.environ.get(CONFIG_ENV_VAR, DEMO_CONFIG))
    os.environ.update(dbt_profile_env(config))
    return config


def dbt_profile_env(config: PipelineConfig) -> dict[str, str]:
    """The environment variables dbt's profiles.yml reads, for the configured warehouse."""
    if config.warehouse.type == "duckdb":
        return {DBT_TARGET_ENV: "duckdb", DUCKDB_PATH_ENV: str(config.warehouse_path)}
    url = urlsplit(config.warehouse_url)
    if url.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{config.warehouse.url_env} must hold a postgresql://user@host:5432/database URL"
        )
    query = parse_qs(url.query)
    return {
        DBT_TARGET_ENV: "postgres",
        "RETENTION_PG_HOST": url.hostname or "localhost",
        "RETENTION_PG_PORT": str(url.port or 5432),
        "RETENTION_PG_USER": unquote(url.username or ""),
        "DBT_ENV_SECRET_RETENTION_PG_PASSWORD": unquote(url.password or ""),
        "RETENTION_PG_DATABASE": unquote(url.path.lstrip("/")) or "postgres",
        "RETENTION_PG_SCHEMA": config.warehouse.schema_name,
        "RETENTION_PG_SSLMODE": query.get("sslmode", ["prefer"])[0],
    }


def warehouse_kind() -> str:
    """The warehouse's kind tag on the assets that write it: duckdb or postgres."""
    return active_config().warehouse.type


@cache
def daily_partitions() -> dg.DailyPartitionsDefinition:
    """One partition per local day of orders; the first also holds everything before it."""
    config = active_config()
    return dg.DailyPartitionsDefinition(
        start_date=config.schedule.partitions_start.isoformat(),
        timezone=config.reporting_timezone,
    )
