"""The loaded Dagster definitions: every asset, check, job and schedule is there."""

import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = """
import json
from datetime import datetime, timezone
import dagster as dg
from retention_pipeline.definitions import defs
d = defs()
graph = d.resolve_asset_graph()
schedule = d.resolve_schedule_def("nightly_schedule")
request = schedule.evaluate_tick(dg.build_schedule_context(
    scheduled_execution_time=datetime(2025, 3, 10, 2, 0, tzinfo=timezone.utc),
    repository_def=d.get_repository_def(),
)).run_requests[0]
job = d.resolve_job_def("retention_nightly")
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
    "checks": sorted(k.name for k in graph.asset_check_keys),
    "cron": schedule.cron_schedule,
    "timezone": schedule.execution_timezone,
    "partition": request.partition_key,
    "run_config": request.run_config,
    "first_partition": job.partitions_def.get_first_partition_key(),
}))
"""


def _loaded():
    import json

    env = {**os.environ, "RETENTION_PIPELINE_CONFIG": str(ROOT / "config" / "demo.yaml")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_definitions_load_with_every_asset_check_job_and_schedule():
    loaded = _loaded()
    assert set(loaded["assets"]) >= {
        "raw/orders", "raw/rejected_orders", "raw/load_audit",
        "staging/stg_orders__orders", "intermediate/int_orders__classified",
        "fct_orders", "dim_customers", "cohort_retention", "cohort_retention_wide",
        "retention_rates", "customer_base_daily", "rejected_orders", "load_audit",
    }  # fmt: skip
    assert "row_accounting_balances" in loaded["checks"]
    assert any(
        name.startswith("assert_retention_rates_identities") for name in loaded["checks"]
    ) or any("unique" in name for name in loaded["checks"])
    # The demo config: nightly at 02:00 UTC, partitions from 2023-01-01.
    assert loaded["cron"] == "0 2 * * *"
    assert loaded["timezone"] == "UTC"
    assert loaded["first_partition"] == "2023-01-01"
    # The 02:00 tick of 10 March runs 9 March, with 9 March as the as-of date.
    assert loaded["partition"] == "2025-03-09"
    assert loaded["run_config"]["ops"]["retention_dbt_models"]["config"]["as_of"] == "2025-03-09"
