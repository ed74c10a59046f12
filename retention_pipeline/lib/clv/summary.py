"""What the CLV models read from the valid orders, computed by SQL in the warehouse, so the
CLV step holds one row per customer (or month, or day), never one per order: 100M orders
read into a frame would need tens of GiB.

Per customer, as of a calibration end date: frequency x (repeat purchase days: purchases on
the same day count once, and the first day is not a repeat), recency t_x (first purchase
day to the last one), age T (first purchase day to the calibration end) and the mean spend
of the repeat days; optionally the purchase days and spend in a holdout after it.

The SQL speaks DuckDB and PostgreSQL alike. Amounts are summed exactly (decimal) before
they become doubles, so the same orders give the same summary, and the same fit, on
either warehouse and however the aggregation is parallelised.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import duckdb
import polars as pl

from retention_pipeline.lib.warehouse import DuckDBSession, Session, read_frame

DAYS_PER_UNIT = {"day": 1.0, "week": 7.0}

SUMMARY_SCHEMA = {
    "customer_id": pl.String,
    "first_purchase_date": pl.Date,
    "frequency": pl.Float64,
    "recency": pl.Float64,
    "age": pl.Float64,
    "monetary_value": pl.Float64,
    "first_day_spend": pl.Float64,
    "total_spend": pl.Float64,
}
HOLDOUT_SCHEMA = {"holdout_purchases": pl.Float64, "holdout_spend": pl.Float64}
MONTHLY_SCHEMA = {
    "month": pl.Date,
    "orders": pl.Int64,
    "revenue": pl.Float64,
    "purchase_days": pl.Int64,
    "new_customers": pl.Int64,
}
DAILY_SCHEMA = {"order_date": pl.Date, "orders": pl.Int64, "revenue": pl.Float64}


def _date(day: date) -> str:
    return f"cast('{day.isoformat()}' as date)"


def _double(expression: str) -> str:
    return f"cast({expression} as double precision)"


class OrderHistory:
    """The valid orders in `relation` (columns customer_id, order_date, net_amount) of a
    warehouse session."""

    def __init__(self, session: Session, relation: str, purchase_days_table: str | None = None):
        self.session = session
        self.relation = relation
        self.purchase_days_table = purchase_days_table

    @contextmanager
    def with_purchase_days(self, up_to: date) -> Iterator[OrderHistory]:
        """This history with its purchase days up to `up_to` grouped once, into a temporary
        table: a CLV run's summaries read them five times (0.9 s each at 10M orders)."""
        table = "clv_purchase_days"
        self.session.execute(f"create temporary table {table} as {self._purchase_days(up_to)}")
        try:
            yield OrderHistory(self.session, self.relation, purchase_days_table=table)
        finally:
            # Unqualified, the name finds the temporary table first (DuckDB and PostgreSQL):
            # dropped only once it exists, it never reaches a table of the warehouse's own.
            self.session.execute(f"drop table {table}")

    @classmethod
    @contextmanager
    def of_frame(cls, orders: pl.DataFrame) -> Iterator[OrderHistory]:
        """The orders of a frame, in an in-memory DuckDB of their own."""
        with duckdb.connect() as con:
            session = DuckDBSession(con)
            session.register("orders", orders.select("customer_id", "order_date", "net_amount"))
            try:
                yield cls(session, "orders")
            finally:
                session.unregister("orders")

    def _read(self, sql: str, schema: dict) -> pl.DataFrame:
        return read_frame(self.session, sql).cast(schema).select(list(schema))

    def _purchase_days(self, up_to: date) -> str:
        """One row per customer and order date up to `up_to`: the day's spend and orders."""
        if self.purchase_days_table is not None:
            return f"select * from {self.purchase_days_table} where order_date <= {_date(up_to)}"
        return (
            # The orders' own decimal(18,4) and an integer count, not the wider types of a
            # sum and a count: at 100M orders the temporary table held 2.9 GiB, not 4.1 (a
            # day's spend past 10^14 fails the cast loudly).
            "select customer_id, order_date, "
            "cast(sum(net_amount) as decimal(18, 4)) as spend, "
            "cast(count(*) as integer) as orders "
            f"from {self.relation} where order_date <= {_date(up_to)} "
            "group by customer_id, order_date"
        )

    def first_purchase_date(self, up_to: date) -> date | None:
        """The first order date up to `up_to`; None without any order."""
        sql = f"select min(order_date) as first_day from ({self._purchase_days(up_to)}) as days"
        return read_frame(self.session, sql)["first_day"].item()

    def summary(
        self, calibration_end: date, time_unit: str, holdout_end: date | None = None
    ) -> pl.DataFrame:
        """The summary of every customer whose first valid order is on or before
        `calibration_end`, in `time_unit` (day, or week = days / 7), by customer_id.

        With `holdout_end`, also `holdout_purchases` (purchase days in (calibration_end,
        holdout_end]) and `holdout_spend`.
        """
        unit = DAYS_PER_UNIT[time_unit]
        schema = dict(SUMMARY_SCHEMA)
        holdout_columns = holdout_join = ""
        if holdout_end is not None:
            schema |= HOLDOUT_SCHEMA
            holdout_columns = (
                f", {_double('coalesce(holdout.purchase_days, 0)')} as holdout_purchases, "
                f"{_double('coalesce(holdout.spend, 0)')} as holdout_spend"
            )
            holdout_join = (
                "left join (select customer_id, count(*) as purchase_days, sum(spend) as spend "
                f"from days where order_date > {_date(calibration_end)} "
                "group by customer_id) as holdout on holdout.customer_id = customers.customer_id"
            )
        sql = f"""
            with days as ({self._purchase_days(holdout_end or calibration_end)}),
            customers as (
                select
                    customer_id,
                    min(order_date) as first_purchase_date,
                    max(order_date) as last_purchase_date,
                    count(*) as purchase_days,
                    sum(spend) as total_spend
                from days
                where order_date <= {_date(calibration_end)}
                group by customer_id
            )
            select
                customers.customer_id,
                customers.first_purchase_date,
                {_double("customers.purchase_days - 1")} as frequency,
                {_double("customers.last_purchase_date - customers.first_purchase_date")}
                    / {unit} as recency,
                {_double(f"{_date(calibration_end)} - customers.first_purchase_date")}
                    / {unit} as age,
                case when customers.purchase_days > 1 then
                    {_double("customers.total_spend - first_day.spend")}
                    / (customers.purchase_days - 1)
                end as monetary_value,
                {_double("first_day.spend")} as first_day_spend,
                {_double("customers.total_spend")} as total_spend
                {holdout_columns}
            from customers
            inner join days as first_day
                on first_day.customer_id = customers.customer_id
                and first_day.order_date = customers.first_purchase_date
            {holdout_join}
            order by customers.customer_id collate "C"
        """
        # Sorted by the database, in byte order (collation C) whatever its locale: the same
        # order, and so the same fit, on either warehouse; faster than Polars' sort of the ids.
        # Rechunked: the result arrives in many batches, and every later to_numpy of a chunked
        # column would copy it (at 100M orders the step then peaked 1.9 GiB higher).
        return self._read(sql, schema).rechunk()

    def monthly_activity(self, up_to: date) -> pl.DataFrame:
        """Per calendar month up to `up_to`: orders, purchase days, revenue and new
        customers (by the month of their first valid order), every month from the first to
        the last present."""
        month = "cast(date_trunc('month', {}) as date)"
        sql = f"""
            with days as ({self._purchase_days(up_to)}),
            months as (
                select
                    {month.format("order_date")} as month,
                    cast(sum(orders) as bigint) as orders,
                    {_double("sum(spend)")} as revenue,
                    count(*) as purchase_days
                from days
                group by 1
            ),
            new_customers as (
                select {month.format("first_purchase_date")} as month, count(*) as new_customers
                from (
                    select min(order_date) as first_purchase_date from days group by customer_id
                ) as firsts
                group by 1
            )
            select months.*, coalesce(new_customers.new_customers, 0) as new_customers
            from months
            left join new_customers on new_customers.month = months.month
        """
        months = self._read(sql, MONTHLY_SCHEMA)
        if months.is_empty():
            return months
        calendar = pl.DataFrame(
            {
                "month": pl.date_range(
                    months["month"].min(), months["month"].max(), "1mo", eager=True
                )
            }
        )
        return (
            calendar.join(months, on="month", how="left")
            .with_columns(
                pl.col("orders", "purchase_days", "new_customers").fill_null(0),
                pl.col("revenue").fill_null(0.0),
            )
            .sort("month")
        )

    def daily_activity(self, up_to: date) -> pl.DataFrame:
        """Per order date up to `up_to`: orders and revenue."""
        sql = (
            f"select order_date, cast(sum(orders) as bigint) as orders, "
            f"{_double('sum(spend)')} as revenue "
            f"from ({self._purchase_days(up_to)}) as days group by order_date"
        )
        return self._read(sql, DAILY_SCHEMA).sort("order_date")
