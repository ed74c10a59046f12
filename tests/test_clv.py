"""The CLV models as pure functions: the published CDNOW figures, the likelihoods against
numerical integration and their gradients against finite differences, recovery of known
parameters from simulated customers, and what a rejected fit leaves published."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_helpers import ROOT, postgres_connection
from scipy.integrate import quad
from scipy.special import gammaln

from retention_pipeline.lib.clv import mle, simulate
from retention_pipeline.lib.clv.mle import Rows, compress
from retention_pipeline.lib.clv.models import (
    BgNbd,
    GammaGamma,
    ParetoNbd,
    _prepare,
    rows_of_summary,
    summary_rows,
)
from retention_pipeline.lib.clv.pipeline import holdout_split, run_clv
from retention_pipeline.lib.clv.predict import (
    acquisition_forecast,
    customer_predictions,
    forecast_periods,
    holdout_evaluation,
    month_length,
    monthly_forecast,
)
from retention_pipeline.lib.clv.summary import OrderHistory
from retention_pipeline.lib.config import ClvConfig
from retention_pipeline.lib.warehouse import PostgresSession

CDNOW = (ROOT / ".." / "shared" / "data" / "cdnow").resolve()
SAMPLE = CDNOW / "CDNOW_sample.txt"
SUMMARY_CSV = CDNOW / "cdnow_customers_summary_with_transactions.csv"
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)

# shared/data/cdnow/README.md: the published estimates on the sample's 39-week calibration.
PUBLISHED = {
    "bg_nbd": ({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}, -9582.4),
    "pareto_nbd": ({"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}, -9595.0),
    "gamma_gamma": ({"p": 6.25, "q": 3.74, "gamma": 15.44}, -4055.9),
}

needs_cdnow = pytest.mark.skipif(
    not SAMPLE.is_file(), reason=f"the CDNOW sample is not at {SAMPLE} (shared/data/cdnow)"
)


def three_significant(value: float) -> str:
    return f"{value:.3g}"


def assert_published(model: str, params: dict[str, float], log_likelihood: float) -> None:
    published, published_ll = PUBLISHED[model]
    assert {k: three_significant(v) for k, v in params.items()} == {
        k: three_significant(v) for k, v in published.items()
    }, (model, params)
    assert abs(log_likelihood - published_ll) <= 0.1, (model, log_likelihood)


def parse_sample(path: Path) -> pl.DataFrame:
    """The sample's rows as orders: sample id, date, dollar value (a plain parse)."""
    fields = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return pl.DataFrame(
        {
            "customer_id": [f[1] for f in fields],
            "order_date": [f[2] for f in fields],
            "net_amount": [float(f[4]) for f in fields],
        }
    ).with_columns(pl.col("order_date").str.to_date("%Y%m%d"))


@pytest.fixture(scope="module")
def sample_orders() -> pl.DataFrame:
    return parse_sample(SAMPLE)


@pytest.fixture(scope="module")
def sample_history(sample_orders) -> Iterator[OrderHistory]:
    with OrderHistory.of_frame(sample_orders) as history:
        yield history


@pytest.fixture(scope="module")
def calibration(sample_history) -> pl.DataFrame:
    return sample_history.summary(CALIBRATION_END, "week", holdout_end=HOLDOUT_END)


@pytest.fixture(scope="module")
def fitted(calibration):
    rows = rows_of_summary(calibration)
    bg, bg_fit = BgNbd.fit(rows)
    pareto, pareto_fit = ParetoNbd.fit(rows)
    gg, gg_fit = GammaGamma.fit(calibration["frequency"], calibration["monetary_value"])
    return {"bg_nbd": (bg, bg_fit), "pareto_nbd": (pareto, pareto_fit), "gamma_gamma": (gg, gg_fit)}


# --------------------------------------------------------------------------------------------
# CDNOW: the published figures
# --------------------------------------------------------------------------------------------


@needs_cdnow
def test_the_summary_rebuilds_the_published_calibration_file(calibration):
    published = pl.read_csv(SUMMARY_CSV).sort("ID")
    ours = calibration.with_columns(ID=pl.col("customer_id").cast(pl.Int64)).sort("ID")
    assert ours["ID"].to_list() == published["ID"].to_list()  # 2,357 customers
    assert (ours["frequency"] == published["x"]).all()
    # The file rounds to two decimals.
    assert (ours["recency"] - published["t_x"]).abs().max() <= 0.005
    assert (ours["age"] - published["T"]).abs().max() <= 0.005
    zbar = ours["monetary_value"].fill_null(0.0) - published["zbar"]
    assert zbar.abs().max() <= 0.005 + 1e-9
    assert ours["frequency"].sum() == 2457
    assert (ours["frequency"] == 0).sum() == 1411
    assert ours["holdout_purchases"].sum() == 1882


@needs_cdnow
@pytest.mark.parametrize("model", ["bg_nbd", "pareto_nbd", "gamma_gamma"])
def test_the_fits_reproduce_the_published_estimates(fitted, model):
    instance, result = fitted[model]
    assert result.ok, result.describe()
    assert_published(model, result.params, result.log_likelihood)
    assert instance.params == result.params


@needs_cdnow
def test_the_published_file_gives_the_same_fits():
    """The rounded summary file itself, as lifetimes ships it."""
    published = pl.read_csv(SUMMARY_CSV)
    rows = summary_rows(published["x"], published["t_x"], published["T"])
    for cls in (BgNbd, ParetoNbd):
        _, result = cls.fit(rows)
        assert_published(cls.name, result.params, result.log_likelihood)
    _, result = GammaGamma.fit(published["x"], published["zbar"])
    assert_published("gamma_gamma", result.params, result.log_likelihood)


@needs_cdnow
def test_bg_nbd_expected_purchases_match_the_paper(fitted):
    bg, _ = fitted["bg_nbd"]
    # A newly acquired customer, by week 78.
    assert round(float(bg.expected_purchases_new(78.0)), 3) == 1.858
    # x = 2, t_x = 30.43, T = 38.86: the next 39 weeks.
    assert round(float(bg.expected_purchases(39.0, 2, 30.43, 38.86)), 3) == 1.226


@needs_cdnow
def test_the_holdout_evaluation_on_cdnow(fitted, calibration):
    bg, _ = fitted["bg_nbd"]
    gg, _ = fitted["gamma_gamma"]
    rows = rows_of_summary(calibration)
    evaluation = holdout_evaluation(calibration, rows, bg, gg, holdout_length=39.0)
    total = evaluation.filter(frequency_bucket="all").row(0, named=True)
    assert total["customers"] == 2357
    assert total["actual_purchases"] == 1882
    # lifetimes gives 1,653.42 on the rounded file with the same model.
    assert total["predicted_purchases"] == pytest.approx(1653.4, abs=0.5)
    buckets = evaluation.filter(pl.col("frequency_bucket") != "all")
    assert buckets["customers"].sum() == 2357
    assert buckets["actual_purchases"].sum() == 1882
    assert evaluation["frequency_bucket"].to_list() == [*"0123456", "7+", "all"]


@needs_cdnow
def test_the_clv_run_on_cdnow_splits_at_the_papers_calibration_end(sample_history):
    """As of the last day, the default holdout is the later half: 1997-09-30 onwards."""
    run = run_clv(sample_history, HOLDOUT_END, ClvConfig(), fitted_at=None)
    assert run.fits_accepted
    # The production fits first, though the holdout's are made first (to spare memory).
    assert run.fit_attempts["purpose"].to_list() == ["production"] * 2 + ["holdout"] * 2
    holdout = run.fit_attempts.filter(purpose="holdout")
    assert holdout["calibration_end"].unique().to_list() == [CALIBRATION_END]
    for row in holdout.iter_rows(named=True):
        assert_published(row["model"], json.loads(row["parameters"]), row["log_likelihood"])
    total = run.holdout_eval.filter(frequency_bucket="all")
    assert total["actual_purchases"].item() == 1882
    forecast = run.forecast_monthly
    assert forecast["forecast_month"].to_list()[0] == date(1998, 7, 1)
    assert forecast.height == 12
    # The backtest forecast Oct 1997 to Jun 1998 from 1997-09-30: nine months ahead.
    assert forecast["backtest_orders_error"].drop_nulls().len() == 9
    assert forecast["backtest_orders_error"].abs().max() < 0.5


# --------------------------------------------------------------------------------------------
# The summary, computed in SQL, against a hand-worked example and a plain-Python one
# --------------------------------------------------------------------------------------------

DAY_ONE = date(2024, 3, 1)


def order_frame(rows: list[tuple[str, int, float]]) -> pl.DataFrame:
    """Orders from (customer, day number from DAY_ONE, amount) tuples."""
    return pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "order_date": [DAY_ONE + timedelta(days=r[1]) for r in rows],
            "net_amount": [r[2] for r in rows],
        }
    )


def test_the_summary_of_a_hand_worked_customer():
    # a: two orders on day 0 (one purchase day of 15), repeats on days 7 and 14, one in the
    # holdout (day 24); b: first order after the calibration end, so not in the summary.
    orders = order_frame(
        [("a", 0, 10.0), ("a", 0, 5.0), ("a", 7, 20.0), ("a", 14, 30.0), ("a", 24, 12.0)]
        + [("b", 22, 9.0)]
    )
    with OrderHistory.of_frame(orders) as history:
        end = DAY_ONE + timedelta(days=21)
        summary = history.summary(end, "week", holdout_end=end + timedelta(days=7))
        months = history.monthly_activity(DAY_ONE + timedelta(days=31))
        daily = history.daily_activity(DAY_ONE + timedelta(days=7))
        first_days = [history.first_purchase_date(DAY_ONE + timedelta(days=d)) for d in (-1, 0, 30)]
    assert first_days == [None, DAY_ONE, DAY_ONE]
    assert summary.to_dicts() == [
        {
            "customer_id": "a",
            "first_purchase_date": DAY_ONE,
            "frequency": 2.0,  # days 7 and 14
            "recency": 2.0,  # 14 days
            "age": 3.0,  # 21 days
            "monetary_value": 25.0,  # (20 + 30) / 2
            "first_day_spend": 15.0,
            "total_spend": 65.0,
            "holdout_purchases": 1.0,
            "holdout_spend": 12.0,
        }
    ]
    assert months.to_dicts() == [
        # March: a's 5 orders on 4 days (day 24 is March 25), b's one; both first bought then.
        {"month": DAY_ONE, "orders": 6, "revenue": 86.0, "purchase_days": 5, "new_customers": 2}
    ]
    assert daily.to_dicts() == [
        {"order_date": DAY_ONE, "orders": 2, "revenue": 15.0},
        {"order_date": DAY_ONE + timedelta(days=7), "orders": 1, "revenue": 20.0},
    ]


def plain_summary(rows, calibration_day: int, holdout_day: int, unit: float) -> dict:
    """The summary by the definition, customer by customer, in plain Python."""
    days: dict[str, dict[int, float]] = {}
    for customer, day, amount in rows:
        spends = days.setdefault(customer, {})
        spends[day] = spends.get(day, 0.0) + amount
    summary = {}
    for customer, spends in days.items():
        calibration = sorted(d for d in spends if d <= calibration_day)
        if not calibration:
            continue
        first, repeats = calibration[0], calibration[1:]
        holdout = [d for d in spends if calibration_day < d <= holdout_day]
        summary[customer] = {
            "frequency": len(repeats),
            "recency": (calibration[-1] - first) / unit,
            "age": (calibration_day - first) / unit,
            "monetary_value": sum(spends[d] for d in repeats) / len(repeats) if repeats else None,
            "first_day_spend": spends[first],
            "total_spend": sum(spends[d] for d in calibration),
            "holdout_purchases": len(holdout),
            "holdout_spend": sum(spends[d] for d in holdout),
        }
    return summary


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from("abcdefg"),
            st.integers(0, 90),
            st.integers(1, 10_000).map(lambda cents: cents / 100),
        ),
        min_size=1,
        max_size=60,
    ),
    calibration_day=st.integers(0, 90),
    holdout_days=st.integers(0, 30),
    unit=st.sampled_from(["day", "week"]),
)
def test_the_summary_follows_the_definition(rows, calibration_day, holdout_days, unit):
    end = DAY_ONE + timedelta(days=calibration_day)
    with OrderHistory.of_frame(order_frame(rows)) as history:
        summary = history.summary(end, unit, end + timedelta(days=holdout_days))
    expected = plain_summary(
        rows, calibration_day, calibration_day + holdout_days, 7.0 if unit == "week" else 1.0
    )
    assert summary["customer_id"].to_list() == sorted(expected)
    for row in summary.iter_rows(named=True):
        plain = expected[row["customer_id"]]
        for column, value in plain.items():
            if value is None:
                assert row[column] is None, column
            else:
                assert row[column] == pytest.approx(value, rel=1e-12, abs=1e-9), column


# Ids whose byte order differs from a locale's: case, digits, punctuation, an accent.
IDS_OUT_OF_LOCALE_ORDER = ["b", "B", "a", "Z", "é", "10", "9", "a-2", "a_1"]


def test_the_summary_is_in_byte_order_of_the_ids_on_duckdb():
    orders = order_frame([(c, day, 10.0) for c in IDS_OUT_OF_LOCALE_ORDER for day in (0, 5)])
    with OrderHistory.of_frame(orders) as history:
        summary = history.summary(DAY_ONE + timedelta(days=9), "day")
    # Python orders strings by code point, which is their UTF-8 bytes' order.
    assert summary["customer_id"].to_list() == sorted(IDS_OUT_OF_LOCALE_ORDER)


def test_the_summary_is_in_byte_order_of_the_ids_whatever_postgresqls_collation():
    con = postgres_connection()
    end = DAY_ONE + timedelta(days=9)
    try:
        cursor = con.cursor()
        cursor.execute(
            'create temporary table orders (customer_id text collate "und-x-icu", '
            "order_date date, net_amount numeric(18, 4))"
        )
        cursor.executemany(
            "insert into orders values (%s, %s, 10)",
            [(c, DAY_ONE + timedelta(days=d)) for c in IDS_OUT_OF_LOCALE_ORDER for d in (0, 5)],
        )
        history = OrderHistory(PostgresSession(con, "raw"), "orders")
        with history.with_purchase_days(end) as grouped:  # as a CLV run reads it
            summary = grouped.summary(end, "day")
    finally:
        con.close()
    assert summary["customer_id"].to_list() == sorted(IDS_OUT_OF_LOCALE_ORDER)


# --------------------------------------------------------------------------------------------
# The likelihoods: stable, and right
# --------------------------------------------------------------------------------------------


def pareto_log_likelihood_by_quadrature(r, alpha, s, beta, x, t_x, T) -> float:
    """log L from its integral form: alive at T, or dropped out at some τ in (t_x, T]."""
    log_front = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    log_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    # The integrand scaled by its value at t_x, so that it is of order 1.
    log_scale = -(r + x) * np.log(alpha + t_x) - (s + 1) * np.log(beta + t_x)

    def integrand(tau):
        log_value = -(r + x) * np.log(alpha + tau) - (s + 1) * np.log(beta + tau)
        return np.exp(log_value - log_scale)

    integral, _ = quad(integrand, t_x, T, epsabs=0, epsrel=1e-13, limit=500)
    log_dropped = np.log(s) + log_scale + np.log(integral) if integral > 0 else -np.inf
    return float(log_front + np.logaddexp(log_alive, log_dropped))


@pytest.mark.parametrize(
    ("params", "x", "t_x", "T"),
    [
        ((0.55, 10.6, 0.61, 11.7), 2, 30.43, 38.86),  # CDNOW-like, α < β
        ((0.55, 11.7, 0.61, 10.6), 2, 30.43, 38.86),  # α > β
        ((0.55, 10.6, 0.61, 10.6), 0, 0.0, 38.86),  # α = β
        ((1.5, 0.05, 0.8, 40.0), 150, 200.0, 400.0),  # many purchases, z near 1
        ((0.3, 60.0, 2.5, 0.02), 40, 3.0, 700.0),  # α ≫ β, long silence
        ((2.0, 3.0, 0.2, 300.0), 0, 0.0, 1000.0),
        ((0.8, 2.0, 1.0, 5.0), 500, 699.0, 700.0),  # t_x just before T
    ],
)
def test_the_pareto_nbd_likelihood_matches_quadrature(params, x, t_x, T):
    rows = summary_rows([x], [t_x], [T])
    total, _ = ParetoNbd.loglik(np.array(params), _prepare(rows))
    expected = pareto_log_likelihood_by_quadrature(*params, x, t_x, T)
    assert np.isfinite(total)
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)
    p_alive = ParetoNbd(*params).p_alive(x, t_x, T)
    assert 0 <= p_alive <= 1


def bg_nbd_log_likelihood_plain(r, alpha, a, b, x, t_x, T) -> float:
    """Fader, Hardie & Lee (2005), eq. 6, term by term."""
    from scipy.special import betaln

    front = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    front += betaln(a, b + x) - betaln(a, b)
    alive = -(r + x) * np.log(alpha + T)
    if x == 0:
        return float(front + alive)
    dropped = np.log(a) - np.log(b + x - 1) - (r + x) * np.log(alpha + t_x)
    return float(front + np.logaddexp(alive, dropped))


def test_the_bg_nbd_likelihood_and_gradient():
    rng = np.random.default_rng(3)
    x, t_x, T = simulate.bg_nbd_summary(
        rng, rng.integers(1, 400, 3000).astype(float), 0.5, 5.0, 0.8, 2.5
    )
    rows = BgNbd.prepare(summary_rows(x, t_x, T))
    params = np.array([0.4, 6.0, 0.9, 2.0])
    total, gradient = BgNbd.loglik(params, rows)
    rows_plain = zip(x, t_x, T, strict=True)
    plain = sum(bg_nbd_log_likelihood_plain(*params, xi, ti, Ti) for xi, ti, Ti in rows_plain)
    assert total == pytest.approx(plain, rel=1e-10)
    assert_gradient(BgNbd.loglik, rows, params, gradient)


def test_the_gamma_gamma_gradient():
    rng = np.random.default_rng(4)
    x = rng.integers(1, 20, 2000).astype(float)
    z = simulate.gamma_gamma_spend(rng, x, 6.0, 4.0, 15.0)
    rows = GammaGamma.prepare(Rows({"x": x, "z": z}, np.ones(x.size), np.arange(x.size)))
    params = np.array([5.0, 3.0, 20.0])
    total, gradient = GammaGamma.loglik(params, rows)
    assert np.isfinite(total)
    assert_gradient(GammaGamma.loglik, rows, params, gradient)


def assert_gradient(loglik, rows, params, gradient):
    for i in range(params.size):
        step = 1e-6 * params[i]
        up, down = params.copy(), params.copy()
        up[i] += step
        down[i] -= step
        numeric = (loglik(up, rows)[0] - loglik(down, rows)[0]) / (2 * step)
        assert gradient[i] == pytest.approx(numeric, rel=1e-5, abs=1e-4), i


def test_bg_nbd_predictions_stay_finite_for_heavy_buyers():
    bg = BgNbd(0.8, 2.0, 1.3, 4.0)
    x = np.array([0, 1, 50, 400, 2000], dtype=float)
    T = np.full(5, 1000.0)
    t_x = np.array([0, 10, 990, 999, 1000], dtype=float)
    expected = bg.expected_purchases(30.0, x, t_x, T)
    alive = bg.p_alive(x, t_x, T)
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
    assert np.all((alive >= 0) & (alive <= 1))
    assert np.all(np.diff(bg.expected_purchases_new(np.array([1.0, 10, 100, 1000]))) > 0)
    later = bg.p_alive_after(52.0, x, t_x, T)
    assert np.all(later <= alive + 1e-12)


def test_compress_keeps_every_customer():
    x = np.array([0, 1, 0, 1, 2, 0], dtype=float)
    t = np.array([0, 3, 0, 3, 5, 0], dtype=float)
    T = np.array([9, 9, 9, 8, 9, 7], dtype=float)
    rows = compress(x=x, t_x=t, T=T)
    assert rows.customers == 6 and rows.weight.size == 5
    assert np.array_equal(rows["x"][rows.inverse], x)
    assert np.array_equal(rows["T"][rows.inverse], T)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from([0.5, 7.0, 1e9])),
        min_size=1,
        max_size=40,
    )
)
def test_compress_gives_the_distinct_rows_in_order_with_their_counts(customers):
    x, t, T = (np.array(column, dtype=float) for column in zip(*customers, strict=True))
    rows = compress(x=x, t_x=t, T=T)
    distinct = sorted(set(customers))
    assert list(zip(rows["x"], rows["t_x"], rows["T"], strict=True)) == distinct
    assert rows.weight.tolist() == [customers.count(row) for row in distinct]
    assert [distinct[i] for i in rows.inverse] == customers


# --------------------------------------------------------------------------------------------
# Recovery: simulated customers with known parameters
# --------------------------------------------------------------------------------------------

CUSTOMERS = 20_000
# Within this many standard errors of the truth (in log-parameters, from the observed
# information of the fit itself): the tolerance shrinks like 1 / sqrt(customers).
STANDARD_ERRORS = 4.5


def log_parameter_standard_errors(loglik, rows, params: dict[str, float]) -> np.ndarray:
    """Standard errors of the log-parameters from the Hessian of the log-likelihood (second
    differences of its value)."""
    theta = np.log(np.array(list(params.values())))

    def value(t):
        return loglik(np.exp(t), rows)[0]

    k, h = theta.size, 1e-4
    hessian = np.empty((k, k))
    base = value(theta)
    for i in range(k):
        for j in range(i, k):
            ei, ej = np.eye(k)[i] * h, np.eye(k)[j] * h
            if i == j:
                second = (value(theta + ei) - 2 * base + value(theta - ei)) / h**2
            else:
                second = (
                    value(theta + ei + ej)
                    - value(theta + ei - ej)
                    - value(theta - ei + ej)
                    + value(theta - ei - ej)
                ) / (4 * h * h)
            hessian[i, j] = hessian[j, i] = second
    return np.sqrt(np.diag(np.linalg.inv(-hessian)))


def assert_recovered(result, truth: dict[str, float], loglik, rows):
    assert result.ok, result.describe()
    errors = log_parameter_standard_errors(loglik, rows, result.params)
    for (name, true), se in zip(truth.items(), errors, strict=True):
        gap = abs(np.log(result.params[name]) - np.log(true))
        assert gap <= STANDARD_ERRORS * se, (name, result.params[name], true, se)


recovery = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@recovery
@given(
    r=st.floats(0.2, 2.0),
    alpha=st.floats(1.0, 20.0),
    a=st.floats(0.3, 3.0),
    b=st.floats(1.0, 6.0),
    seed=st.integers(0, 2**16),
)
def test_bg_nbd_recovers_known_parameters(r, alpha, a, b, seed):
    rng = np.random.default_rng(seed)
    ages = rng.integers(7, 547, CUSTOMERS).astype(float)
    x, t_x, T = simulate.bg_nbd_summary(rng, ages, r, alpha, a, b)
    rows = summary_rows(x, t_x, T)
    _, result = BgNbd.fit(rows)
    truth = {"r": r, "alpha": alpha, "a": a, "b": b}
    assert_recovered(result, truth, BgNbd.loglik, BgNbd.prepare(rows))


@recovery
@given(
    r=st.floats(0.3, 2.0),
    alpha=st.floats(2.0, 20.0),
    s=st.floats(0.3, 2.0),
    beta=st.floats(2.0, 30.0),
    seed=st.integers(0, 2**16),
)
def test_pareto_nbd_recovers_known_parameters(r, alpha, s, beta, seed):
    rng = np.random.default_rng(seed)
    ages = rng.integers(7, 547, CUSTOMERS).astype(float)
    x, t_x, T = simulate.pareto_nbd_summary(rng, ages, r, alpha, s, beta)
    rows = summary_rows(x, t_x, T)
    _, result = ParetoNbd.fit(rows)
    truth = {"r": r, "alpha": alpha, "s": s, "beta": beta}
    assert_recovered(result, truth, ParetoNbd.loglik, rows)


@recovery
@given(
    p=st.floats(1.0, 10.0),
    q=st.floats(2.0, 8.0),
    gamma=st.floats(5.0, 50.0),
    seed=st.integers(0, 2**16),
)
def test_gamma_gamma_recovers_known_parameters(p, q, gamma, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 15, CUSTOMERS // 2).astype(float)
    z = simulate.gamma_gamma_spend(rng, x, p, q, gamma)
    _, result = GammaGamma.fit(x, z)
    rows = GammaGamma.prepare(Rows({"x": x, "z": z}, np.ones(x.size), np.arange(x.size)))
    assert_recovered(result, {"p": p, "q": q, "gamma": gamma}, GammaGamma.loglik, rows)


def test_a_million_customers_use_the_warm_start():
    """Above the warm-start size the fit starts from a subsample's optimum and still lands
    on the full data's optimum."""
    rng = np.random.default_rng(11)
    ages = rng.integers(7, 547, 250_000).astype(float)
    x, t_x, T = simulate.bg_nbd_summary(rng, ages, 0.25, 4.4, 0.8, 2.4)
    rows = summary_rows(x, t_x, T)
    _, warm = BgNbd.fit(rows)
    cold = mle.fit("bg_nbd", BgNbd.parameter_names, BgNbd.loglik, BgNbd.prepare(rows),
                   (1.0, 10.0, 1.0, 1.0))  # fmt: skip
    assert warm.ok and cold.ok
    for name in BgNbd.parameter_names:
        assert warm.params[name] == pytest.approx(cold.params[name], rel=1e-4)


# --------------------------------------------------------------------------------------------
# Rejected fits, predictions, forecast
# --------------------------------------------------------------------------------------------


def one_time_buyers(customers: int = 300) -> pl.DataFrame:
    """Everybody bought once: nothing identifies the repeat process or the spend model."""
    start = date(2024, 1, 1)
    return pl.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(customers)],
            "order_date": [start + timedelta(days=i % 200) for i in range(customers)],
            "net_amount": [20.0 + i % 7 for i in range(customers)],
        }
    )


def test_a_rejected_fit_keeps_the_previous_parameters():
    as_of = date(2024, 9, 30)
    previous = pl.DataFrame(
        {
            "model": ["bg_nbd"] * 4 + ["gamma_gamma"] * 3,
            "parameter": ["r", "alpha", "a", "b", "p", "q", "gamma"],
            "value": [0.24, 4.4, 0.79, 2.4, 6.2, 3.7, 15.4],
            "time_unit": "week",
            "log_likelihood": [-9582.4] * 4 + [-4055.9] * 3,
            "n_customers": [2357] * 4 + [946] * 3,
            "calibration_end": date(1997, 9, 30),
            "fitted_at": None,
        }
    )
    with OrderHistory.of_frame(one_time_buyers()) as history:
        run = run_clv(history, as_of, ClvConfig(), previous_params=previous)
    assert not run.fits_accepted
    assert "gamma_gamma" in {r.model for r in run.rejected}
    assert set(run.kept_previous) == {r.model for r in run.rejected}
    kept = run.model_params.filter(pl.col("model").is_in(run.kept_previous))
    expected = previous.filter(pl.col("model").is_in(run.kept_previous))
    assert kept.select("model", "parameter", "value").equals(
        expected.select("model", "parameter", "value")
    )
    # The customers are still scored, with the kept parameters.
    assert run.customer_predictions["predicted_ltv"].null_count() == 0
    attempts = run.fit_attempts.filter(purpose="production", is_accepted=False)
    assert attempts["problems"].null_count() == 0


def test_without_previous_parameters_nothing_is_published():
    with OrderHistory.of_frame(one_time_buyers()) as history:
        run = run_clv(history, date(2024, 9, 30), ClvConfig())
    assert not run.fits_accepted
    rejected = {r.model for r in run.rejected}
    assert run.model_params.filter(pl.col("model").is_in(rejected)).is_empty()
    if "gamma_gamma" in rejected:
        assert run.customer_predictions["predicted_ltv"].null_count() == 300


def test_predicted_ltv_is_p_alive_times_the_value_if_alive():
    bg = BgNbd(0.24, 4.4, 0.79, 2.4)
    gg = GammaGamma(6.25, 3.74, 15.44)
    summary = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "frequency": [0.0, 2.0, 10.0],
            "recency": [0.0, 30.4, 50.0],
            "age": [38.9, 38.9, 52.0],
            "monetary_value": [None, 22.35, 40.0],
        }
    )
    rows = rows_of_summary(summary)
    out = customer_predictions(
        summary, rows, bg, gg, time_unit="week", horizon_months=12, annual_discount_rate=0.0,
        gross_margin=0.5,
    )  # fmt: skip
    assert np.allclose(out["predicted_ltv"], out["p_alive"] * out["predicted_ltv_if_alive"])
    # Undiscounted: the whole horizon's expected purchases × spend × margin.
    assert np.allclose(
        out["predicted_ltv"], out["expected_purchases"] * out["expected_spend"] * 0.5
    )
    assert out["p_alive"][0] == 1.0  # BG/NBD: no repeat purchase, no chance to drop out


@pytest.mark.parametrize("model", [BgNbd(0.24, 4.4, 0.79, 2.4), ParetoNbd(0.55, 10.6, 0.61, 11.7)])
def test_customers_sharing_frequency_and_age_keep_their_own_recency(model):
    """The terms that depend on frequency and age only are computed once per such pair;
    each customer's predictions and the forecast's sums still equal the models evaluated
    customer by customer."""
    origin = date(2024, 6, 30)
    summary = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "first_purchase_date": [origin - timedelta(weeks=39)] * 4 + [origin],
            "frequency": [2.0, 2.0, 2.0, 5.0, 0.0],
            "recency": [5.0, 20.0, 35.0, 20.0, 0.0],
            "age": [39.0, 39.0, 39.0, 39.0, 0.0],
            "monetary_value": [20.0, 20.0, 20.0, 30.0, None],
            "first_day_spend": [15.0] * 5,
        }
    )
    x, t_x, T = (summary[c].to_numpy() for c in ("frequency", "recency", "age"))
    rows = rows_of_summary(summary)
    horizon = 12 * month_length("week")
    out = customer_predictions(
        summary, rows, model, None, time_unit="week", horizon_months=12, annual_discount_rate=0.0
    )
    assert np.allclose(out["p_alive"], model.p_alive(x, t_x, T), rtol=1e-12)
    assert np.allclose(out["expected_purchases"], model.expected_purchases(horizon, x, t_x, T))
    assert out["expected_purchases"].n_unique() == 5

    activity = pl.DataFrame(
        {
            "month": [date(2024, 6, 1)],
            "orders": [10],
            "purchase_days": [10],
            "new_customers": [0],
        }
    )
    forecast = monthly_forecast(
        summary, rows, activity, model, GammaGamma(6.25, 3.74, 15.44),
        origin=origin, time_unit="week", months=3,
    )  # fmt: skip
    ends = [((p.last - origin).days + 1) / 7 for p in forecast_periods(origin, 3)]
    alive = [model.p_alive_after(end, x, t_x, T).sum() for end in ends]
    to_date = [model.expected_purchases(end, x, t_x, T).sum() for end in ends]
    assert np.allclose(forecast["existing_active_customers"], alive, rtol=1e-12)
    assert np.allclose(forecast["existing_orders"], np.diff([0.0, *to_date]), rtol=1e-12)


def test_forecast_periods_start_after_the_origin():
    periods = forecast_periods(date(2024, 2, 14), 12)
    assert periods[0].first == date(2024, 2, 15) and periods[0].is_partial
    assert periods[0].last == date(2024, 2, 29)
    assert periods[1].month == date(2024, 3, 1) and not periods[1].is_partial
    assert periods[-1].month == date(2025, 1, 1)
    assert forecast_periods(date(2024, 3, 31), 1)[0].first == date(2024, 4, 1)


def test_the_acquisition_forecast_keeps_season_and_level():
    months = pl.date_range(date(2022, 1, 1), date(2024, 12, 1), "1mo", eager=True)
    history = pl.DataFrame(
        {"month": months, "new_customers": [200 if m.month == 12 else 100 for m in months]}
    )
    forecast = acquisition_forecast(history, forecast_periods(date(2024, 12, 31), 12))
    # No growth: each month as in the past years, December's peak included.
    assert forecast[:11] == pytest.approx([100.0] * 11, rel=1e-9)
    assert forecast[-1] == pytest.approx(200.0, rel=1e-9)
    growing = history.with_columns(
        new_customers=pl.when(pl.col("month") >= date(2024, 1, 1))
        .then(pl.col("new_customers") * 3)
        .otherwise(pl.col("new_customers"))
    )
    capped = acquisition_forecast(growing, forecast_periods(date(2024, 12, 31), 13))
    # Growth ×3 a year is capped at ×2: a January is twice the one before.
    assert capped[12] / capped[0] == pytest.approx(2.0, rel=1e-9)
    stopped = history.with_columns(
        new_customers=pl.when(pl.col("month") >= date(2024, 10, 1))
        .then(0)
        .otherwise(pl.col("new_customers"))
    )
    assert np.allclose(acquisition_forecast(stopped, forecast_periods(date(2024, 12, 31), 3)), 0)


def test_the_holdout_split():
    assert holdout_split(date(1997, 1, 1), date(1998, 6, 30), None) == date(1997, 9, 30)
    assert holdout_split(date(2024, 1, 1), date(2024, 12, 31), 91) == date(2024, 10, 1)
    assert holdout_split(date(2024, 1, 1), date(2024, 1, 30), None) is None


@needs_cdnow
@pytest.mark.parametrize("cls", [BgNbd, ParetoNbd])
def test_days_and_weeks_give_the_same_model(sample_history, cls):
    """Rates scale with the time unit and nothing else changes: α (and β) in days are 7 ×
    those in weeks, the log-likelihoods differ by Σx·log 7, predictions agree."""
    fits = {}
    for unit in ("week", "day"):
        summary = sample_history.summary(CALIBRATION_END, unit)
        rows = rows_of_summary(summary)
        fits[unit] = (summary, *cls.fit(rows))
    (weeks, week_model, week_fit), (days, day_model, day_fit) = fits["week"], fits["day"]
    for name, value in week_fit.params.items():
        scale = 7.0 if name in ("alpha", "beta") else 1.0
        assert day_fit.params[name] == pytest.approx(scale * value, rel=2e-4), name
    shift = float(weeks["frequency"].sum()) * np.log(7)
    assert day_fit.log_likelihood == pytest.approx(week_fit.log_likelihood - shift, abs=0.01)
    in_weeks = week_model.expected_purchases(
        39.0, weeks["frequency"], weeks["recency"], weeks["age"]
    )
    in_days = day_model.expected_purchases(273.0, days["frequency"], days["recency"], days["age"])
    assert np.allclose(in_weeks, in_days, rtol=1e-3, atol=1e-6)


def test_no_valid_order_yet_gives_empty_tables_and_no_rejection():
    for as_of in (None, date(2024, 9, 30)):
        with OrderHistory.of_frame(one_time_buyers().clear()) as history:
            run = run_clv(history, as_of, ClvConfig())
        assert run.fits_accepted
        assert run.customer_predictions.is_empty()
        assert run.model_params.is_empty() and run.forecast_monthly.is_empty()
        assert run.holdout_eval.is_empty()
