from datetime import timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from retention_pipeline.defs.transformation.assets import dbt_ops_config
from retention_pipeline.lib.settings import active_config, daily_partitions

NIGHTLY_JOB = "retention_nightly"


def nightly_run_config(job: dg.JobDefinition, day: str) -> dict:
    """What a night runs for `day`: its orders and the configured lookback of earlier days,
    then every dbt model as of that day."""
    return {
        "ops": {
            "raw_orders": {"config": {"lookback_days": active_config().schedule.lookback_days}},
            **dbt_ops_config(job, day),
        }
    }


retention_job = dg.define_asset_job(
    NIGHTLY_JOB,
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions(),
    description="Loads the partitions' orders and rebuilds every table downstream.",
)


def _nightly_cron() -> str:
    hour, minute = active_config().schedule.time.split(":")
    return f"{int(minute)} {int(hour)} * * *"


@dg.schedule(
    job=retention_job,
    cron_schedule=_nightly_cron(),
    execution_timezone=active_config().schedule_timezone,
    # A nightly pipeline should run nightly once the daemon is up, not wait for a click.
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night: yesterday's partition (reporting timezone) and all downstream.",
)
def nightly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    timezone = ZoneInfo(active_config().reporting_timezone)
    scheduled = context.scheduled_execution_time.astimezone(timezone)
    yesterday = (scheduled - timedelta(days=1)).date().isoformat()
    job = context.repository_def.get_job(NIGHTLY_JOB)
    return dg.RunRequest(partition_key=yesterday, run_config=nightly_run_config(job, yesterday))
