"""Runs the Dagster job in-process for the command line: the same assets the UI runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg

from retention_pipeline.lib.config import CONFIG_ENV_VAR, ConfigError, PipelineConfig
from retention_pipeline.lib.database import source_url
from retention_pipeline.lib.settings import active_config, daily_partitions


@dataclass(frozen=True)
class RunOutcome:
    config: PipelineConfig
    partition: str
    as_of: date | None
    success: bool


def _instance() -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def run_pipeline(
    config_path: Path, as_of: date | None = None, full_resync: bool = False
) -> RunOutcome:
    """Loads every order up to `as_of` (default: the last complete day) and builds all
    tables, as one run of the nightly job. A database source is read from its watermark
    on, or whole with `full_resync`, which also rebuilds the incremental models whole."""
    os.environ[CONFIG_ENV_VAR] = str(Path(config_path).resolve())
    config = active_config()
    if config.source.is_database:
        # A missing variable stops the command here, before the run starts.
        source_url(config.source)
    last = daily_partitions().get_last_partition_key()
    if as_of is not None:
        if as_of < config.schedule.partitions_start:
            raise ConfigError(
                f"--as-of {as_of} is before schedule.partitions_start "
                f"({config.schedule.partitions_start}); set partitions_start earlier"
            )
        if last is None or as_of.isoformat() > last:
            raise ConfigError(f"--as-of {as_of} is not a complete day yet (the last is {last})")
        last = as_of.isoformat()
    from retention_pipeline.defs.transformation.assets import dbt_ops_config

    job = _nightly_job()
    run_config = {
        "ops": {
            "raw_orders": {"config": {"full_history": True, "full_resync": full_resync}},
            **dbt_ops_config(job, as_of.isoformat() if as_of else None, full_resync),
        }
    }
    # One partition, the last day, with the whole history behind it: a range of thousands
    # of daily partitions would only add bookkeeping.
    return _execute(job, config, run_config, last, as_of)


def run_nightly(config_path: Path, day: date) -> RunOutcome:
    """What the nightly schedule runs for `day`, in-process (the benchmark times it)."""
    os.environ[CONFIG_ENV_VAR] = str(Path(config_path).resolve())
    from retention_pipeline.defs.automation.schedules import nightly_run_config

    job = _nightly_job()
    run_config = nightly_run_config(job, day.isoformat())
    return _execute(job, active_config(), run_config, day.isoformat(), day)


def _nightly_job() -> dg.JobDefinition:
    from retention_pipeline.definitions import defs
    from retention_pipeline.defs.automation.schedules import NIGHTLY_JOB

    return defs().resolve_job_def(NIGHTLY_JOB)


def _execute(
    job: dg.JobDefinition,
    config: PipelineConfig,
    run_config: dict,
    partition: str,
    as_of: date | None,
) -> RunOutcome:
    result = job.execute_in_process(
        run_config=run_config, instance=_instance(), partition_key=partition, raise_on_error=False
    )
    return RunOutcome(config, partition, as_of, result.success)
