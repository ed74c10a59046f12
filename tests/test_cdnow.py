"""Real data: the CDNOW master file through config/cdnow.yaml, checked month by month
against the reference computed from a separate, plain parse of the file."""

from pathlib import Path

import polars as pl
import pytest
import reference as ref
import yaml
from conftest import ROOT, as_of_of, assert_same_cells, read_table, run_cli

CDNOW = (ROOT / ".." / "shared" / "data" / "cdnow" / "CDNOW_master.txt").resolve()

pytestmark = pytest.mark.skipif(
    not CDNOW.exists(), reason=f"the CDNOW master file is not at {CDNOW}"
)


def _plain_parse(path: Path) -> pl.DataFrame:
    rows = [line.split() for line in path.read_text().splitlines()[1:] if line.strip()]
    return (
        pl.DataFrame(
            {
                "customer_id": [r[0] for r in rows],
                "order_date": [r[1] for r in rows],
                "net_amount": [float(r[3]) for r in rows],
            }
        )
        .with_columns(pl.col("order_date").str.strptime(pl.Date, "%Y%m%d"))
        .filter(pl.col("net_amount") > 0)
    )


@pytest.fixture(scope="module")
def cdnow_warehouse(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cdnow")
    config = yaml.safe_load((ROOT / "config" / "cdnow.yaml").read_text())
    config["source"]["path"] = str(CDNOW)
    config["warehouse"]["path"] = "cdnow.duckdb"
    (directory / "cdnow.yaml").write_text(yaml.safe_dump(config))
    run_cli(directory / "cdnow.yaml")
    return directory / "cdnow.duckdb"


def test_every_row_is_an_order(cdnow_warehouse):
    (audit,) = read_table(cdnow_warehouse, "load_audit").to_dicts()
    data_rows = len(CDNOW.read_text().splitlines()) - 1
    assert audit["rows_read"] == audit["rows_loaded"] == data_rows
    assert read_table(cdnow_warehouse, "dim_customers").height == (
        _plain_parse(CDNOW)["customer_id"].n_unique()
    )


def test_monthly_cohorts_match_the_reference(cdnow_warehouse):
    orders = _plain_parse(CDNOW)
    as_of = as_of_of(cdnow_warehouse)
    assert as_of == orders["order_date"].max()
    expected = ref.cohort_retention(orders, as_of).filter(pl.col("grain") == "month")
    actual = read_table(cdnow_warehouse, "cohort_retention").filter(pl.col("grain") == "month")
    assert_same_cells(actual, expected, ["grain", "cohort_start", "period_number"])


def test_monthly_retention_rates_match_the_reference(cdnow_warehouse):
    orders = _plain_parse(CDNOW)
    as_of = as_of_of(cdnow_warehouse)
    expected = ref.retention_rates(orders, as_of, 90).filter(pl.col("grain") == "month")
    actual = read_table(cdnow_warehouse, "retention_rates").filter(pl.col("grain") == "month")
    assert_same_cells(actual, expected, ["grain", "period_start", "base"])
