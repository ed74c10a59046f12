"""The two warehouses and what BI reads from them.

The same generated orders built on DuckDB and on PostgreSQL (dbt-postgres, the raw layer
landed with COPY) give the same marts, cell by cell. Then each warehouse publishes: a
reader process holding connections to the published copies through a second run (new
orders) and a third whose check fails is never blocked, and always sees the whole of one
published version; the failed run leaves the published copy as it was.

The tests share three runs per warehouse and read them in file order: the comparison
first, on the first run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import psycopg2
import pytest
from conftest import POSTGRES_URL
from pipeline_helpers import (
    BIN,
    ROOT,
    drop_postgres_schemas,
    mart_differences,
    mart_names,
    postgres_connection,
    postgres_table_names,
    read_postgres_table,
    read_table,
    run_cli,
    run_env,
    sorted_rows,
    write_config,
)

from retention_pipeline.lib.generate import generate_orders, write_orders

CUSTOMERS = 300
SEED = 23
# The config names this variable; the test sets it to the test server's URL.
URL_ENV = "RETENTION_TEST_WAREHOUSE_URL"


@dataclass(frozen=True)
class Warehouses:
    directory: Path
    duckdb: Path
    schema: str  # the PostgreSQL warehouse's schema

    @property
    def published_schema(self) -> str:
        return f"{self.schema}_published"

    @property
    def snapshot(self) -> Path:
        return self.directory / "duckdb" / "published" / "warehouse.duckdb"

    @property
    def parquet(self) -> Path:
        return self.directory / "duckdb" / "published" / "parquet"

    def config(self, name: str) -> Path:
        return self.directory / name / "config.yaml"


@pytest.fixture(scope="module")
def pg():
    con = postgres_connection()
    yield con
    con.close()


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory, pg) -> Warehouses:
    """One generated shop, run once into a DuckDB file and once into PostgreSQL (a schema
    of this test's own, dropped afterwards)."""
    directory = tmp_path_factory.mktemp("postgres_warehouse")
    write_orders(generate_orders(customers=CUSTOMERS, seed=SEED), directory / "orders.csv")
    schema = f"test_pgwh_{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(URL_ENV, POSTGRES_URL)
        for name, warehouse in [
            ("duckdb", {"type": "duckdb", "path": "warehouse.duckdb"}),
            ("postgres", {"type": "postgres", "url_env": URL_ENV, "schema": schema}),
        ]:
            (directory / name).mkdir()
            run_cli(write_config(directory / name, data="../orders.csv", warehouse=warehouse))
        yield Warehouses(directory, directory / "duckdb" / "warehouse.duckdb", schema)
    drop_postgres_schemas(pg, schema)


def test_the_same_marts_are_built(warehouses, pg):
    duck = mart_names(warehouses.duckdb)
    assert duck == postgres_table_names(pg, warehouses.schema)
    assert {"fct_orders", "cohort_retention", "retention_rates", "customer_segments"} <= set(duck)


def test_every_cell_of_every_mart_is_the_same_on_duckdb_and_postgres(warehouses, pg):
    problems = mart_differences(
        warehouses.duckdb,
        "PostgreSQL",
        lambda table: read_postgres_table(pg, warehouses.schema, table),
    )
    assert not problems, "\n".join(problems)


def test_the_raw_layer_lands_in_the_warehouse_schemas_raw_schema(warehouses, pg):
    duck = read_table(warehouses.duckdb, "raw.orders")
    post = read_postgres_table(pg, f"{warehouses.schema}_raw", "orders")
    assert post.height == duck.height > 0
    # Emails are hashed in SQL on both: the same HMAC-SHA256, never the clear address.
    hashes = "customer_email_hash"
    assert sorted(post[hashes].drop_nulls()) == sorted(duck[hashes].drop_nulls())
    assert not post[hashes].drop_nulls().str.contains("@").any()
    for table in ("rejected_orders", "load_audit", "fx_rates", "marketing_spend"):
        assert read_postgres_table(pg, f"{warehouses.schema}_raw", table).height == (
            read_table(warehouses.duckdb, f"raw.{table}").height
        ), table


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------

# One statement over several marts: a copy mixing two versions gives a tuple of neither.
FINGERPRINT = """
select
    (select count(*) from {fct_orders}),
    (select cast(sum(net_amount) as varchar) from {fct_orders}),
    (select count(*) from {dim_customers}),
    (select count(*) from {cohort_retention}),
    (select cast(max(activity_date) as varchar) from {customer_base_daily})
"""
FINGERPRINT_TABLES = ("fct_orders", "dim_customers", "cohort_retention", "customer_base_daily")
# A reader must answer within this many seconds, whatever the run is doing.
NOT_BLOCKED_SECONDS = 5.0


def _fingerprint_sql(table_sql: str) -> str:
    """FINGERPRINT with each table as `table_sql` formats its name."""
    return FINGERPRINT.format(**{t: table_sql.format(t) for t in FINGERPRINT_TABLES})


# BI's side: one process holding, during the later runs, a DuckDB connection to the snapshot
# file, a PostgreSQL connection as the reader role, and a PostgreSQL transaction left open
# after a read; another reading with fresh connections to the file and the Parquet link (in
# a process of its own: DuckDB gives a new connection the database a process already holds).
READER_SCRIPT = """
import json, os, sys, time
import duckdb, psycopg2

spec = json.loads(sys.argv[1])
records = []

def timed(source, read):
    started = time.monotonic()
    try:
        fingerprint, error = list(read()), None
    except Exception as exc:
        fingerprint, error = None, repr(exc)
    records.append({"source": source, "at": time.time(), "fingerprint": fingerprint,
                    "seconds": time.monotonic() - started, "error": error})

sources = spec["sources"]
if "held" in sources:
    held = duckdb.connect(spec["snapshot"], read_only=True)
if "postgres" in sources:
    pg = psycopg2.connect(spec["url"])
    pg.autocommit = True
    pg.cursor().execute(f"set role {spec['role']}")
    idle = psycopg2.connect(spec["url"])
    idle_cursor = idle.cursor()
    idle_cursor.execute(f"set role {spec['role']}")
    idle_cursor.execute(f"select count(*) from {spec['schema']}.fct_orders")

def fresh():
    with duckdb.connect(spec["snapshot"], read_only=True) as con:
        return con.execute(spec["duckdb_sql"]).fetchone()

def parquet():
    folder = os.path.realpath(spec["parquet"])  # one version for the whole statement
    return duckdb.execute(spec["parquet_sql"].replace("FOLDER", folder)).fetchone()

def postgres():
    cursor = pg.cursor()
    cursor.execute(spec["postgres_sql"])
    return cursor.fetchone()

reads = {
    "held": lambda: held.execute(spec["duckdb_sql"]).fetchone(),
    "fresh": fresh,
    "parquet": parquet,
    "postgres": postgres,
}
while not os.path.exists(spec["stop"]):
    for source in sources:
        timed(source, reads[source])
    open(spec["ready"], "a").close()
    time.sleep(0.1)
if "postgres" in sources:
    idle.rollback()
with open(spec["out"], "w") as handle:
    json.dump(records, handle)
"""


@dataclass(frozen=True)
class LaterRuns:
    first: dict[str, tuple]  # the fingerprint of each published copy after the first run
    second: dict[str, tuple]  # after the second run
    records: list[dict]  # the reader's reads
    runs_started: float
    runs_finished: float
    published_after_second: dict  # what identifies each published copy
    published_after_failure: dict
    failed_returncodes: list[int]


def _published_fingerprints(warehouses: Warehouses, pg) -> dict[str, tuple]:
    with duckdb.connect(str(warehouses.snapshot), read_only=True) as con:
        duck = tuple(con.execute(_fingerprint_sql("{}")).fetchone())
    parquet = duckdb.execute(
        _fingerprint_sql(f"read_parquet('{os.path.realpath(warehouses.parquet)}/{{}}/*.parquet')")
    ).fetchone()
    cursor = pg.cursor()
    cursor.execute(_fingerprint_sql(f'"{warehouses.published_schema}".{{}}'))
    return {"duckdb": duck, "parquet": tuple(parquet), "postgres": tuple(cursor.fetchone())}


def _published_identity(warehouses: Warehouses, pg) -> dict:
    """The snapshot file's inode and mtime, the Parquet link's target, and the published
    schema's oid: all the same unless something was published."""
    stat = warehouses.snapshot.stat()
    cursor = pg.cursor()
    cursor.execute(
        "select oid from pg_namespace where nspname = %s", (warehouses.published_schema,)
    )
    return {
        "snapshot": (stat.st_ino, stat.st_mtime_ns, stat.st_size),
        "parquet": os.readlink(warehouses.parquet),
        "schema_oid": cursor.fetchone()[0],
    }


def _unbalanced_load_audit(warehouses: Warehouses, pg) -> None:
    """A load whose rows do not add up, in both raw layers: the next build's check
    assert_load_audit_balances fails."""
    row = (
        "values ('corrupted', 999, 'orders', null, date '2025-01-01', "
        "timestamp '2025-01-01 00:00:00', timestamp '2025-01-01 00:00:00', 10, 1, 0, 0, "
        "'succeeded', null, 'orders')"
    )
    with duckdb.connect(str(warehouses.duckdb)) as con:
        con.execute(f"insert into raw.load_audit {row}")
    pg.cursor().execute(f'insert into "{warehouses.schema}_raw".load_audit {row}')


@pytest.fixture(scope="module")
def later_runs(warehouses, pg) -> LaterRuns:
    """With the readers running: a second run of both warehouses on other orders, then a
    third on other orders again whose check fails."""
    first = _published_fingerprints(warehouses, pg)
    directory = warehouses.directory
    spec = {
        "snapshot": str(warehouses.snapshot),
        "parquet": str(warehouses.parquet),
        "url": POSTGRES_URL,
        "role": "retention_reader",
        "schema": f'"{warehouses.published_schema}"',
        "duckdb_sql": _fingerprint_sql("{}"),
        "parquet_sql": _fingerprint_sql("read_parquet('FOLDER/{}/*.parquet')"),
        "postgres_sql": _fingerprint_sql(f'"{warehouses.published_schema}".{{}}'),
        "stop": str(directory / "stop"),
    }
    readers = {
        "holding": ["held", "postgres"],
        "reconnecting": ["fresh", "parquet"],
    }
    processes = []
    for name, sources in readers.items():
        own = {
            **spec,
            "sources": sources,
            "ready": str(directory / f"{name}.ready"),
            "out": str(directory / f"{name}.json"),
        }
        processes.append(
            subprocess.Popen([sys.executable, "-c", READER_SCRIPT, json.dumps(own)], cwd=ROOT)
        )
    try:
        deadline = time.monotonic() + 60
        while not all((directory / f"{name}.ready").exists() for name in readers):
            assert all(p.poll() is None for p in processes), "a reader died before reading"
            assert time.monotonic() < deadline, "a reader never read"
            time.sleep(0.1)
        started = time.time()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(URL_ENV, POSTGRES_URL)
            write_orders(
                generate_orders(customers=CUSTOMERS, seed=SEED + 1), directory / "orders.csv"
            )
            for name in ("duckdb", "postgres"):
                run_cli(warehouses.config(name))
            second = _published_fingerprints(warehouses, pg)
            after_second = _published_identity(warehouses, pg)
            _unbalanced_load_audit(warehouses, pg)
            write_orders(
                generate_orders(customers=CUSTOMERS, seed=SEED + 2), directory / "orders.csv"
            )
            returncodes = [
                subprocess.run(
                    [
                        str(BIN / "retention-pipeline"),
                        "run",
                        "--config",
                        str(warehouses.config(name)),
                    ],
                    capture_output=True,
                    cwd=ROOT,
                    env=run_env(),
                ).returncode
                for name in ("duckdb", "postgres")
            ]
        finished = time.time()
        time.sleep(2)  # a few more reads after the runs
        (directory / "stop").touch()
        assert all(p.wait(timeout=60) == 0 for p in processes), "a reader failed"
    finally:
        for process in processes:
            process.kill()
    records = [r for name in readers for r in json.loads((directory / f"{name}.json").read_text())]
    return LaterRuns(
        first,
        second,
        records,
        started,
        finished,
        after_second,
        _published_identity(warehouses, pg),
        returncodes,
    )


def test_duckdb_publishes_a_read_only_snapshot_and_a_parquet_folder_of_every_mart(warehouses):
    marts = mart_names(warehouses.duckdb)
    assert mart_names(warehouses.snapshot) == marts
    assert warehouses.snapshot.stat().st_mode & 0o222 == 0  # read-only for everyone
    assert sorted(p.name for p in warehouses.parquet.iterdir()) == marts
    for table in marts:
        expected = sorted_rows(read_table(warehouses.duckdb, table))
        assert sorted_rows(read_table(warehouses.snapshot, table)).equals(expected), table
        parquet = pl.read_parquet(warehouses.parquet / table / "*.parquet")
        assert sorted_rows(parquet).equals(expected), table


def test_postgres_publishes_every_mart_in_the_published_schema(warehouses, pg):
    marts = postgres_table_names(pg, warehouses.schema)
    assert postgres_table_names(pg, warehouses.published_schema) == marts
    for table in marts:
        published = read_postgres_table(pg, warehouses.published_schema, table)
        assert sorted_rows(published).equals(
            sorted_rows(read_postgres_table(pg, warehouses.schema, table))
        ), table


@pytest.mark.parametrize(
    ("statement", "allowed"),
    [
        ('select count(*) from "{published}".cohort_retention', True),
        ('select count(*) from "{published}".fct_orders', True),
        ('select count(*) from "{schema}".cohort_retention', False),
        ('select count(*) from "{schema}_raw".orders', False),
        ('select count(*) from "{schema}_intermediate".int_run__as_of', False),
        ('delete from "{published}".fct_orders', False),
        ('create table "{published}".mine (x integer)', False),
    ],
)
def test_the_reader_role_can_only_select_from_the_published_schema(warehouses, statement, allowed):
    con = postgres_connection()
    try:
        cursor = con.cursor()
        cursor.execute("set role retention_reader")
        sql = statement.format(published=warehouses.published_schema, schema=warehouses.schema)
        if allowed:
            cursor.execute(sql)
            assert cursor.fetchone()[0] > 0
        else:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cursor.execute(sql)
    finally:
        con.close()


def _dashboard_queries() -> list[str]:
    """The example queries of docs/bi.md (its sql blocks that are queries)."""
    text = (ROOT / "docs" / "bi.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    return [block for block in blocks if block.lstrip().startswith("select")]


def test_the_dashboard_queries_of_the_bi_guide_run_on_both_published_copies(warehouses):
    queries = _dashboard_queries()
    assert len(queries) >= 5
    con = postgres_connection()
    try:
        cursor = con.cursor()
        cursor.execute("set role retention_reader")
        cursor.execute(f'set search_path = "{warehouses.published_schema}"')
        with duckdb.connect(str(warehouses.snapshot), read_only=True) as duck:
            for query in queries:
                rows = duck.execute(query).fetchall()
                cursor.execute(query)
                assert len(cursor.fetchall()) == len(rows) > 0, query
    finally:
        con.close()


def test_readers_are_never_blocked_and_read_during_the_whole_runs(later_runs):
    errors = [r for r in later_runs.records if r["error"]]
    assert not errors, errors[:5]
    slowest = max(r["seconds"] for r in later_runs.records)
    assert slowest < NOT_BLOCKED_SECONDS, f"a read waited {slowest:.1f} s"
    during = [
        r
        for r in later_runs.records
        if later_runs.runs_started <= r["at"] <= later_runs.runs_finished
    ]
    assert len(during) >= 100, "the reader hardly read while the runs ran"
    assert min(r["at"] for r in later_runs.records) < later_runs.runs_started
    assert max(r["at"] for r in later_runs.records) > later_runs.runs_finished


@pytest.mark.parametrize(
    ("source", "copy"),
    [("held", "duckdb"), ("fresh", "duckdb"), ("parquet", "parquet"), ("postgres", "postgres")],
)
def test_readers_see_one_whole_published_version_at_a_time(later_runs, source, copy):
    old, new = later_runs.first[copy], later_runs.second[copy]
    assert old != new, "the second run must publish other numbers"
    seen = [tuple(r["fingerprint"]) for r in later_runs.records if r["source"] == source]
    assert set(seen) <= {old, new}, f"{source} read a mix: {set(seen) - {old, new}}"
    if source == "held":
        # A connection held on the old file keeps reading the old file, whole.
        assert set(seen) == {old}
    else:
        # Old until the swap, new after it, and never back.
        switch = seen.index(new)
        assert seen[:switch] == [old] * switch and seen[switch:] == [new] * (len(seen) - switch)


def test_a_failed_check_publishes_nothing_and_keeps_the_previous_copy(later_runs, warehouses, pg):
    assert later_runs.failed_returncodes == [1, 1], "the runs with the failing check succeeded"
    assert later_runs.published_after_failure == later_runs.published_after_second
    assert _published_fingerprints(warehouses, pg) == later_runs.second
