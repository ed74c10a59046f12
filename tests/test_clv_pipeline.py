"""A CLV fit that cannot succeed, through `retention-pipeline run`: the run still builds
every table, says which fit was rejected, publishes no parameters, and win-back falls back
to historical value."""

from __future__ import annotations

import csv
from datetime import date, timedelta

import polars as pl
from pipeline_helpers import read_table, run_cli, write_config


def test_a_shop_of_one_time_buyers_rejects_the_fit_and_still_builds(tmp_path):
    start = date(2024, 1, 1)
    with (tmp_path / "orders.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["order_id", "customer_id", "ordered_at", "amount"])
        for i in range(200):  # everybody buys once: nothing to learn about repeat buying
            day = start + timedelta(days=i % 180)
            writer.writerow([f"o{i}", f"c{i}", f"{day}T10:00:00", 20 + i % 9])
    columns = ("order_id", "customer_id", "ordered_at", "amount")
    config = write_config(
        tmp_path,
        source={
            "type": "file",
            "path": "orders.csv",
            "format": "csv",
            "columns": {column: column for column in columns},
        },
    )
    result = run_cli(config)
    assert "WARNING: the gamma_gamma fit was rejected" in result.stdout
    warehouse = tmp_path / "warehouse.duckdb"
    params = read_table(warehouse, "clv_model_params")
    assert "gamma_gamma" not in set(params["model"])
    ltv = read_table(warehouse, "customer_ltv")
    assert ltv.height == 200
    assert ltv["predicted_ltv"].null_count() == 200
    winback = read_table(warehouse, "winback_candidates")
    assert winback.height > 0
    assert set(winback["winback_value_basis"]) == {"historical_ltv"}
    assert (winback["winback_value"] == winback["historical_ltv"]).all()
    assert (
        read_table(warehouse, "forecast_monthly").filter(pl.col("orders").is_not_null()).is_empty()
    )
