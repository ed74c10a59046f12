"""The Dagster definitions as the UI loads them: every asset, check, job, partition and the
nightly schedule, and the run the schedule asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import yaml
from pipeline_helpers import ROOT, run_env

from retention_pipeline.lib.config import CONFIG_ENV_VAR
from retention_pipeline.lib.settings import DUCKDB_PATH_ENV

DEMO_CONFIG = ROOT / "config" / "demo.yaml"
JOB = "retention_nightly"

RAW_ASSETS = {"raw/orders", "raw/rejected_orders", "raw/load_audit"}
MART_ASSETS = {
    "fct_orders", "dim_customers", "cohort_retention", "cohort_retention_wide",
    "retention_rates", "customer_base_daily", "kpi_periodic", "kpi_daily",
    "customer_segments", "customer_segment_history", "segment_movements",
    "winback_candidates", "unit_economics", "rejected_orders", "load_audit",
    "customer_ltv", "clv_model_params", "clv_holdout_eval", "forecast_monthly",
}  # fmt: skip
CLV_ASSETS = {
    "clv/customer_predictions", "clv/model_params", "clv/fit_attempts", "clv/holdout_eval",
    "clv/forecast_monthly",
}  # fmt: skip
PUBLISHING_ASSETS = {"retention_report", "published_marts"}


def _model_assets() -> set[str]:
    """The asset key of every dbt model in the repository: staging and intermediate models
    under their folder's name, marts by their bare name."""
    keys = set()
    for path in (ROOT / "dbt_project" / "models").rglob("*.sql"):
        layer = path.relative_to(ROOT / "dbt_project" / "models").parts[0]
        keys.add(path.stem if layer == "marts" else f"{layer}/{path.stem}")
    return keys


def _fresh_definitions() -> dg.Definitions:
    """The definitions loaded under the active config, even when this process imported
    them before under another one (the defs modules read the config when imported)."""
    from retention_pipeline.lib import settings

    settings.active_config.cache_clear()
    settings.daily_partitions.cache_clear()
    for name in [n for n in sys.modules if n.startswith("retention_pipeline.defs")]:
        del sys.modules[name]
    sys.modules.pop("retention_pipeline.definitions", None)
    from retention_pipeline.definitions import defs

    return defs()


@pytest.fixture(scope="module")
def definitions():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CONFIG_ENV_VAR, str(DEMO_CONFIG))
        patch.setenv(DUCKDB_PATH_ENV, "")  # set by the config; restored afterwards
        yield _fresh_definitions()
        from retention_pipeline.lib import settings

        settings.active_config.cache_clear()
        settings.daily_partitions.cache_clear()


@pytest.fixture(scope="module")
def asset_graph(definitions):
    return definitions.resolve_asset_graph()


def _keys(asset_graph) -> set[str]:
    return {key.to_user_string() for key in asset_graph.get_all_asset_keys()}


def test_every_asset_is_defined(asset_graph):
    keys = _keys(asset_graph)
    assert keys >= RAW_ASSETS | MART_ASSETS | PUBLISHING_ASSETS | CLV_ASSETS
    models = _model_assets()
    assert {"staging/stg_orders__orders", "intermediate/int_orders__classified"} <= models
    assert models <= keys, f"dbt models without an asset: {sorted(models - keys)}"


@pytest.mark.parametrize("table", ["orders", "rejected_orders", "load_audit"])
def test_dbt_sources_hang_off_the_extraction_assets(asset_graph, table):
    staging = asset_graph.get(dg.AssetKey(["staging", f"stg_orders__{table}"]))
    assert dg.AssetKey(["raw", table]) in staging.parent_keys


def test_the_marketing_spend_feeds_its_staging_model_and_only_warns(asset_graph):
    staging = asset_graph.get(dg.AssetKey(["staging", "stg_marketing__spend"]))
    assert dg.AssetKey(["raw", "marketing_spend"]) in staging.parent_keys
    assert asset_graph.get(dg.AssetKey("unit_economics")).group_name == "marketing"
    key = dg.AssetCheckKey(dg.AssetKey(["raw", "marketing_spend"]), "marketing_spend_rows_valid")
    assert key in asset_graph.asset_check_keys
    assert not asset_graph.get_check_spec(key).blocking


def test_every_asset_is_daily_partitioned_from_the_configured_start(asset_graph):
    for key in asset_graph.get_all_asset_keys():
        partitions = asset_graph.get(key).partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition), key
        assert partitions.get_first_partition_key() == "2023-01-01", key
        assert partitions.timezone == "UTC", key


def test_the_report_comes_after_the_marts_it_reads(asset_graph):
    report = asset_graph.get(dg.AssetKey("retention_report"))
    reads = {
        "cohort_retention", "retention_rates", "kpi_periodic", "customer_base_daily",
        "customer_segments",
    }  # fmt: skip
    assert {dg.AssetKey(table) for table in reads} <= set(report.parent_keys)


def test_the_clv_models_run_between_fct_orders_and_the_marts_that_read_them(asset_graph):
    for key in CLV_ASSETS:
        node = asset_graph.get(dg.AssetKey.from_user_string(key))
        assert dg.AssetKey("fct_orders") in node.parent_keys, key
        assert node.group_name == "clv"
    staging = asset_graph.get(dg.AssetKey(["staging", "stg_clv__customer_predictions"]))
    assert dg.AssetKey(["clv", "customer_predictions"]) in staging.parent_keys
    winback = asset_graph.get(dg.AssetKey("winback_candidates"))
    assert dg.AssetKey("customer_ltv") in winback.parent_keys
    for mart in ("customer_ltv", "clv_model_params", "clv_holdout_eval", "forecast_monthly"):
        assert asset_graph.get(dg.AssetKey(mart)).group_name == "clv"


def test_a_rejected_clv_fit_fails_a_check_without_stopping_the_run(asset_graph):
    key = dg.AssetCheckKey(dg.AssetKey(["clv", "model_params"]), "clv_fits_accepted")
    assert key in asset_graph.asset_check_keys
    assert not asset_graph.get_check_spec(key).blocking


def test_the_nightly_job_runs_the_dbt_models_before_and_after_the_clv_models(definitions):
    """One run: Dagster splits the dbt multi-asset around the CLV assets, and every dbt
    step gets the run's as-of date."""
    from retention_pipeline.defs.transformation.assets import dbt_ops_config

    job = definitions.resolve_job_def(JOB)
    steps = dbt_ops_config(job, "2025-01-31")
    assert sorted(steps) == ["retention_dbt_models", "retention_dbt_models_2"]
    assert {step["config"]["as_of"] for step in steps.values()} == {"2025-01-31"}
    refreshed = dbt_ops_config(job, None, full_refresh=True)
    assert {step["config"]["full_refresh"] for step in refreshed.values()} == {True}
    assert "clv_models" in job.graph.node_names()


def test_publishing_comes_after_every_mart(asset_graph):
    published = asset_graph.get(dg.AssetKey("published_marts"))
    assert {dg.AssetKey(mart) for mart in MART_ASSETS} <= set(published.parent_keys)


def test_the_row_accounting_check_blocks_downstream(asset_graph):
    key = dg.AssetCheckKey(dg.AssetKey(["raw", "load_audit"]), "row_accounting_balances")
    assert key in asset_graph.asset_check_keys
    assert asset_graph.get_check_spec(key).blocking


@pytest.mark.parametrize(
    ("asset", "check"),
    [
        ("fct_orders", "unique_fct_orders_order_id"),
        ("fct_orders", "column_values_fct_orders"),
        ("dim_customers", "unique_dim_customers_customer_id"),
        ("customer_base_daily", "unique_customer_base_daily_activity_date"),
        ("cohort_retention", "unique_combination_of_columns_cohort_retention"),
        ("retention_rates", "unique_combination_of_columns_retention_rates"),
        ("customer_segments", "unique_customer_segments_customer_id"),
        ("winback_candidates", "unique_winback_candidates_winback_rank"),
        ("load_audit", "assert_load_audit_balances"),
    ],
)
def test_dbt_tests_are_asset_checks(asset_graph, asset, check):
    names = {k.name for k in asset_graph.asset_check_keys if k.asset_key == dg.AssetKey(asset)}
    assert any(name.startswith(check) for name in names), f"{asset}: {sorted(names)}"


def test_every_mart_has_dbt_checks(asset_graph):
    checked = {key.asset_key.to_user_string() for key in asset_graph.asset_check_keys}
    views = {"cohort_retention_wide"}  # a pivot of cohort_retention, checked there
    assert MART_ASSETS - views <= checked


def test_the_nightly_job_builds_every_asset_daily(definitions, asset_graph):
    job = definitions.resolve_job_def(JOB)
    assert isinstance(job.partitions_def, dg.DailyPartitionsDefinition)
    assert job.partitions_def.get_first_partition_key() == "2023-01-01"
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert selected == _keys(asset_graph)


def test_the_nightly_schedule_runs_at_the_configured_time(definitions):
    (schedule,) = [s for s in definitions.schedules if s.job_name == JOB]
    assert schedule.cron_schedule == "0 2 * * *"  # schedule.time "02:00" in demo.yaml
    assert schedule.execution_timezone == "UTC"  # the reporting timezone by default
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


@pytest.mark.parametrize(
    ("scheduled", "partition"),
    [
        (datetime(2025, 3, 10, 2, 0, tzinfo=UTC), "2025-03-09"),
        (datetime(2025, 1, 1, 2, 0, tzinfo=UTC), "2024-12-31"),
        (datetime(2024, 3, 1, 2, 0, tzinfo=UTC), "2024-02-29"),
    ],
)
def test_the_schedule_asks_for_yesterdays_partition(definitions, scheduled, partition):
    (schedule,) = [s for s in definitions.schedules if s.job_name == JOB]
    context = dg.build_schedule_context(
        scheduled_execution_time=scheduled, repository_def=definitions.get_repository_def()
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == partition
    ops = request.run_config["ops"]
    assert ops["retention_dbt_models"]["config"]["as_of"] == partition
    assert ops["retention_dbt_models_2"]["config"]["as_of"] == partition
    assert ops["raw_orders"]["config"]["lookback_days"] == 7  # the default lookback
    assert partition in definitions.resolve_job_def(JOB).partitions_def.get_partition_keys(
        current_time=scheduled
    )


# Loads the definitions under another config in a fresh process: the schedule's time and
# timezone, the reporting timezone of the partitions and their start all come from it.
OTHER_CONFIG_SCRIPT = """
import json, sys
from datetime import datetime
from zoneinfo import ZoneInfo
import dagster as dg
from retention_pipeline.definitions import defs

d = defs()
(schedule,) = d.schedules
job = d.resolve_job_def("retention_nightly")
context = dg.build_schedule_context(
    scheduled_execution_time=datetime.fromisoformat(sys.argv[1]),
    repository_def=d.get_repository_def(),
)
(request,) = schedule.evaluate_tick(context).run_requests
print(json.dumps({
    "cron": schedule.cron_schedule,
    "timezone": schedule.execution_timezone,
    "first_partition": job.partitions_def.get_first_partition_key(),
    "partition_timezone": job.partitions_def.timezone,
    "partition": request.partition_key,
    "run_config": request.run_config,
}))
"""


def test_schedule_and_partitions_follow_the_config(tmp_path):
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["source"]["path"] = str((DEMO_CONFIG.parent / config["source"]["path"]).resolve())
    config["warehouse"]["path"] = "warehouse.duckdb"
    config["reporting_timezone"] = "America/New_York"
    config["schedule"] = {
        "time": "03:45",
        "timezone": "Europe/Berlin",
        "partitions_start": "2021-03-04",
        "lookback_days": 2,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    # 03:45 in Berlin on 2 June is 21:45 on 1 June in New York: the last complete day
    # there, and so the partition to run, is 31 May.
    scheduled = datetime(2025, 6, 2, 3, 45, tzinfo=ZoneInfo("Europe/Berlin"))
    result = subprocess.run(
        [sys.executable, "-c", OTHER_CONFIG_SCRIPT, scheduled.isoformat()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=run_env(tmp_path / "config.yaml"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["cron"] == "45 3 * * *"
    assert loaded["timezone"] == "Europe/Berlin"
    assert loaded["first_partition"] == "2021-03-04"
    assert loaded["partition_timezone"] == "America/New_York"
    assert loaded["partition"] == "2025-05-31"
    ops = loaded["run_config"]["ops"]
    assert ops["retention_dbt_models"]["config"]["as_of"] == "2025-05-31"
    assert ops["raw_orders"]["config"]["lookback_days"] == 2
