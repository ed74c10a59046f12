import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from retention_pipeline.lib.settings import (
    DBT_PROJECT_DIR,
    WAREHOUSE_POOL,
    active_config,
    daily_partitions,
)

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class RetentionTranslator(DagsterDbtTranslator):
    """Marts keep their bare names as asset keys (BI reads them by name); the dbt folder
    (staging, intermediate, core, retention, audit) becomes the asset group."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[-2] if len(fqn) > 2 else "dbt"


class DbtBuildConfig(dg.Config):
    as_of: str | None = None
    """Last complete day (YYYY-MM-DD); empty derives it from the newest valid order."""
    full_refresh: bool = False
    """Rebuild the incremental models whole instead of applying the changes since their
    last build (docs/incremental.md)."""


# The run's as-of date reaches dbt in the environment (int_run__as_of reads it when the
# `as_of` var is not set), not in --vars: dbt parses the whole project again whenever its
# vars change (~3 s), and the as-of date changes every night.
AS_OF_ENV = "RETENTION_AS_OF"


def dbt_vars() -> dict[str, Any]:
    """The vars of every dbt run: the configuration's, the same from night to night."""
    config = active_config()
    return {
        "active_window_days": config.active_window_days,
        "excluded_statuses": list(config.excluded_statuses),
        **config.segments.model_dump(),
        "status_map": dict(config.status_map),
        "gross_margin": config.gross_margin,
        "free_orders_are_purchases": config.free_orders_are_purchases,
        "low_p_alive": config.clv.low_p_alive,
        "raw_schema": config.raw_schema,
    }


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=RetentionTranslator(),
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def retention_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, config: DbtBuildConfig
):
    """Builds and tests every dbt model on the warehouse as of the run's as-of date."""
    # Unit tests check the SQL, not the data: `make test` runs them, nightly runs need not.
    args = [
        "build",
        "--exclude-resource-type",
        "unit_test",
        "--vars",
        json.dumps(dbt_vars()),
        *(["--full-refresh"] if config.full_refresh else []),
    ]
    with _environment(AS_OF_ENV, config.as_of or ""):  # dbt's environment is read here
        invocation = dbt.cli(args, context=context, target_path=warehouse_target_path())
    yield from invocation.stream()


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def dbt_ops_config(
    job: dg.JobDefinition, as_of: str | None, full_refresh: bool = False
) -> dict[str, Any]:
    """Run config giving `as_of` and `full_refresh` to every step of the dbt models in
    `job`. The CLV assets sit between dbt models (after fct_orders, before customer_ltv
    and winback_candidates), so Dagster splits the dbt multi-asset into a step before and
    a step after them (retention_dbt_models, retention_dbt_models_2, ...), all in the
    same run."""
    name = retention_dbt_models.op.name
    steps = [n for n in job.graph.node_names() if n == name or n.startswith(f"{name}_")]
    config = {"as_of": as_of, "full_refresh": full_refresh}
    return {step: {"config": config} for step in sorted(steps)}


def warehouse_target_path() -> Path:
    """dbt's target folder beside the warehouse file (on PostgreSQL, named after the schema
    in that folder), kept between runs: its partial parse state matches this warehouse's
    profile, so the next run skips a full parse (~3 s), and runs do not pile up a folder
    each. Runs on one warehouse never overlap (the pool)."""
    config = active_config()
    warehouse = config.warehouse_path
    name = warehouse.name if config.warehouse.type == "duckdb" else config.warehouse.schema_name
    return warehouse.with_name(f"{name}.dbt-target")
