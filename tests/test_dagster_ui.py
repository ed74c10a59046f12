"""`make dev`'s Dagster UI: the definitions load, and a backfill of a date range launched
through the UI's GraphQL API runs as one run and succeeds."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from retention_pipeline.lib.generate import generate_orders, write_orders

ROOT = Path(__file__).resolve().parents[1]
BACKFILL_DAYS = ["2025-06-01", "2025-06-02", "2025-06-03"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    work = tmp_path_factory.mktemp("ui")
    write_orders(generate_orders(customers=300, seed=3), work / "orders.csv")
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["source"]["path"] = "orders.csv"
    config["warehouse"]["path"] = "warehouse.duckdb"
    config.pop("marketing_spend", None)  # the demo's spend file is not here
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RETENTION_PIPELINE_CONFIG": str(work / "config.yaml"),
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=open(work / "dagster.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(
            lambda: _graphql(port, "{ version }"), timeout=180, what="the Dagster UI to start"
        )
        yield port, work
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


REPOSITORY_QUERY = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    location { name }
    schedules { name cronSchedule executionTimezone }
    jobs { name }
    assetNodes { assetKey { path } }
} } } }
"""


def test_ui_loads_the_definitions(dagster_ui):
    port, _ = dagster_ui
    (repository,) = _graphql(port, REPOSITORY_QUERY)["repositoriesOrError"]["nodes"]
    assert repository["location"]["name"] == "retention_pipeline"
    assert {
        "name": "nightly_schedule",
        "cronSchedule": "0 2 * * *",
        "executionTimezone": "UTC",
    } in repository["schedules"]
    assert "retention_nightly" in {job["name"] for job in repository["jobs"]}
    keys = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert {"raw/orders", "fct_orders", "cohort_retention", "retention_rates"} <= keys


def test_backfill_of_a_range_runs_as_one_successful_run(dagster_ui):
    port, work = dagster_ui
    (repository,) = _graphql(port, REPOSITORY_QUERY)["repositoriesOrError"]["nodes"]
    selection = [{"path": node["assetKey"]["path"]} for node in repository["assetNodes"]]
    launched = _graphql(
        port,
        """mutation($params: LaunchBackfillParams!) {
            launchPartitionBackfill(backfillParams: $params) {
                __typename ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message }
            } }""",
        {
            "params": {
                "partitionNames": BACKFILL_DAYS,
                "assetSelection": selection,
                "fromFailure": False,
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished():
        status = _graphql(
            port,
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) {"
            " ... on PartitionBackfill { status } } }",
            {"id": backfill_id},
        )["partitionBackfillOrError"]["status"]
        return status if status not in ("REQUESTED", "CANCELING") else None

    status = _wait_for(finished, timeout=420, what="the backfill to finish")
    runs = _graphql(
        port,
        "{ runsOrError { ... on Runs { results { status tags { key value } } } } }",
    )["runsOrError"]["results"]
    log = (work / "dagster.log").read_text()[-3000:]
    assert status == "COMPLETED_SUCCESS", log
    assert len(runs) == 1, "a backfill of a range must be one run"
    tags = {tag["key"]: tag["value"] for tag in runs[0]["tags"]}
    assert runs[0]["status"] == "SUCCESS"
    assert tags["dagster/asset_partition_range_start"] == BACKFILL_DAYS[0]
    assert tags["dagster/asset_partition_range_end"] == BACKFILL_DAYS[-1]
