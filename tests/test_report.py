"""The pictures and the HTML report: each chart drawn from a real small warehouse, the report
the pipeline writes beside it, the report in a real browser (headless Chromium), the
`report` command, and the charts in the Dagster asset's metadata."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import service_unavailable
from pipeline_helpers import BIN, ROOT, run_cli, run_env, write_config

from retention_pipeline.lib import charts
from retention_pipeline.lib.generate import generate_orders, write_orders
from retention_pipeline.lib.report import CHARTS, images_dir, render_report, report_path


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    """A warehouse built by `retention-pipeline run` from 400 generated customers."""
    directory = tmp_path_factory.mktemp("report")
    write_orders(generate_orders(customers=400, seed=11), directory / "orders.csv")
    run_cli(write_config(directory))
    return directory / "warehouse.duckdb"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


# --------------------------------------------------------------------------------------------
# The charts
# --------------------------------------------------------------------------------------------

DRAWN = [chart.name for chart in CHARTS]

FIXED_SIZE = (
    round(charts.LINE_FIGSIZE[0] * charts.DPI),
    round(charts.LINE_FIGSIZE[1] * charts.DPI),
)


@pytest.mark.parametrize(
    "draw",
    [charts.retention_rates_chart, charts.ltv_curves_chart, charts.segment_sizes_chart],
    ids=lambda draw: draw.__name__,
)
def test_a_chart_is_a_png_of_its_size(warehouse, tmp_path, draw):
    out = draw(warehouse, tmp_path / "chart.png")
    assert out == tmp_path / "chart.png"
    assert out.stat().st_size > 5_000  # axes, lines and labels, not an empty canvas
    assert png_size(out) == FIXED_SIZE


def test_the_heatmap_has_a_row_per_cohort(warehouse, tmp_path):
    out = charts.cohort_heatmap(warehouse, tmp_path / "heatmap.png", cohorts=6)
    taller = charts.cohort_heatmap(warehouse, tmp_path / "taller.png", cohorts=12)
    width, height = png_size(out)
    assert width == charts.HEATMAP_WIDTH * charts.DPI
    assert abs(height - (0.36 * 6 + 1.6) * charts.DPI) <= 1
    assert png_size(taller)[1] > height
    assert out.stat().st_size > 5_000


def test_charts_of_an_empty_warehouse_say_so(warehouse, tmp_path):
    """A warehouse whose marts have no rows yet (a first run on an empty source) draws
    charts that say there is nothing yet, not a crash."""
    import duckdb

    empty = tmp_path / "empty.duckdb"
    with duckdb.connect(str(empty)) as con:
        con.execute(f"attach '{warehouse}' as built (read_only)")
        for table in ("cohort_retention", "retention_rates", "customer_segments"):
            con.execute(f"create table main.{table} as select * from built.main.{table} limit 0")
    for draw in (
        charts.cohort_heatmap,
        charts.retention_rates_chart,
        charts.ltv_curves_chart,
        charts.segment_sizes_chart,
    ):
        assert png_size(draw(empty, tmp_path / f"{draw.__name__}.png"))[0] > 0


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def test_the_pipeline_writes_the_report_beside_the_warehouse(warehouse):
    page = report_path(warehouse).read_text()
    images = re.findall(r'<img id="([a-z_]+)"[^>]* src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in images] == DRAWN
    for name, data in images:
        png = base64.b64decode(data)
        assert png == (images_dir(report_path(warehouse)) / f"{name}.png").read_bytes()
    # Self-contained: nothing loads from anywhere else.
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_the_report_states_the_last_complete_months_numbers(warehouse, tmp_path):
    report = render_report(warehouse, tmp_path / "report.html", currency="EUR")
    h = report.headline
    assert h is not None and h.previous is not None
    assert h.month > h.previous.month
    page = (tmp_path / "report.html").read_text()
    assert f"{h.month:%B %Y}, the last complete month" in page
    assert f"{h.crr:.1%}" in page and f"{h.churn_rate:.1%}" in page
    assert f"{h.repeat_purchase_rate:.1%}" in page
    assert f"{h.net_revenue:,.0f} EUR" in page
    assert f"{h.buying_customers:,}" in page
    assert h.buying_customers == h.new_customers + h.returning_customers
    assert report.missing == {}


def test_the_report_command_renders_an_existing_warehouse(warehouse, tmp_path):
    config = warehouse.parent / "config.yaml"
    out = tmp_path / "elsewhere" / "retention.html"
    result = subprocess.run(
        [str(BIN / "retention-pipeline"), "report", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=run_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(out) in result.stdout
    assert out.read_text().startswith("<!doctype html>")
    assert len(list(images_dir(out).glob("*.png"))) == len(DRAWN)


def test_the_report_command_without_a_warehouse_says_what_to_run(tmp_path):
    config = write_config(tmp_path)  # no run: no warehouse.duckdb beside it
    result = subprocess.run(
        [str(BIN / "retention-pipeline"), "report", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=run_env(),
    )
    assert result.returncode == 2
    assert "retention-pipeline run --config" in result.stderr


# --------------------------------------------------------------------------------------------
# The report in a browser
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; module-scoped so that a missing browser skips before the warehouse
    is built."""
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((path for path in map(shutil.which, names) if path), None)
    if found is None:
        service_unavailable("Chromium is not installed (Debian: apt-get install -y chromium)")
    return found


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, socket):
        self.socket = socket
        self.events: list[dict] = []
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv(timeout=deadline - time.monotonic()))
            self.events.append(message)
            if message.get("method") == method:
                return message
        raise AssertionError(f"no {method} within {timeout} s")

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(" ".join(str(a.get("value")) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found


@pytest.fixture
def browser(tmp_path, chromium):
    """Headless Chromium with its DevTools port open; yields the page's DevTools client."""
    from websockets.sync.client import connect

    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "Chromium exited at start"
            assert time.monotonic() < deadline, "Chromium opened no DevTools port in 30 s"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            (page,) = [t for t in json.load(r) if t["type"] == "page"]
        with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
            yield DevTools(socket)
    finally:
        process.terminate()
        process.wait(timeout=30)


IMAGES_SCRIPT = """JSON.stringify(Array.from(document.images).map(image => ({
    id: image.id, complete: image.complete,
    width: image.naturalWidth, height: image.naturalHeight})))"""


def test_the_report_draws_its_charts_in_a_browser_without_errors(browser, warehouse):
    report = report_path(warehouse)
    for domain in ("Runtime", "Log", "Page"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=report.as_uri())
    browser.wait_for("Page.loadEventFired")
    title = browser.call("Runtime.evaluate", expression="document.title")["result"]["value"]
    assert title == "Customer retention report"
    value = browser.call("Runtime.evaluate", expression=IMAGES_SCRIPT)["result"]["value"]
    images = {image["id"]: image for image in json.loads(value)}
    assert sorted(images) == sorted(DRAWN)
    for name, image in images.items():
        png = images_dir(report) / f"{name}.png"
        assert image["complete"], name
        assert (image["width"], image["height"]) == png_size(png), name
    assert browser.errors() == []


# --------------------------------------------------------------------------------------------
# The Dagster asset
# --------------------------------------------------------------------------------------------

# Materializes only the report asset, in its own process under the test config (the defs
# read the config at import): once for one day, once for a range of days as one run.
MATERIALIZE_SCRIPT = """
import json
import dagster as dg
from retention_pipeline.defs.publishing.assets import retention_report

runs = {
    "day": {"partition_key": "2025-06-30"},
    "range": {"tags": {"dagster/asset_partition_range_start": "2025-06-28",
                       "dagster/asset_partition_range_end": "2025-06-30"}},
}
out = {}
for name, kwargs in runs.items():
    result = dg.materialize([retention_report], instance=dg.DagsterInstance.ephemeral(),
                            **kwargs)
    out[name] = [
        {"partition": m.partition,
         "metadata": {k: [type(v).__name__, str(getattr(v, "value", v))]
                      for k, v in m.metadata.items()}}
        for m in result.asset_materializations_for_node("retention_report")
    ]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def materialized(warehouse) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MATERIALIZE_SCRIPT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=run_env(warehouse.parent / "config.yaml"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_asset_metadata_shows_every_chart(materialized, warehouse):
    (day,) = materialized["day"]
    assert day["partition"] == "2025-06-30"
    metadata = day["metadata"]
    for name in DRAWN:
        kind, markdown = metadata[name]
        assert kind == "MarkdownMetadataValue"
        match = re.fullmatch(r"!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
        assert match, markdown[:80]
        png = images_dir(report_path(warehouse)) / f"{name}.png"
        assert base64.b64decode(match.group(1)) == png.read_bytes()
    assert metadata["report"] == ["PathMetadataValue", str(report_path(warehouse))]
    assert metadata["crr"][0] == "FloatMetadataValue"


def test_a_backfill_carries_the_charts_on_its_last_day_only(materialized):
    events = {event["partition"]: event["metadata"] for event in materialized["range"]}
    assert sorted(events) == ["2025-06-28", "2025-06-29", "2025-06-30"]
    for partition, metadata in events.items():
        charted = set(DRAWN) <= set(metadata)
        assert charted == (partition == "2025-06-30"), partition
        assert "report" in metadata
