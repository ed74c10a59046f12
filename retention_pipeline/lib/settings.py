"""The active configuration of this process, and what derives from it at load time."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import dagster as dg

from retention_pipeline.lib.config import CONFIG_ENV_VAR, PipelineConfig, load_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = PROJECT_ROOT / "config" / "demo.yaml"
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
WAREHOUSE_POOL = "warehouse_writer"
DUCKDB_PATH_ENV = "RETENTION_DUCKDB_PATH"


@cache
def active_config() -> PipelineConfig:
    """The config named by RETENTION_PIPELINE_CONFIG, else the bundled demo config.

    Also points dbt's profile at the configured DuckDB file for this process.
    """
    config = load_config(os.environ.get(CONFIG_ENV_VAR, DEMO_CONFIG))
    os.environ[DUCKDB_PATH_ENV] = str(config.warehouse_path)
    return config


@cache
def daily_partitions() -> dg.DailyPartitionsDefinition:
    """One partition per local day of orders; the first also holds everything before it."""
    config = active_config()
    return dg.DailyPartitionsDefinition(
        start_date=config.schedule.partitions_start.isoformat(),
        timezone=config.reporting_timezone,
    )
