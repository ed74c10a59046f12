"""Customer summaries drawn from the models with known parameters: for tests that the fits
recover them, and for benchmarks at any size.

Times are drawn in continuous time and then floored to whole days, as a summary built from
order dates is; `T_days` gives each customer's age in days.
"""

from __future__ import annotations

import numpy as np


def _floor_to_days(x: np.ndarray, t_x: np.ndarray, T_days: np.ndarray, days_per_unit: float):
    t_days = np.floor(t_x * days_per_unit)
    return x.astype(np.float64), t_days / days_per_unit, T_days / days_per_unit


def bg_nbd_summary(
    rng: np.random.Generator,
    T_days: np.ndarray,
    r: float,
    alpha: float,
    a: float,
    b: float,
    days_per_unit: float = 7.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in units of `days_per_unit` days for customers of ages `T_days`."""
    n = T_days.size
    T = T_days / days_per_unit
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    events = rng.poisson(lam * T)  # purchases in (0, T] had the customer never dropped out
    fatal = rng.geometric(p)  # the repeat purchase after which the customer drops out
    x = np.minimum(events, fatal)
    # The x-th of `events` uniform purchase times on (0, T].
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), np.maximum(events - x + 1, 1)), 0.0)
    return _floor_to_days(x, t_x, T_days, days_per_unit)


def pareto_nbd_summary(
    rng: np.random.Generator,
    T_days: np.ndarray,
    r: float,
    alpha: float,
    s: float,
    beta: float,
    days_per_unit: float = 7.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = T_days.size
    T = T_days / days_per_unit
    lam = rng.gamma(r, 1 / alpha, n)
    mu = rng.gamma(s, 1 / beta, n)
    observed = np.minimum(rng.exponential(1 / mu), T)
    x = rng.poisson(lam * observed)
    t_x = np.where(x > 0, observed * rng.beta(np.maximum(x, 1), 1), 0.0)
    return _floor_to_days(x, t_x, T_days, days_per_unit)


def gamma_gamma_spend(
    rng: np.random.Generator, x: np.ndarray, p: float, q: float, gamma: float
) -> np.ndarray:
    """The mean value of each customer's x repeat purchases (NaN where x = 0)."""
    nu = rng.gamma(q, 1 / gamma, x.size)
    shape = np.maximum(p * x, 1e-12)
    mean = rng.gamma(shape, 1 / (nu * np.maximum(x, 1)))
    return np.where(x > 0, mean, np.nan)
