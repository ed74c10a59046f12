"""Realistic, deterministic synthetic orders for demos, tests and benchmarks.

Customers arrive over the date range with a growth trend, a yearly season (November and
December peak, Black Friday week highest) and a weekly pattern; each buys first on the day it
arrives. Repeat buying follows the spirit of the (M)BG/NBD model: every customer has its own
purchase rate (Gamma across customers) and its own probability of dropping out after each
purchase (Beta across customers), so most customers buy once and a minority becomes loyal.
Everything is vectorized with NumPy and Polars; 10M orders take seconds, not minutes.

All columns are strings, so the few deliberately bad rows (`BAD_ROW_KINDS`) can be written to
CSV and Parquet alike. The same (customers, seed, start, end, bad_rows) gives the same frame and,
through `write_orders`, byte-identical files.
"""

from __future__ import annotations

import gzip
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl

from retention_pipeline.lib.config import ORDER_COLUMNS

# Every order field but refund_of: generated refunds are partial, on the order's own row.
GENERATED_COLUMNS = tuple(c for c in ORDER_COLUMNS if c != "refund_of")

CHANNELS = ("organic", "paid_search", "social", "email", "referral")
STATUSES = ("completed", "cancelled", "refunded")
CURRENCY = "USD"

# The deliberately bad rows, in the order their codes are numbered. Each one fails one check:
BAD_ROW_KINDS = (
    "empty_customer_id",  # customer_id "" (an empty string, written as "" in CSV)
    "empty_order_id",  # order_id null (an empty field in CSV)
    "unparseable_ordered_at",  # ordered_at "not-a-date"
    "unparseable_amount",  # amount "abc"
    "negative_amount",  # amount "-42.50"
    "refund_exceeds_amount",  # status "refunded", refunded_amount > amount
    "future_ordered_at",  # ordered_at (and updated_at) in the year 2099
    "unknown_currency",  # currency "XXX"
    "exact_duplicate",  # a copy of an existing row, same content
    "conflicting_duplicate",  # same order_id and updated_at as an existing row, other amount
    "newer_version",  # same order_id, later updated_at, status "refunded", refund = amount
)
BAD_ROW_SHARE = 0.001  # of the good rows, over all kinds together; at least one of each kind
BAD_ORDERED_AT = "not-a-date"
BAD_AMOUNT = "abc"
BAD_CURRENCY = "XXX"
FUTURE_YEAR = 2099

_DAY = 86_400
_EPOCH = date(1970, 1, 1)

# Customer behaviour. Rates are per day; channel factors scale the dropout probability.
_RATE_SHAPE = 2.0  # Gamma shape of the purchase rate across customers
_RATE_MEAN = 1 / 20  # mean purchase rate (one order per 20 days while active, before thinning)
# Beta(a, b) dropout probability after each purchase: U-shaped, so customers are mostly either
# one-off buyers (p near 1) or loyal (p near 0).
_DROPOUT_A, _DROPOUT_B = 0.5, 0.6
_CHANNEL_SHARE = (0.36, 0.24, 0.16, 0.14, 0.10)
_CHANNEL_DROPOUT = (1.0, 1.12, 1.25, 0.8, 0.85)
_MAX_PURCHASES = 400  # per customer, before the end of the range cuts them
_SPEND_MEDIAN = 38.0  # median of the customers' typical order amount
_SPEND_SIGMA = 0.5  # spread of the typical amount across customers (log scale)
_ORDER_SIGMA = 0.4  # spread of one customer's amounts around its typical one (log scale)
_GROWTH = 0.35  # yearly log growth of new customers
_REPEAT_SEASON = 0.6  # how strongly season and weekday shape repeat orders (0 none, 1 full)
_CANCELLED, _REFUNDED, _PARTIAL = 0.03, 0.01, 0.02  # shares of orders
# Orders by hour of day (local time): quiet at night, busy at lunch, peak in the evening.
_HOUR_WEIGHT = np.array(
    [1.3, 0.8, 0.5, 0.35, 0.3, 0.35, 0.6, 1.0, 1.6, 2.2, 2.6, 2.8]
    + [3.0, 2.9, 2.8, 2.8, 2.9, 3.1, 3.5, 4.0, 4.4, 4.5, 3.8, 2.5]
)
# Monday first, as numpy's weekday arithmetic below gives it.
_WEEKDAY_WEIGHT = np.array([1.08, 1.03, 1.0, 0.98, 0.92, 0.88, 1.05])
_MONTH_WEIGHT = np.array([0.9, 0.82, 0.92, 0.95, 1.0, 0.93, 0.95, 1.0, 0.97, 1.05, 1.35, 1.55])


def generate_orders(
    customers: int,
    seed: int,
    start: date = date(2023, 1, 1),
    end: date = date(2025, 12, 31),
    bad_rows: bool = True,
) -> pl.DataFrame:
    """Orders of `customers` customers acquired between `start` and `end` (inclusive).

    Columns are `GENERATED_COLUMNS`, all strings, good rows sorted by ordered_at. With `bad_rows`,
    about `BAD_ROW_SHARE` of extra rows of the kinds in `BAD_ROW_KINDS` (at least one of each
    when there is an order at all) sit at random positions among them; without, the good rows
    are the same rows in the same order.
    """
    if customers < 0:
        raise ValueError(f"customers must be >= 0, got {customers}")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    rng = np.random.default_rng(seed)
    n_days = (end - start).days + 1
    acquisition_weight, repeat_accept = _day_weights(start, n_days)

    # Customers, numbered in order of their acquisition day.
    first_day = np.sort(rng.choice(n_days, size=customers, p=acquisition_weight))
    rate = rng.gamma(_RATE_SHAPE, _RATE_MEAN / _RATE_SHAPE, size=customers)
    channel = rng.choice(len(CHANNELS), size=customers, p=_CHANNEL_SHARE).astype(np.int8)
    dropout = rng.beta(_DROPOUT_A, _DROPOUT_B, size=customers)
    dropout = np.clip(dropout * np.asarray(_CHANNEL_DROPOUT)[channel], 0.002, 1.0)
    spend = np.log(_SPEND_MEDIAN) + _SPEND_SIGMA * rng.standard_normal(customers)

    # Purchases: a geometric number per customer (dropout after each), exponential gaps. The
    # cap lies far beyond what fits before `end` at the customer's rate, so it changes nothing
    # but keeps loyal customers from costing memory.
    expected = rate * (n_days - first_day)
    cap = np.minimum(np.ceil(expected + 6 * np.sqrt(expected) + 10), _MAX_PURCHASES)
    purchases = np.minimum(rng.geometric(dropout), cap.astype(np.int64))
    owner = np.repeat(np.arange(customers, dtype=np.int64), purchases)
    group_start = np.cumsum(purchases) - purchases
    gaps = np.minimum(rng.standard_exponential(owner.size) / rate[owner], n_days + 1.0)
    gaps[group_start] = 0.0  # the first purchase is on the acquisition day
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[group_start], purchases)
    day = first_day[owner] + elapsed.astype(np.int64)
    del gaps, elapsed
    # Thin repeat purchases by season and weekday (an inhomogeneous Poisson process).
    keep = rng.random(owner.size) < repeat_accept[np.minimum(day, n_days - 1)]
    keep[group_start] = True
    keep &= day < n_days
    owner, day = owner[keep], day[keep]
    del keep
    m = owner.size

    # Order details.
    hour = rng.choice(24, size=m, p=_HOUR_WEIGHT / _HOUR_WEIGHT.sum())
    ordered = (day * 24 + hour) * 3600 + rng.integers(0, 3600, size=m, dtype=np.int64)
    del day, hour
    amount = np.exp(spend[owner] + _ORDER_SIGMA * rng.standard_normal(m))
    cents = np.maximum(np.rint(amount * 100), 100).astype(np.int64)
    del amount
    draw = rng.random(m)
    status = np.zeros(m, dtype=np.int8)  # completed
    status[draw < _CANCELLED + _REFUNDED] = 2  # refunded
    status[draw < _CANCELLED] = 1  # cancelled
    partial = (draw >= _CANCELLED + _REFUNDED) & (draw < _CANCELLED + _REFUNDED + _PARTIAL)
    refunded = np.where(status == 2, cents, 0)
    share = rng.uniform(0.1, 0.7, size=m)
    refunded = np.where(partial, np.clip(np.rint(cents * share), 1, cents - 1), refunded)
    later = np.where(
        status == 1,
        rng.integers(60, 2 * _DAY, size=m),  # cancelled within two days
        rng.integers(_DAY, 30 * _DAY, size=m),  # refunds within a month
    )
    updated = ordered + np.where((status != 0) | partial, later, 0)
    del draw, partial, share, later

    order = _order_by(ordered)
    rows = {
        "number": np.arange(1, m + 1, dtype=np.int64),
        "owner": owner[order],
        "ordered": ordered[order],
        "cents": cents[order],
        "status": status[order],
        "refunded": refunded[order].astype(np.int64),
        "updated": updated[order],
        "kind": np.full(m, -1, dtype=np.int8),
    }
    del owner, ordered, cents, status, refunded, updated, order
    offset = (start - _EPOCH).days * _DAY  # seconds from 1970 to `start`
    # Order ids are as wide with bad rows as without, so the good rows are the same either way.
    order_width = max(7, len(str(m + _bad_row_count(m) * len(BAD_ROW_KINDS))))
    if bad_rows and m:
        rows = _with_bad_rows(rows, rng, offset)
    rows["ordered"] += offset
    rows["updated"] += offset
    return _to_strings(rows, customers, channel, order_width)


def write_orders(orders: pl.DataFrame, out: Path) -> list[Path]:
    """Write `orders` to `out` as .csv, .csv.gz or .parquet (by suffix); returns the files.

    Nulls are written as empty fields in CSV. Files are byte-identical for identical frames
    (the gzip header carries no name and no time).
    """
    out = Path(out)
    name = out.name.lower()
    if not name.endswith((".csv", ".csv.gz", ".parquet")):
        raise ValueError(f"{out}: unknown format; use a .csv, .csv.gz or .parquet file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".csv.gz"):
        with (
            out.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
        ):
            orders.write_csv(gz)
    elif name.endswith(".csv"):
        orders.write_csv(out)
    else:
        orders.write_parquet(out)
    return [out]


# Marketing spend: what each paid channel costs per new customer (organic costs nothing).
SPEND_CHANNEL_CAC = {"paid_search": 90.0, "social": 75.0, "email": 20.0, "referral": 45.0}
_SPEND_NOISE = 0.25  # month-to-month spread of a channel's cost per customer (log scale)


def generate_marketing_spend(orders: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Daily marketing spend (columns date, channel, spend, as strings) of the paid channels
    that goes with generated `orders`: each month, a channel spends its new customers times
    its cost per customer (`SPEND_CHANNEL_CAC`) with lognormal noise, spread evenly over the
    month's days. Deterministic for the same orders and seed; rows sorted by date, channel.
    """
    schema = {"date": pl.Utf8, "channel": pl.Utf8, "spend": pl.Utf8}
    ordered_at = pl.col("ordered_at").str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False)
    firsts = (
        orders.filter(
            pl.col("customer_id").fill_null("") != "",
            ordered_at.dt.year() < FUTURE_YEAR,
            pl.col("channel").is_in(list(SPEND_CHANNEL_CAC)),
        )
        .with_columns(ordered_at.alias("_at"))
        .sort("_at")
        .group_by("customer_id", maintain_order=True)
        .first()
    )
    if firsts.is_empty():
        return pl.DataFrame(schema=schema)
    monthly = (
        firsts.group_by(month=pl.col("_at").dt.truncate("1mo").dt.date(), channel="channel")
        .agg(customers=pl.len())
        .sort("month", "channel")
    )
    rng = np.random.default_rng(seed)
    noise = np.exp(_SPEND_NOISE * rng.standard_normal(monthly.height))
    cac = monthly["channel"].replace_strict(SPEND_CHANNEL_CAC, return_dtype=pl.Float64)
    monthly = monthly.with_columns(total=monthly["customers"] * cac * noise)
    days = monthly.with_columns(
        date=pl.date_ranges("month", pl.col("month").dt.month_end())
    ).explode("date")
    daily = days.with_columns(
        cents=(pl.col("total") * 100 / pl.len().over("month", "channel")).round().cast(pl.Int64)
    ).sort("date", "channel")
    return pl.DataFrame(
        {
            "date": daily["date"].cast(pl.Utf8),
            "channel": daily["channel"],
            "spend": _money(daily["cents"].to_numpy()),
        }
    )


def _day_weights(start: date, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """(probability of acquisition per day, acceptance of a repeat order per day)."""
    days = np.datetime64(start, "D") + np.arange(n_days)
    year = days.astype("datetime64[Y]")
    month = (days.astype("datetime64[M]") - year.astype("datetime64[M]")).astype(np.int64)
    weekday = (days.astype(np.int64) + 3) % 7  # Monday 0; 1970-01-01 was a Thursday
    day_of_month = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    season = _MONTH_WEIGHT[month]
    # Black Friday to Cyber Monday: the four days after the fourth Thursday of November.
    november_first = year.astype("datetime64[M]") + 10
    november_first_weekday = (november_first.astype("datetime64[D]").astype(np.int64) + 3) % 7
    thanksgiving = 1 + (3 - november_first_weekday) % 7 + 21
    after_thanksgiving = day_of_month - thanksgiving
    season[(month == 10) & (after_thanksgiving >= 1) & (after_thanksgiving <= 4)] *= 2.2
    season[(month == 11) & (day_of_month <= 20)] *= 1.15  # gifts
    season[(month == 11) & (day_of_month >= 24) & (day_of_month <= 26)] *= 0.6  # holidays
    shape = season * _WEEKDAY_WEIGHT[weekday]
    acquisition = shape * np.exp(_GROWTH * np.arange(n_days) / 365.25)
    repeat = shape**_REPEAT_SEASON
    return acquisition / acquisition.sum(), repeat / repeat.max()


def _order_by(seconds: np.ndarray) -> np.ndarray:
    """The stable sort order of `seconds` (>= 0): ties keep their order."""
    index_bits = max(1, int(seconds.size).bit_length())
    if seconds.size == 0 or int(seconds.max()) >= 1 << (62 - index_bits):
        return np.argsort(seconds, kind="stable")
    # Pack (seconds, index) into one unique key: a plain sort is several times faster.
    key = (seconds << index_bits) | np.arange(seconds.size, dtype=np.int64)
    key.sort()
    return key & ((1 << index_bits) - 1)


def _bad_row_count(good_rows: int) -> int:
    """How many bad rows of each kind go with `good_rows` good ones."""
    return max(1, round(good_rows * BAD_ROW_SHARE / len(BAD_ROW_KINDS)))


def _with_bad_rows(
    rows: dict[str, np.ndarray], rng: np.random.Generator, offset: int
) -> dict[str, np.ndarray]:
    """`rows` with the bad rows of `BAD_ROW_KINDS` put at random positions among them."""
    m = rows["number"].size
    kind = np.repeat(np.arange(len(BAD_ROW_KINDS), dtype=np.int8), _bad_row_count(m))
    size = kind.size
    code = {name: i for i, name in enumerate(BAD_ROW_KINDS)}
    # Sources: plain completed orders (updated_at == ordered_at, nothing refunded), distinct.
    eligible = np.flatnonzero((rows["status"] == 0) & (rows["refunded"] == 0))
    if eligible.size == 0:
        eligible = np.arange(m)
    source = rng.choice(eligible, size=size, replace=eligible.size < size)
    bad = {name: values[source] for name, values in rows.items()}
    bad["kind"] = kind

    # Rows wrong in themselves get order ids of their own, after the good ones; the duplicates
    # and the newer version keep their source's.
    same_order = np.isin(
        kind, [code["exact_duplicate"], code["conflicting_duplicate"], code["newer_version"]]
    )
    bad["number"] = np.where(same_order, bad["number"], m + 1 + np.arange(size))
    cents, ordered = bad["cents"], bad["ordered"]
    later = bad["updated"] + rng.integers(_DAY, 30 * _DAY, size=size)

    is_kind = kind == code["negative_amount"]
    bad["cents"] = np.where(is_kind, -cents, bad["cents"])
    is_kind = kind == code["refund_exceeds_amount"]
    bad["status"] = np.where(is_kind, 2, bad["status"]).astype(np.int8)
    bad["refunded"] = np.where(
        is_kind, cents + rng.integers(100, 5_000, size=size), bad["refunded"]
    )
    bad["updated"] = np.where(is_kind, later, bad["updated"])
    is_kind = kind == code["future_ordered_at"]
    # A time in the year FUTURE_YEAR, in seconds from `start` like all times here.
    future = (date(FUTURE_YEAR, 1, 1) - _EPOCH).days * _DAY - offset + ordered % (365 * _DAY)
    bad["ordered"] = np.where(is_kind, future, bad["ordered"])
    bad["updated"] = np.where(is_kind, future, bad["updated"])
    is_kind = kind == code["conflicting_duplicate"]
    bad["cents"] = np.where(is_kind, cents + rng.integers(1, 5_000, size=size), bad["cents"])
    is_kind = kind == code["newer_version"]
    bad["status"] = np.where(is_kind, 2, bad["status"]).astype(np.int8)
    bad["refunded"] = np.where(is_kind, cents, bad["refunded"])
    bad["updated"] = np.where(is_kind, later, bad["updated"])

    # Bad row i goes just before good row position[i] (m: at the end).
    position = rng.integers(0, m + 1, size=size)
    return {name: np.insert(rows[name], position, bad[name]) for name in rows}


def _to_strings(
    rows: dict[str, np.ndarray], customers: int, channel: np.ndarray, order_width: int
) -> pl.DataFrame:
    """The numeric rows as the string columns of `GENERATED_COLUMNS`, bad values patched in."""
    n = rows["number"].size
    if n == 0:
        return pl.DataFrame(schema={c: pl.Utf8 for c in GENERATED_COLUMNS})
    owner = rows["owner"]
    customer_width = max(6, len(str(customers)))
    customer = pl.Series(np.arange(1, customers + 1, dtype=np.int64))
    customer_ids = _padded("C", customer, customer_width)
    emails = pl.select(pl.format("c{}@example.com", pl.lit(customer))).to_series()
    ordered_at = _timestamps(rows["ordered"])
    updated_at = ordered_at.clone()
    changed = np.flatnonzero(rows["updated"] != rows["ordered"])
    updated_at.scatter(changed, _timestamps(rows["updated"][changed]))
    columns = {
        "order_id": _padded("O", pl.Series(rows["number"]), order_width),
        "customer_id": customer_ids.gather(owner),
        "ordered_at": ordered_at,
        "amount": _money(rows["cents"]),
        "status": pl.Series(STATUSES).gather(rows["status"]),
        "refunded_amount": _money(rows["refunded"]),
        "currency": pl.Series([CURRENCY]).gather(np.zeros(n, dtype=np.int64)),
        "updated_at": updated_at,
        "customer_email": emails.gather(owner),
        "channel": pl.Series(CHANNELS).gather(channel[owner]),
    }
    kind = rows["kind"]
    for column, kind_name, value in (
        ("customer_id", "empty_customer_id", ""),
        ("order_id", "empty_order_id", None),
        ("ordered_at", "unparseable_ordered_at", BAD_ORDERED_AT),
        ("amount", "unparseable_amount", BAD_AMOUNT),
        ("currency", "unknown_currency", BAD_CURRENCY),
    ):
        columns[column].scatter(np.flatnonzero(kind == BAD_ROW_KINDS.index(kind_name)), value)
    return pl.DataFrame([series.alias(name) for name, series in columns.items()])


def _padded(prefix: str, numbers: pl.Series, width: int) -> pl.Series:
    """Numbers as prefix + zero-padded digits, e.g. "O0000042"."""
    digits = (numbers + 10**width).cast(pl.Utf8).str.slice(1)
    return pl.select(pl.concat_str([pl.lit(prefix), pl.lit(digits)])).to_series()


def _money(cents: np.ndarray) -> pl.Series:
    """Integer cents as "42.50" or "-42.50", through a table when amounts repeat."""
    low, high = int(cents.min()), int(cents.max())
    if 2 * (high - low + 1) <= cents.size:
        return _money(np.arange(low, high + 1, dtype=np.int64)).gather(cents - low)
    value = pl.col("cents")
    return (
        pl.DataFrame({"cents": cents})
        .select(
            pl.concat_str(
                [
                    pl.when(value < 0).then(pl.lit("-")).otherwise(pl.lit("")),
                    (value.abs() // 100).cast(pl.Utf8),
                    pl.lit("."),
                    (value.abs() % 100 + 100).cast(pl.Utf8).str.slice(1),
                ]
            )
        )
        .to_series()
    )


@cache
def _times_of_day() -> pl.Series:
    """The 86,400 times of a day, "00:00:00" to "23:59:59"."""
    times = np.datetime_as_string(np.arange(_DAY).astype("datetime64[s]"))
    return pl.Series(times, dtype=pl.Utf8).str.slice(11)


def _timestamps(seconds: np.ndarray) -> pl.Series:
    """Seconds since 1970 as "YYYY-MM-DD HH:MM:SS", through tables of the days and the times."""
    if seconds.size == 0:
        return pl.Series([], dtype=pl.Utf8)
    day = seconds // _DAY
    first = int(day.min())
    dates = np.datetime_as_string(np.arange(first, int(day.max()) + 1).astype("datetime64[D]"))
    date_part = pl.Series(dates, dtype=pl.Utf8).gather(day - first)
    time_part = _times_of_day().gather(seconds - day * _DAY)
    return pl.select(
        pl.concat_str([pl.lit(date_part), pl.lit(time_part)], separator=" ")
    ).to_series()
