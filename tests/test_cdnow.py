"""Real data: the CDNOW master file through config/cdnow.yaml, every monthly cohort cell and
every monthly retention rate against the reference computed from a separate, plain parse
of the file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import reference as ref
import yaml
from pipeline_helpers import (
    CDNOW_MASTER,
    ROOT,
    as_of_of,
    assert_same_cells,
    read_table,
    run_cli,
)
from test_clv import assert_published

from retention_pipeline.lib.clv.models import BgNbd

pytestmark = pytest.mark.skipif(
    not CDNOW_MASTER.is_file(),
    reason=f"the CDNOW master file is not at {CDNOW_MASTER} (shared/data/cdnow beside the repo)",
)

CDNOW_SAMPLE = CDNOW_MASTER.with_name("CDNOW_sample.txt")
CALIBRATION_END = date(1997, 9, 30)  # the papers' 39 weeks
WINDOW_DAYS = 90  # config/cdnow.yaml's active_window_days
CUSTOMERS = 23_570  # who bought first in 1997 Q1 (shared/data/cdnow/README.md)


def parse_master(path: Path) -> pl.DataFrame:
    """Every row of the file: whitespace-separated customer_id, date (YYYYMMDD),
    number_of_cds, dollar_value, under a header line. One row is one order."""
    lines = pl.read_csv(
        path,
        has_header=False,
        new_columns=["line"],
        separator="\x1f",  # no such byte in the file: each line is one field
        quote_char=None,
        infer_schema=False,
    )
    fields = lines.select(pl.col("line").str.extract_all(r"\S+").alias("fields"))
    header, rows = fields["fields"][0].to_list(), fields.slice(1)
    assert header == ["customer_id", "date", "number_of_cds", "dollar_value"]
    assert (rows["fields"].list.len() == 4).all()
    return rows.select(
        customer_id=pl.col("fields").list.get(0),
        order_date=pl.col("fields").list.get(1).str.to_date("%Y%m%d"),
        cds=pl.col("fields").list.get(2).cast(pl.Int64),
        dollar_value=pl.col("fields").list.get(3).cast(pl.Float64),
    )


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    return parse_master(CDNOW_MASTER)


@pytest.fixture(scope="module")
def valid_orders(rows) -> pl.DataFrame:
    """A purchase is a row with dollar_value > 0 (a few rows are worth 0)."""
    return rows.filter(pl.col("dollar_value") > 0).select(
        "customer_id", "order_date", net_amount="dollar_value"
    )


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    """config/cdnow.yaml with the file's absolute path and a warehouse in a temp dir."""
    directory = tmp_path_factory.mktemp("cdnow")
    config = yaml.safe_load((ROOT / "config" / "cdnow.yaml").read_text())
    config["source"]["path"] = str(CDNOW_MASTER)
    config["warehouse"]["path"] = str(directory / "cdnow.duckdb")
    assert config["active_window_days"] == WINDOW_DAYS
    (directory / "cdnow.yaml").write_text(yaml.safe_dump(config))
    run_cli(directory / "cdnow.yaml")
    return directory / "cdnow.duckdb"


def test_the_plain_parse_reads_the_whole_file(rows, valid_orders):
    assert rows.height == 69_659
    assert rows["customer_id"].n_unique() == CUSTOMERS
    assert rows["order_date"].min() == date(1997, 1, 1)
    assert rows["order_date"].max() == date(1998, 6, 30)
    assert 0 < rows.height - valid_orders.height < 200  # the rows worth $0


def test_every_row_is_read_and_every_purchase_loaded(warehouse, rows, valid_orders):
    (audit,) = read_table(warehouse, "load_audit").to_dicts()
    assert audit["rows_read"] == rows.height
    assert audit["rows_loaded"] == rows.height
    assert audit["rows_rejected"] == audit["rows_deduplicated"] == 0
    assert read_table(warehouse, "fct_orders").height == valid_orders.height
    dim = read_table(warehouse, "dim_customers")
    assert sorted(dim["customer_id"]) == sorted(valid_orders["customer_id"].unique())


def test_the_as_of_date_is_the_last_purchase(warehouse, valid_orders):
    assert as_of_of(warehouse) == valid_orders["order_date"].max() == date(1998, 6, 30)


def test_every_monthly_cohort_cell_matches_the_reference(warehouse, valid_orders):
    as_of = as_of_of(warehouse)
    month = pl.col("grain") == "month"
    expected = ref.cohort_retention(valid_orders, as_of).filter(month)
    actual = read_table(warehouse, "cohort_retention").filter(month)
    # Customers were acquired in 1997 Q1 and followed to June 1998; the few whose Q1
    # purchases were all worth $0 start a later cohort with their first paid purchase.
    sizes = expected.filter(pl.col("period_number") == 0)
    q1 = sizes.filter(pl.col("cohort_start") < date(1997, 4, 1))
    assert q1["cohort_start"].to_list() == [date(1997, 1, 1), date(1997, 2, 1), date(1997, 3, 1)]
    assert q1["cohort_customers"].sum() > 0.99 * sizes["cohort_customers"].sum()
    assert sizes["cohort_customers"].sum() == valid_orders["customer_id"].n_unique()
    assert_same_cells(actual, expected, ref.COHORT_RETENTION_KEYS, "CDNOW cohort_retention month")


@pytest.mark.parametrize("base", ref.BASES)
def test_monthly_retention_rates_match_the_reference(warehouse, valid_orders, base):
    as_of = as_of_of(warehouse)
    chosen = (pl.col("grain") == "month") & (pl.col("base") == base)
    expected = ref.retention_rates(valid_orders, as_of, WINDOW_DAYS).filter(chosen)
    actual = read_table(warehouse, "retention_rates").filter(chosen)
    assert expected.height == 18
    assert_same_cells(
        actual, expected, ref.RETENTION_RATES_KEYS, f"CDNOW retention_rates month/{base}"
    )


# --------------------------------------------------------------------------------------------
# The sample through config/cdnow_sample.yaml: the published CLV figures (test_clv.py checks
# the same models as functions)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory) -> dict[str, Path]:
    """`run --config config/cdnow_sample.yaml --as-of 1997-09-30` (weeks) once with each
    count model, in parallel; their warehouses by model."""

    def run(model: str) -> Path:
        directory = tmp_path_factory.mktemp(f"sample-{model}")
        config = yaml.safe_load((ROOT / "config" / "cdnow_sample.yaml").read_text())
        config["source"]["path"] = str(CDNOW_SAMPLE)
        config["warehouse"]["path"] = str(directory / "sample.duckdb")
        assert config["clv"]["time_unit"] == "week"
        config["clv"]["model"] = model
        (directory / "sample.yaml").write_text(yaml.safe_dump(config))
        run_cli(directory / "sample.yaml", as_of=CALIBRATION_END)
        return directory / "sample.duckdb"

    models = ["bg_nbd", "pareto_nbd"]
    with ThreadPoolExecutor(len(models)) as pool:
        return dict(zip(models, pool.map(run, models), strict=True))


@pytest.mark.parametrize("model", ["bg_nbd", "pareto_nbd"])
def test_the_sample_run_publishes_the_papers_estimates(sample_runs, model):
    params = read_table(sample_runs[model], "clv_model_params")
    assert set(params["model"]) == {model, "gamma_gamma"}
    assert set(params["time_unit"]) == {"week"}
    assert set(params["calibration_end"]) == {CALIBRATION_END}
    for name, rows in params.group_by("model"):
        (log_likelihood,) = rows["log_likelihood"].unique()
        values = dict(zip(rows["parameter"], rows["value"], strict=True))
        assert_published(name[0], values, log_likelihood)
    ltv = read_table(sample_runs[model], "customer_ltv")
    assert ltv.height == 2357  # the eight whose only purchase was free included
    assert ltv["p_alive"].null_count() == 0
    assert ltv["p_alive"].is_between(0, 1).all()


def test_the_published_bg_nbd_parameters_give_the_papers_expectations(sample_runs):
    rows = read_table(sample_runs["bg_nbd"], "clv_model_params").filter(model="bg_nbd")
    bg = BgNbd(**dict(zip(rows["parameter"], rows["value"], strict=True)))
    assert round(float(bg.expected_purchases_new(78.0)), 3) == 1.858
    assert round(float(bg.expected_purchases(39.0, 2, 30.43, 38.86)), 3) == 1.226
