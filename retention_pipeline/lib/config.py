"""The pipeline's YAML configuration: one file, validated at start, paths relative to it."""

from __future__ import annotations

import glob
import os
import re
from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_ENV_VAR = "RETENTION_PIPELINE_CONFIG"

ORDER_COLUMNS = (
    "order_id",
    "customer_id",
    "ordered_at",
    "amount",
    "status",
    "refunded_amount",
    "currency",
    "updated_at",
    "customer_email",
    "channel",
    "refund_of",
)
LINE_COLUMNS = ("quantity", "unit_price", "line_amount")
DATABASE_TYPES = ("postgres", "mysql", "sqlite")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# PostgreSQL names the pipeline derives from config (schemas, a role): lower case, so that
# they read the same quoted or not, and short enough for the suffixes added to them.
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")
# Environment variable names as POSIX shells accept them.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """A configuration problem, worded for the person who edits the YAML file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    type: Literal["file", "postgres", "mysql", "sqlite"] = "file"
    name: str = "orders"
    path: str | None = None
    format: Literal["csv", "parquet", "ndjson"] | None = None
    delimiter: str = ","
    has_header: bool = True
    quote_char: str | None = '"'
    timestamp_format: str | None = None
    timezone: str | None = None
    line_items: bool = False
    generate_order_id: bool = False
    negative_amounts_are_refunds: bool = False
    columns: dict[str, str] = Field(default_factory=dict)
    # Database sources: the URL comes from the environment variable named here.
    url_env: str | None = None
    table: str | None = None
    query: str | None = None
    lookback_hours: float = Field(24, ge=0)
    batch_size: int = Field(100_000, gt=0)

    @field_validator("timezone")
    @classmethod
    def _source_timezone(cls, value: str | None) -> str | None:
        return value if value is None else _check_timezone(value)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be letters, digits and underscores, starting with a letter")
        return value

    @model_validator(mode="after")
    def _mapping_is_complete(self) -> SourceConfig:
        known = set(ORDER_COLUMNS) | (set(LINE_COLUMNS) if self.line_items else set())
        unknown = sorted(set(self.columns) - known)
        if unknown:
            raise ValueError(
                f"columns maps unknown field(s) {unknown}; the fields are {sorted(known)}"
            )
        required = ["customer_id", "ordered_at"]
        if not self.generate_order_id:
            required.insert(0, "order_id")
        if self.line_items:
            if "line_amount" not in self.columns and not {"quantity", "unit_price"} <= set(
                self.columns
            ):
                raise ValueError(
                    "line_items: true needs columns.line_amount, or columns.quantity and "
                    "columns.unit_price, mapped to the export's line columns"
                )
        else:
            required.append("amount")
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise ValueError(
                f"columns has no mapping for required field(s) {missing}: add "
                + ", ".join(f"'{c}: <source column>'" for c in missing)
            )
        refund_rows = "refund_of" in self.columns or self.negative_amounts_are_refunds
        if refund_rows and (self.line_items or self.generate_order_id):
            setting = "line_items" if self.line_items else "generate_order_id"
            raise ValueError(
                f"refund rows (columns.refund_of or negative_amounts_are_refunds) need order ids "
                f"of the source's own and one row per order; remove them or {setting}: true"
            )
        if self.type == "file" and not self.path:
            raise ValueError("a file source needs 'path' (a file or a glob such as orders/*.csv)")
        if self.is_database:
            self._check_database()
        elif self.url_env or self.table or self.query:
            raise ValueError(
                "url_env, table and query belong to database sources (type postgres, "
                "mysql or sqlite); a file source reads 'path'"
            )
        return self

    def _check_database(self) -> None:
        """What a database source needs; names from the config become quoted SQL identifiers,
        so they must be plain identifiers."""
        if self.path:
            raise ValueError(f"a {self.type} source reads 'table' or 'query', not 'path'")
        if not self.url_env or not _ENV_NAME.match(self.url_env):
            raise ValueError(
                f"a {self.type} source needs url_env: the name of the environment variable that "
                "holds its connection URL (the URL itself never goes in the file)"
            )
        if (self.table is None) == (self.query is None):
            raise ValueError(f"a {self.type} source needs either 'table' or 'query', not both")
        if self.table is not None:
            parts = self.table.split(".")
            if len(parts) > 2 or not all(_IDENTIFIER.match(part) for part in parts):
                raise ValueError(
                    f"table '{self.table}' is not a table name: use table or schema.table, "
                    "letters, digits and underscores only"
                )
        bad = {
            ours: theirs for ours, theirs in self.columns.items() if not _IDENTIFIER.match(theirs)
        }
        if bad:
            raise ValueError(
                f"columns {bad} are not column names: a database source maps plain identifiers "
                "(letters, digits, underscores); rename the column in a view or a query"
            )
        if self.generate_order_id:
            raise ValueError(
                "generate_order_id numbers file lines; a database source maps order_id"
            )

    @property
    def is_database(self) -> bool:
        return self.type in DATABASE_TYPES

    @property
    def has_refund_rows(self) -> bool:
        return "refund_of" in self.columns or self.negative_amounts_are_refunds


class FxColumns(_Strict):
    date: str = "date"
    currency: str = "currency"
    rate: str = "rate"


class FxRatesConfig(_Strict):
    """Rates to the reporting currency: reporting amount = amount × rate."""

    path: str
    format: Literal["csv", "parquet"] | None = None
    date_format: str = "%Y-%m-%d"
    columns: FxColumns = FxColumns()


SPEND_COLUMNS = ("spend_date", "channel", "spend")


class MarketingSpendConfig(_Strict):
    """The optional marketing spend input: one row per date, channel and amount spent."""

    # Only files for now; a database table (url_env with table or query, as for orders)
    # comes with the database sources and keeps the rest of this block.
    type: str = "file"
    path: str | None = None
    format: Literal["csv", "parquet"] | None = None
    delimiter: str = ","
    date_format: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _file_only(cls, value: str) -> str:
        if value != "file":
            raise ValueError(
                f"'{value}' is not supported yet; use 'file' (export the spend to a CSV or "
                "Parquet file)"
            )
        return value

    @model_validator(mode="after")
    def _mapping_is_known(self) -> MarketingSpendConfig:
        unknown = sorted(set(self.columns) - set(SPEND_COLUMNS))
        if unknown:
            raise ValueError(
                f"columns maps unknown field(s) {unknown}; the fields are {list(SPEND_COLUMNS)}"
            )
        if not self.path:
            raise ValueError("a file needs 'path' (a file or a glob such as marketing/*.csv)")
        return self

    @property
    def column_mapping(self) -> dict[str, str]:
        """Our field: the file's column; unmapped fields read the columns date, channel, spend."""
        return {"spend_date": "date", "channel": "channel", "spend": "spend", **self.columns}


class WarehouseConfig(_Strict):
    type: Literal["duckdb", "postgres"] = "duckdb"
    # DuckDB: the warehouse file. PostgreSQL: its folder keeps the local files (the report,
    # dbt's target folder).
    path: str = "warehouse.duckdb"
    # DuckDB: the folder of the published snapshot and Parquet files; default `published`
    # beside the warehouse file.
    publish_dir: str | None = None
    url_env: str | None = None
    schema_name: str = Field("retention", alias="schema")
    # PostgreSQL: the schema BI reads, default `<schema>_published`, readable by reader_role.
    published_schema: str | None = None
    reader_role: str = "retention_reader"

    @field_validator("schema_name", "published_schema", "reader_role")
    @classmethod
    def _plain_identifier(cls, value: str | None) -> str | None:
        if value is not None and not IDENTIFIER.fullmatch(value):
            raise ValueError(
                "must be 1 to 40 lower-case letters, digits and underscores, not starting "
                "with a digit"
            )
        return value

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must name an environment variable, such as WAREHOUSE_DB_URL")
        return value

    @model_validator(mode="after")
    def _postgres_needs_url(self) -> WarehouseConfig:
        if self.type == "postgres" and not self.url_env:
            raise ValueError(
                "a postgres warehouse needs 'url_env': the name of the environment variable "
                "holding its URL (postgresql://user@host:5432/database)"
            )
        return self

    @property
    def published(self) -> str:
        return self.published_schema or f"{self.schema_name}_published"


class ScheduleConfig(_Strict):
    time: str = "02:00"
    timezone: str | None = None
    partitions_start: date = date(1990, 1, 1)
    lookback_days: int = Field(7, ge=0)

    @field_validator("timezone")
    @classmethod
    def _schedule_timezone(cls, value: str | None) -> str | None:
        return value if value is None else _check_timezone(value)

    @field_validator("time")
    @classmethod
    def _is_clock_time(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("must be a 24-hour clock time such as '02:30'")
        return value


class ClvConfig(_Strict):
    model: Literal["bg_nbd", "pareto_nbd"] = "bg_nbd"
    time_unit: Literal["day", "week"] = "week"
    horizon_months: int = Field(12, gt=0, le=120)
    annual_discount_rate: float = Field(0.10, ge=0)
    # The holdout the evaluation and the forecast backtest keep out of the fit: this many
    # days before the as-of date; None: the later half of the history.
    holdout_days: int | None = Field(None, gt=0)
    # Customers not yet churned or at risk whose P(alive) is below this are win-back
    # candidates too.
    low_p_alive: float = Field(0.5, gt=0, lt=1)


class SegmentsConfig(_Strict):
    vip_share: float = Field(0.05, gt=0, lt=1)
    pre_vip_share: float = Field(0.15, ge=0, lt=1)
    # Days without an order after which an active customer is at risk; None: half the window.
    at_risk_days: int | None = Field(None, gt=0)
    quick_churn_max_orders: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _tiers_fit(self) -> SegmentsConfig:
        if self.vip_share + self.pre_vip_share > 1:
            raise ValueError("vip_share + pre_vip_share must be at most 1")
        return self


class PipelineConfig(_Strict):
    source: SourceConfig
    warehouse: WarehouseConfig = WarehouseConfig()
    reporting_timezone: str = "UTC"
    reporting_currency: str = "USD"
    active_window_days: int = Field(90, gt=0)
    excluded_statuses: tuple[str, ...] = (
        "cancelled",
        "canceled",
        "failed",
        "voided",
        "fraud",
        "test",
    )
    status_map: dict[str, str] = Field(default_factory=dict)
    gross_margin: float = Field(1.0, ge=0, le=1)
    # An order of amount 0 (a free order) is a valid order when true; by default a valid
    # order needs a net amount above 0.
    free_orders_are_purchases: bool = False
    fx_rates: FxRatesConfig | None = None
    future_tolerance_hours: float = Field(24, ge=0)
    schedule: ScheduleConfig = ScheduleConfig()
    clv: ClvConfig = ClvConfig()
    segments: SegmentsConfig = SegmentsConfig()
    marketing_spend: MarketingSpendConfig | None = None
    # Directory of the YAML file; relative paths in it resolve against this.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("reporting_timezone")
    @classmethod
    def _is_timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("reporting_currency")
    @classmethod
    def _is_currency_code(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("must be an ISO 4217 code such as USD or EUR")
        return value

    @field_validator("excluded_statuses")
    @classmethod
    def _lowercase(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(s.strip().lower() for s in value)

    @model_validator(mode="after")
    def _at_risk_before_churn(self) -> PipelineConfig:
        at_risk = self.segments.at_risk_days
        if at_risk is not None and at_risk >= self.active_window_days:
            raise ValueError(
                f"segments.at_risk_days ({at_risk}) must be below active_window_days "
                f"({self.active_window_days}): a customer is at risk before it churns"
            )
        return self

    @field_validator("status_map")
    @classmethod
    def _canonical_statuses(cls, value: dict[str, str]) -> dict[str, str]:
        """Source statuses match trimmed and case-insensitively; canonical ones are lower."""
        mapped: dict[str, str] = {}
        for source_status, canonical in value.items():
            key, target = str(source_status).strip().lower(), str(canonical).strip().lower()
            if not key or not target:
                raise ValueError("maps a source status to a canonical one; neither may be empty")
            if key in mapped and mapped[key] != target:
                raise ValueError(
                    f"'{key}' is mapped twice (to '{mapped[key]}' and '{target}'); source "
                    "statuses match case-insensitively, so keep one"
                )
            mapped[key] = target
        return mapped

    @property
    def source_timezone(self) -> str:
        return self.source.timezone or self.reporting_timezone

    @property
    def schedule_timezone(self) -> str:
        return self.schedule.timezone or self.reporting_timezone

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return (path if path.is_absolute() else self.base_dir / path).resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.resolve(self.warehouse.path)

    @property
    def publish_dir(self) -> Path:
        """DuckDB: where the published snapshot file and Parquet files go."""
        if self.warehouse.publish_dir is not None:
            return self.resolve(self.warehouse.publish_dir)
        return self.warehouse_path.parent / "published"

    @property
    def raw_schema(self) -> str:
        """The raw layer's schema: `raw` in the DuckDB file; `<schema>_raw` on PostgreSQL,
        where several warehouses may share a database."""
        if self.warehouse.type == "duckdb":
            return "raw"
        return f"{self.warehouse.schema_name}_raw"

    @property
    def warehouse_url(self) -> str:
        """The PostgreSQL warehouse's URL, from the environment variable url_env names."""
        name = self.warehouse.url_env
        url = os.environ.get(name or "")
        if not url:
            raise ConfigError(
                f"warehouse.url_env names {name}, which is not set: export {name}="
                "postgresql://user:password@host:5432/database"
            )
        return url

    @property
    def fx_rates_path(self) -> Path | None:
        return None if self.fx_rates is None else self.resolve(self.fx_rates.path)

    def source_files(self) -> list[Path]:
        """The files the source glob matches, sorted so that later files win ties."""
        return self.matching_files(self.source.path or "", "source.path")

    def matching_files(self, relative: str, key: str) -> list[Path]:
        """The files a path or glob of the config (at `key`) matches, sorted."""
        # The config's own folder is a literal path, even if its name has '[' or '*'.
        pattern = (
            relative
            if Path(relative).is_absolute()
            else os.path.join(glob.escape(str(self.base_dir.resolve())), relative)
        )
        files = sorted(
            Path(p).resolve() for p in glob.glob(pattern, recursive=True) if Path(p).is_file()
        )
        if not files:
            raise ConfigError(
                f"{key}: '{relative}' matches no file (looked for {pattern}); "
                "fix the path or glob, which is relative to the config file"
            )
        return files


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"'{value}' is not an IANA time zone such as UTC or Europe/Berlin"
        ) from None
    return value


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; remove it or check its spelling against the README"
    if error["type"] == "missing":
        return f"{key}: required key is missing; add it"
    return f"{key}: {message}" if key else message


def parse_config(raw: dict, base_dir: Path) -> PipelineConfig:
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a YAML mapping of keys to values")
    try:
        config = PipelineConfig.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        lines = "\n".join(f"  - {_describe(e)}" for e in exc.errors())
        raise ConfigError(f"invalid configuration:\n{lines}") from None
    return config


def load_config(path: str | os.PathLike) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open() as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    try:
        return parse_config(raw, path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
