"""Publishing a DuckDB warehouse in parts: whatever changed between two publishes, the
snapshot file and the Parquet folders hold exactly the warehouse's marts, and the parts
whose rows did not change are kept (their Parquet files are the last version's, linked).

The warehouses here are small DuckDB files with tables named like the marts (the monthly
ones are published by month); test_warehouses.py publishes real pipeline runs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_helpers import ROOT, write_config

from retention_pipeline.lib.config import load_config
from retention_pipeline.lib.publish import MONTHLY_TABLES, publish, snapshot_path

HISTORY = "customer_segment_history"
# Months a random night changes: those of the table, a new one, and new ones at both ends of
# a year (a part's rows are found by a date range that crosses the year there).
MONTHS = ["2023-12-01", "2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-12-01"]


def _warehouse(directory: Path):
    """A config whose warehouse holds a monthly table (three months), fct_orders (two
    months), a whole table, a view over it, and a raw table that is not a mart."""
    config = load_config(write_config(directory))
    with duckdb.connect(str(config.warehouse_path)) as con:
        con.execute(
            f"create table {HISTORY} (snapshot_month date, customer_id varchar, "
            "net_revenue decimal(18, 4), tier varchar)"
        )
        con.execute(
            f"insert into {HISTORY} select month::date, 'C' || i, i * 1.25, 'standard' "
            "from unnest(['2024-01-01', '2024-02-01', '2024-03-01']) as m(month), "
            "range(50) as r(i)"
        )
        con.execute(
            "create table fct_orders as select 'O' || i as order_id, 'C' || (i % 7) as "
            "customer_id, date '2024-01-20' + cast(i as integer) as order_date, "
            "cast(i as decimal(18, 4)) as net_amount from range(30) as r(i)"
        )
        con.execute("create table kpi_daily (activity_date date, orders integer)")
        con.execute("insert into kpi_daily values ('2024-01-01', 3), ('2024-01-02', 5)")
        con.execute("create view kpi_total as select sum(orders) as orders from kpi_daily")
        con.execute("create schema raw")
        con.execute("create table raw.orders as select 1 as order_id")
    return config


def _change(config, *statements: str) -> None:
    with duckdb.connect(str(config.warehouse_path)) as con:
        for statement in statements:
            con.execute(statement)


def _rows(con, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


def _assert_published_copies_equal_the_warehouse(config) -> None:
    parquet = config.publish_dir / "parquet"
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        con.execute(f"attach '{snapshot_path(config)}' as snapshot (read_only)")
        marts = [
            name
            for (name,) in con.execute(
                "select table_name from information_schema.tables "
                "where table_catalog = 'warehouse' and table_schema = 'main' order by 1"
            ).fetchall()
        ]
        published = [
            name
            for (name,) in con.execute(
                "select table_name from information_schema.tables "
                "where table_catalog = 'snapshot' and table_schema = 'main' "
                "and table_type = 'BASE TABLE' order by 1"
            ).fetchall()
        ]
        assert published == marts
        assert sorted(p.name for p in parquet.iterdir()) == marts
        for table in marts:
            expected = _rows(con, f'select * from main."{table}"')
            assert _rows(con, f'select * from snapshot.main."{table}"') == expected, table
            files = f"{parquet}/{table}/*.parquet"
            assert _rows(con, f"select * from read_parquet('{files}')") == expected, table


def _inodes(config) -> dict[str, int]:
    """Each Parquet file of the current version, by table/file name, and its inode."""
    parquet = config.publish_dir / "parquet"
    return {
        str(path.relative_to(parquet)): path.stat().st_ino for path in parquet.glob("*/*.parquet")
    }


def test_a_publish_rewrites_only_the_parts_that_changed(tmp_path):
    config = _warehouse(tmp_path)
    first = publish(config)
    _assert_published_copies_equal_the_warehouse(config)
    # History: 3 months; orders: 2024-01 and 2024-02; kpi_daily and the view: whole.
    assert (first.parts_written, first.parts_kept) == (3 + 2 + 2, 0)
    assert sorted(_inodes(config)) == [
        f"{HISTORY}/2024-01.parquet",
        f"{HISTORY}/2024-02.parquet",
        f"{HISTORY}/2024-03.parquet",
        "fct_orders/2024-01.parquet",
        "fct_orders/2024-02.parquet",
        "kpi_daily/all.parquet",
        "kpi_total/all.parquet",
    ]

    before, first_version = _inodes(config), first.parquet.resolve()
    unchanged = publish(config)
    assert (unchanged.parts_written, unchanged.parts_kept) == (0, 7)
    assert unchanged.parquet.resolve() != first_version
    assert _inodes(config) == before  # the same files, linked into the new version
    _assert_published_copies_equal_the_warehouse(config)

    _change(
        config,
        f"update {HISTORY} set tier = 'vip' where customer_id = 'C7' and snapshot_month = "
        "'2024-02-01'",
        f"insert into {HISTORY} select '2024-04-01', 'C' || i, i, 'standard' from range(5) r(i)",
        "delete from fct_orders where order_date < '2024-02-01'",
        "update kpi_daily set orders = 6 where activity_date = '2024-01-02'",
    )
    changed = publish(config)
    _assert_published_copies_equal_the_warehouse(config)
    # Written: history 2024-02 and 2024-04, kpi_daily and its view; kept: history 2024-01
    # and 2024-03, orders 2024-02; orders 2024-01 is gone.
    assert (changed.parts_written, changed.parts_kept) == (4, 3)
    after = _inodes(config)
    assert "fct_orders/2024-01.parquet" not in after
    kept = [
        f"{HISTORY}/2024-01.parquet",
        f"{HISTORY}/2024-03.parquet",
        "fct_orders/2024-02.parquet",
    ]
    assert all(after[name] == before[name] for name in kept)
    assert after[f"{HISTORY}/2024-02.parquet"] != before[f"{HISTORY}/2024-02.parquet"]


def test_a_table_whose_columns_changed_or_that_is_gone_is_published_again(tmp_path):
    config = _warehouse(tmp_path)
    publish(config)
    _change(
        config,
        f"alter table {HISTORY} add column churn_type varchar default 'quick'",
        "drop view kpi_total",
    )
    again = publish(config)
    _assert_published_copies_equal_the_warehouse(config)
    # The history whole (3 months); fct_orders and kpi_daily kept (3 parts).
    assert (again.parts_written, again.parts_kept) == (3, 3)
    assert "kpi_total" not in again.tables


def test_parts_are_written_again_when_the_last_versions_files_are_gone(tmp_path):
    config = _warehouse(tmp_path)
    publish(config)
    for path in (config.publish_dir / "parquet").glob("*/*.parquet"):
        path.unlink()
    again = publish(config)
    assert again.parts_written == 7
    _assert_published_copies_equal_the_warehouse(config)


# One step of a random night on the monthly table: rows added to a month, a month's rows
# removed, or some rows of a month changed.
steps = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "update"]),
        st.sampled_from(MONTHS),
        st.integers(min_value=0, max_value=60),
    ),
    max_size=4,
)


def _statement(kind: str, month: str, n: int) -> str:
    if kind == "add":
        return (
            f"insert into {HISTORY} select '{month}', 'N{n}-' || i, i * 0.5, 'pre_vip' "
            f"from range({n % 9}) r(i)"
        )
    if kind == "remove":
        return f"delete from {HISTORY} where snapshot_month = '{month}'"
    return (
        f"update {HISTORY} set net_revenue = net_revenue + 1 "
        f"where snapshot_month = '{month}' and hash(customer_id) % 61 < {n}"
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nights=st.lists(steps, min_size=1, max_size=3))
def test_after_random_changes_the_copies_always_equal_the_warehouse(nights):
    with tempfile.TemporaryDirectory() as directory:
        config = _warehouse(Path(directory))
        publish(config)
        for night in nights:
            _change(config, *(_statement(*step) for step in night))
            published = publish(config)
            _assert_published_copies_equal_the_warehouse(config)
            months = {step[1] for step in night}
            # Only the months a step touched can be written; the other tables are kept.
            assert published.parts_written <= max(len(months), 1)


def test_the_monthly_tables_are_marts_with_a_month_column_that_is_never_null():
    manifest = json.loads((ROOT / "dbt_project" / "target" / "manifest.json").read_text())
    nodes = manifest["nodes"].values()
    for table, column in MONTHLY_TABLES.items():
        (model,) = [n for n in nodes if n["resource_type"] == "model" and n["name"] == table]
        assert column in model["columns"], (table, column)
        assert any(
            n["test_metadata"]["name"] == "column_values"
            and n["attached_node"] == model["unique_id"]
            and column in n["test_metadata"]["kwargs"].get("not_null", [])
            for n in nodes
            if "test_metadata" in n
        ), (table, column)
