"""The YAML configuration: every mistake is named by its dotted key with the fix to make,
and every path resolves relative to the config file, wherever the process runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import write_lines

from retention_pipeline.lib.config import ConfigError, PipelineConfig, load_config, parse_config
from retention_pipeline.lib.settings import dbt_profile_env

COLUMNS = {"order_id": "id", "customer_id": "cust", "ordered_at": "placed", "amount": "total"}


def _config_file(directory: Path, data: dict, name: str = "retention.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _minimal(**top) -> dict:
    return {"source": {"type": "file", "path": "orders.csv", "columns": dict(COLUMNS)}, **top}


def _error_of(tmp_path: Path, data: dict) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config(_config_file(tmp_path, data))
    return str(excinfo.value)


def test_a_minimal_config_gets_the_documented_defaults(tmp_path):
    config = load_config(_config_file(tmp_path, _minimal()))
    assert isinstance(config, PipelineConfig)
    assert config.reporting_timezone == "UTC"
    assert config.source_timezone == "UTC"
    assert config.reporting_currency == "USD"
    assert config.active_window_days == 90
    assert config.warehouse.type == "duckdb"
    assert config.schedule.time == "02:00"
    assert config.source.delimiter == ","
    assert config.source.has_header is True
    assert config.source.line_items is False
    assert "cancelled" in config.excluded_statuses
    assert (config.segments.vip_share, config.segments.pre_vip_share) == (0.05, 0.15)
    assert config.segments.at_risk_days is None  # half the window, in dbt
    assert config.segments.quick_churn_max_orders == 1


# --- unknown keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "dotted"),
    [
        ({**_minimal(), "reporting_timzone": "UTC"}, "reporting_timzone"),
        ({**_minimal(), "warehouse": {"type": "duckdb", "pth": "w.duckdb"}}, "warehouse.pth"),
        ({**_minimal(), "schedule": {"tme": "02:00"}}, "schedule.tme"),
        ({**_minimal(), "clv": {"horizon": 12}}, "clv.horizon"),
        (
            {"source": {"path": "orders.csv", "colums": COLUMNS, "columns": COLUMNS}},
            "source.colums",
        ),
    ],
)
def test_an_unknown_key_is_named_with_its_dotted_path(tmp_path, data, dotted):
    message = _error_of(tmp_path, data)
    assert f"{dotted}: unknown key" in message
    assert "remove it or check its spelling" in message
    # The message starts with the file, so that the user knows which file to edit.
    assert str(tmp_path / "retention.yaml") in message


def test_every_unknown_key_is_reported_at_once(tmp_path):
    data = {**_minimal(), "reporting_timzone": "UTC", "schedule": {"tme": "02:00"}}
    message = _error_of(tmp_path, data)
    assert "reporting_timzone: unknown key" in message
    assert "schedule.tme: unknown key" in message


def test_a_mapping_to_an_unknown_field_names_it_and_lists_the_fields(tmp_path):
    data = _minimal()
    data["source"]["columns"]["order_total"] = "total"
    message = _error_of(tmp_path, data)
    assert "order_total" in message
    assert "customer_email" in message  # the list of fields one may map


def test_line_columns_are_unknown_fields_of_an_order_level_source(tmp_path):
    data = _minimal()
    data["source"]["columns"]["quantity"] = "qty"
    message = _error_of(tmp_path, data)
    assert "quantity" in message
    assert "unknown field" in message


# --- required mappings -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["order_id", "customer_id", "ordered_at", "amount"])
def test_a_missing_required_mapping_is_named_with_how_to_add_it(tmp_path, field):
    data = _minimal()
    del data["source"]["columns"][field]
    message = _error_of(tmp_path, data)
    assert f"source: columns has no mapping for required field(s) ['{field}']" in message
    assert f"add '{field}: <source column>'" in message


def test_several_missing_mappings_are_named_together(tmp_path):
    data = _minimal()
    data["source"]["columns"] = {"ordered_at": "placed"}
    message = _error_of(tmp_path, data)
    for field in ("order_id", "customer_id", "amount"):
        assert f"'{field}: <source column>'" in message


def test_a_missing_source_is_a_missing_key(tmp_path):
    message = _error_of(tmp_path, {"reporting_timezone": "UTC"})
    assert "source: required key is missing; add it" in message


def test_a_file_source_needs_a_path(tmp_path):
    data = _minimal()
    del data["source"]["path"]
    assert "needs 'path'" in _error_of(tmp_path, data)


def test_generate_order_id_allows_no_order_id_mapping(tmp_path):
    data = _minimal()
    del data["source"]["columns"]["order_id"]
    data["source"]["generate_order_id"] = True
    config = load_config(_config_file(tmp_path, data))
    assert config.source.generate_order_id
    assert "order_id" not in config.source.columns


def test_without_generate_order_id_the_order_id_is_required(tmp_path):
    data = _minimal()
    del data["source"]["columns"]["order_id"]
    assert "add 'order_id: <source column>'" in _error_of(tmp_path, data)


# --- line items ---------------------------------------------------------------------------

LINE_COLUMNS = {"order_id": "InvoiceNo", "customer_id": "CustomerID", "ordered_at": "InvoiceDate"}


@pytest.mark.parametrize(
    "amount_columns",
    [{}, {"quantity": "Quantity"}, {"unit_price": "UnitPrice"}, {"amount": "Total"}],
)
def test_line_items_need_quantity_and_unit_price_or_line_amount(tmp_path, amount_columns):
    data = {
        "source": {
            "path": "lines.csv",
            "line_items": True,
            "columns": {**LINE_COLUMNS, **amount_columns},
        }
    }
    message = _error_of(tmp_path, data)
    assert "line_items: true needs columns.line_amount" in message
    assert "columns.quantity and columns.unit_price" in message


@pytest.mark.parametrize(
    "amount_columns",
    [{"quantity": "Quantity", "unit_price": "UnitPrice"}, {"line_amount": "LineTotal"}],
)
def test_line_items_with_line_columns_need_no_amount(tmp_path, amount_columns):
    data = {
        "source": {
            "path": "lines.csv",
            "line_items": True,
            "columns": {**LINE_COLUMNS, **amount_columns},
        }
    }
    config = load_config(_config_file(tmp_path, data))
    assert config.source.line_items
    assert "amount" not in config.source.columns


# --- timezones, schedule, values ------------------------------------------------------------


def test_an_invalid_reporting_timezone_is_named(tmp_path):
    message = _error_of(tmp_path, _minimal(reporting_timezone="Europe/Atlantis"))
    assert "reporting_timezone: 'Europe/Atlantis' is not an IANA time zone" in message


def test_valid_timezones_are_accepted(tmp_path):
    config = load_config(
        _config_file(
            tmp_path,
            {
                **_minimal(reporting_timezone="Europe/Berlin"),
                "schedule": {"timezone": "America/New_York"},
            },
        )
    )
    assert config.source_timezone == "Europe/Berlin"
    assert config.schedule_timezone == "America/New_York"


def test_an_invalid_schedule_timezone_is_a_config_error(tmp_path):
    message = _error_of(tmp_path, {**_minimal(), "schedule": {"timezone": "Mars/Olympus"}})
    assert "schedule.timezone" in message
    assert "'Mars/Olympus' is not an IANA time zone" in message


def test_an_invalid_source_timezone_is_a_config_error(tmp_path):
    data = _minimal()
    data["source"]["timezone"] = "America/Nwe_York"
    message = _error_of(tmp_path, data)
    assert "source.timezone" in message
    assert "'America/Nwe_York' is not an IANA time zone" in message


@pytest.mark.parametrize("time", ["24:00", "2:30", "02:60", "noon", "02:30:00", "0230"])
def test_an_invalid_schedule_time_is_named(tmp_path, time):
    message = _error_of(tmp_path, {**_minimal(), "schedule": {"time": time}})
    assert "schedule.time: must be a 24-hour clock time such as '02:30'" in message


@pytest.mark.parametrize("time", ["00:00", "02:30", "23:59"])
def test_a_valid_schedule_time_is_accepted(tmp_path, time):
    assert load_config(_config_file(tmp_path, {**_minimal(), "schedule": {"time": time}}))


@pytest.mark.parametrize(
    ("top", "dotted"),
    [
        ({"reporting_currency": "usd"}, "reporting_currency"),
        ({"active_window_days": 0}, "active_window_days"),
        ({"future_tolerance_hours": -1}, "future_tolerance_hours"),
        ({"warehouse": {"type": "sqlserver"}}, "warehouse.type"),
        ({"clv": {"model": "magic"}}, "clv.model"),
        ({"schedule": {"lookback_days": -2}}, "schedule.lookback_days"),
        ({"segments": {"vip_share": 1.5}}, "segments.vip_share"),
        ({"segments": {"pre_vip_share": -0.1}}, "segments.pre_vip_share"),
        ({"segments": {"at_risk_days": 0}}, "segments.at_risk_days"),
        ({"segments": {"quick_churn_max_orders": 0}}, "segments.quick_churn_max_orders"),
    ],
)
def test_an_invalid_value_is_named_by_its_key(tmp_path, top, dotted):
    assert f"{dotted}: " in _error_of(tmp_path, _minimal(**top))


@pytest.mark.parametrize(
    ("source", "dotted"),
    [
        ({"format": "xml"}, "source.format"),
        ({"type": "oracle"}, "source.type"),
        ({"name": "my orders"}, "source.name"),
    ],
)
def test_an_invalid_source_value_is_named_by_its_key(tmp_path, source, dotted):
    data = _minimal()
    data["source"].update(source)
    assert f"{dotted}: " in _error_of(tmp_path, data)


def test_tier_shares_must_fit_in_the_customers(tmp_path):
    error = _error_of(tmp_path, _minimal(segments={"vip_share": 0.5, "pre_vip_share": 0.6}))
    assert "segments: vip_share + pre_vip_share must be at most 1" in error


def test_at_risk_comes_before_churn(tmp_path):
    error = _error_of(tmp_path, _minimal(active_window_days=60, segments={"at_risk_days": 60}))
    assert "segments.at_risk_days (60) must be below active_window_days (60)" in error
    config = load_config(
        _config_file(tmp_path, _minimal(active_window_days=60, segments={"at_risk_days": 59}))
    )
    assert config.segments.at_risk_days == 59


def test_excluded_statuses_are_lowercased(tmp_path):
    config = load_config(_config_file(tmp_path, _minimal(excluded_statuses=[" Cancelled", "TEST"])))
    assert config.excluded_statuses == ("cancelled", "test")


# --- the file itself ------------------------------------------------------------------------


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("source: {path: orders.csv\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", ""])
def test_a_config_that_is_not_a_mapping_is_refused(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(path)


def test_parse_config_reports_without_a_file(tmp_path):
    with pytest.raises(ConfigError, match="reporting_timzone: unknown key"):
        parse_config({**_minimal(), "reporting_timzone": "UTC"}, tmp_path)


# --- paths ----------------------------------------------------------------------------------


def test_paths_resolve_relative_to_the_config_file_not_the_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    data_file = write_lines(project / "data" / "orders.csv", "id,cust,placed,total")
    config_path = _config_file(
        project / "config",
        {
            "source": {"path": "../data/orders.csv", "columns": COLUMNS},
            "warehouse": {"path": "../warehouse/retention.duckdb"},
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "project" / "config" / "retention.yaml")
    assert config.base_dir == (project / "config").resolve()
    assert config.source_files() == [data_file.resolve()]
    assert config.warehouse_path == (project / "warehouse" / "retention.duckdb").resolve()
    assert config_path.exists()


def test_absolute_paths_are_kept(tmp_path):
    data_file = write_lines(tmp_path / "abs" / "orders.csv", "id,cust,placed,total")
    config = parse_config(
        {
            "source": {"path": str(data_file), "columns": COLUMNS},
            "warehouse": {"path": str(tmp_path / "w.duckdb")},
        },
        tmp_path / "somewhere" / "else",
    )
    assert config.source_files() == [data_file]
    assert config.warehouse_path == tmp_path / "w.duckdb"


def test_a_glob_matches_files_sorted_and_skips_directories(tmp_path):
    for name in ("part-b.csv", "part-a.csv", "part-c.csv", "notes.txt"):
        write_lines(tmp_path / "exports" / name, "id,cust,placed,total")
    (tmp_path / "exports" / "part-dir.csv").mkdir()
    config = parse_config({"source": {"path": "exports/part-*.csv", "columns": COLUMNS}}, tmp_path)
    assert [p.name for p in config.source_files()] == ["part-a.csv", "part-b.csv", "part-c.csv"]


def test_a_recursive_glob_reaches_subdirectories(tmp_path):
    write_lines(tmp_path / "exports" / "2024" / "01" / "orders.csv", "id")
    write_lines(tmp_path / "exports" / "orders.csv", "id")
    config = parse_config({"source": {"path": "exports/**/*.csv", "columns": COLUMNS}}, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in config.source_files()] == [
        "exports/2024/01/orders.csv",
        "exports/orders.csv",
    ]


@pytest.mark.parametrize("pattern", ["orders.csv", "exports/*.csv", "exports/**/*.parquet"])
def test_a_path_that_matches_no_file_names_source_path_and_the_pattern(tmp_path, pattern):
    (tmp_path / "exports").mkdir()
    write_lines(tmp_path / "exports" / "orders.txt", "id")
    config = load_config(_config_file(tmp_path, {"source": {"path": pattern, "columns": COLUMNS}}))
    with pytest.raises(ConfigError) as excinfo:
        config.source_files()
    message = str(excinfo.value)
    assert message.startswith(f"source.path: '{pattern}' matches no file")
    assert str(tmp_path / pattern) in message  # where it looked
    assert "relative to the config file" in message


def test_a_config_directory_with_glob_characters_still_finds_its_files(tmp_path):
    directory = tmp_path / "exports [2024]"
    data_file = write_lines(directory / "orders.csv", "id,cust,placed,total")
    config = load_config(
        _config_file(directory, {"source": {"path": "orders.csv", "columns": COLUMNS}})
    )
    assert config.source_files() == [data_file.resolve()]


# --- money: status map, gross margin, FX rates, refund rows --------------------------------


def test_money_keys_default_to_todays_behaviour(tmp_path):
    config = load_config(_config_file(tmp_path, _minimal()))
    assert config.status_map == {}
    assert config.gross_margin == 1.0
    assert config.fx_rates is None and config.fx_rates_path is None
    assert not config.source.has_refund_rows


def test_the_status_map_matches_trimmed_and_case_insensitively(tmp_path):
    data = _minimal(status_map={" Shipped": "COMPLETED", "VOID": "cancelled"})
    config = load_config(_config_file(tmp_path, data))
    assert config.status_map == {"shipped": "completed", "void": "cancelled"}


def test_a_status_mapped_twice_is_named(tmp_path):
    message = _error_of(tmp_path, _minimal(status_map={"Void": "cancelled", "void": "fraud"}))
    assert "status_map: 'void' is mapped twice" in message


@pytest.mark.parametrize("margin", [-0.1, 1.5, "high"])
def test_a_gross_margin_outside_0_to_1_is_named(tmp_path, margin):
    assert "gross_margin: " in _error_of(tmp_path, _minimal(gross_margin=margin))


def test_fx_rates_resolve_relative_to_the_config_and_map_columns(tmp_path):
    fx = {"path": "fx/rates.csv", "columns": {"date": "day", "rate": "usd"}}
    config = load_config(_config_file(tmp_path, _minimal(fx_rates=fx)))
    assert config.fx_rates_path == (tmp_path / "fx" / "rates.csv").resolve()
    assert config.fx_rates.columns.model_dump() == {
        "date": "day",
        "currency": "currency",
        "rate": "usd",
    }


@pytest.mark.parametrize(
    ("fx", "dotted"),
    [
        ({}, "fx_rates.path: required key is missing"),
        ({"path": "fx.csv", "columns": {"day": "d"}}, "fx_rates.columns.day: unknown key"),
        ({"path": "fx.csv", "format": "xlsx"}, "fx_rates.format: "),
    ],
)
def test_fx_rates_mistakes_are_named_by_their_key(tmp_path, fx, dotted):
    assert dotted in _error_of(tmp_path, _minimal(fx_rates=fx))


def test_refund_rows_are_configured_by_refund_of_or_negative_amounts(tmp_path):
    data = _minimal()
    data["source"]["columns"]["refund_of"] = "parent"
    assert load_config(_config_file(tmp_path, data)).source.has_refund_rows
    data = _minimal()
    data["source"]["negative_amounts_are_refunds"] = True
    assert load_config(_config_file(tmp_path, data)).source.has_refund_rows


@pytest.mark.parametrize("setting", ["line_items", "generate_order_id"])
def test_refund_rows_need_order_level_rows_with_their_own_ids(tmp_path, setting):
    data = _minimal()
    data["source"].update({setting: True, "negative_amounts_are_refunds": True})
    if setting == "line_items":
        data["source"]["columns"].update(quantity="q", unit_price="p")
    message = _error_of(tmp_path, data)
    assert "refund rows" in message and setting in message


# --- marketing spend ------------------------------------------------------------------------


def test_marketing_spend_is_optional(tmp_path):
    assert load_config(_config_file(tmp_path, _minimal())).marketing_spend is None


def test_marketing_spend_reads_date_channel_and_spend_columns_by_default(tmp_path):
    config = load_config(_config_file(tmp_path, _minimal(marketing_spend={"path": "s.csv"})))
    spend = config.marketing_spend
    assert spend.type == "file"
    assert spend.column_mapping == {"spend_date": "date", "channel": "channel", "spend": "spend"}


def test_marketing_spend_columns_map_only_what_differs(tmp_path):
    data = _minimal(marketing_spend={"path": "s.csv", "columns": {"spend": "cost_usd"}})
    mapping = load_config(_config_file(tmp_path, data)).marketing_spend.column_mapping
    assert mapping == {"spend_date": "date", "channel": "channel", "spend": "cost_usd"}


@pytest.mark.parametrize(
    ("spend", "expected"),
    [
        ({}, "marketing_spend: a file needs 'path'"),
        ({"path": "s.csv", "pth": "s.csv"}, "marketing_spend.pth: unknown key"),
        ({"path": "s.csv", "format": "xlsx"}, "marketing_spend.format: "),
        ({"path": "s.csv", "columns": {"cost": "c"}}, "unknown field(s) ['cost']"),
        ({"type": "postgres", "table": "spend"}, "marketing_spend.type: 'postgres' is not"),
    ],
)
def test_marketing_spend_mistakes_are_named_by_their_key(tmp_path, spend, expected):
    assert expected in _error_of(tmp_path, _minimal(marketing_spend=spend))


def test_marketing_spend_path_resolves_relative_to_the_config_file(tmp_path, monkeypatch):
    from retention_pipeline.lib.marketing import spend_files

    write_lines(tmp_path / "conf" / "marketing" / "2024.csv", "date,channel,spend")
    write_lines(tmp_path / "conf" / "marketing" / "2025.csv", "date,channel,spend")
    data = _minimal(marketing_spend={"path": "marketing/*.csv"})
    config = load_config(_config_file(tmp_path / "conf", data))
    monkeypatch.chdir(tmp_path)
    files = spend_files(config)
    assert [f.name for f in files] == ["2024.csv", "2025.csv"]
    assert all(f.parent == (tmp_path / "conf" / "marketing").resolve() for f in files)


def test_a_marketing_spend_path_that_matches_nothing_is_named(tmp_path):
    from retention_pipeline.lib.marketing import spend_files

    data = _minimal(marketing_spend={"path": "spend/*.csv"})
    config = load_config(_config_file(tmp_path, data))
    with pytest.raises(ConfigError, match=r"marketing_spend.path: 'spend/\*.csv' matches no file"):
        spend_files(config)


# --------------------------------------------------------------------------------------------
# A PostgreSQL warehouse
# --------------------------------------------------------------------------------------------


def _postgres_warehouse(tmp_path, **warehouse) -> PipelineConfig:
    return parse_config(_minimal(warehouse={"type": "postgres", **warehouse}), tmp_path)


def test_a_postgres_warehouse_needs_url_env(tmp_path):
    with pytest.raises(ConfigError, match="warehouse: .*url_env"):
        _postgres_warehouse(tmp_path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("schema", "Retention"),
        ("schema", "retention; drop table x"),
        ("schema", "a" * 41),
        ("published_schema", "bi-copy"),
        ("reader_role", "1reader"),
        ("url_env", "WAREHOUSE-URL"),
    ],
)
def test_postgres_names_are_plain_lower_case_identifiers(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"warehouse.{key}"):
        _postgres_warehouse(tmp_path, **{"url_env": "WAREHOUSE_DB_URL", key: value})


def test_the_warehouse_url_reaches_dbt_through_the_environment(tmp_path, monkeypatch):
    config = _postgres_warehouse(tmp_path, url_env="MY_WAREHOUSE", schema="shop")
    monkeypatch.setenv(
        "MY_WAREHOUSE", "postgresql://etl:p%40ss%3Aw@db.local:6543/sales?sslmode=require"
    )
    env = dbt_profile_env(config)
    assert env["RETENTION_DBT_TARGET"] == "postgres"
    assert (env["RETENTION_PG_HOST"], env["RETENTION_PG_PORT"]) == ("db.local", "6543")
    assert (env["RETENTION_PG_USER"], env["RETENTION_PG_DATABASE"]) == ("etl", "sales")
    assert env["DBT_ENV_SECRET_RETENTION_PG_PASSWORD"] == "p@ss:w"  # dbt scrubs DBT_ENV_SECRET_*
    assert (env["RETENTION_PG_SCHEMA"], env["RETENTION_PG_SSLMODE"]) == ("shop", "require")
    assert config.raw_schema == "shop_raw"
    assert config.warehouse.published == "shop_published"


def test_an_unset_warehouse_variable_is_named_and_the_url_never_shown(tmp_path, monkeypatch):
    config = _postgres_warehouse(tmp_path, url_env="MY_WAREHOUSE")
    monkeypatch.delenv("MY_WAREHOUSE", raising=False)
    with pytest.raises(ConfigError, match="MY_WAREHOUSE, which is not set"):
        dbt_profile_env(config)
    monkeypatch.setenv("MY_WAREHOUSE", "mysql://root:secret@db/x")
    with pytest.raises(ConfigError, match="MY_WAREHOUSE must hold") as error:
        dbt_profile_env(config)
    assert "secret" not in str(error.value)
