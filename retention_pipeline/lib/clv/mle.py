"""Maximum likelihood for the CLV models: the data compressed to distinct rows with weights,
log-parameters, L-BFGS-B on the mean negative log-likelihood, and the verdict on a fit.

A model supplies `loglik(params, rows) -> (weighted total log-likelihood, its gradient in the
natural parameters, or None)`; this module turns it into a minimisation over
log-parameters, so every parameter stays positive without bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy.optimize import minimize

# The objective's value where the likelihood cannot be evaluated.
_WALL = 1e10
# Parameters outside these ranges mean the optimiser ran off towards a boundary: the data do
# not identify the model (too few customers or repeat buyers, or a degenerate history).
# Shapes (r, a, b, s, p, q) are pure numbers; scales (alpha, beta in time units, gamma in
# money) depend on the units, so their range is wider.
SHAPE_RANGE = (1e-4, 1e4)
SCALE_RANGE = (1e-6, 1e9)
SCALE_PARAMETERS = frozenset({"alpha", "beta", "gamma"})
# The mean gradient (in log-parameters) of a converged fit is below this.
GRADIENT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Rows:
    """Distinct data rows (columns of equal length) with how many customers share each.
    `cache` holds what a model derives from the rows once, before the fit."""

    columns: dict[str, np.ndarray]
    weight: np.ndarray
    inverse: np.ndarray  # for each original row, the index of its distinct row
    cache: dict = field(default_factory=dict)

    @property
    def customers(self) -> int:
        return int(self.weight.sum())

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def subsample(self, size: int, seed: int = 0) -> Rows:
        """The rows of `size` customers drawn at random without replacement."""
        rng = np.random.default_rng(seed)
        chosen = rng.choice(self.inverse.size, size=size, replace=False)
        weight = np.bincount(self.inverse[chosen], minlength=self.weight.size).astype(np.float64)
        keep = weight > 0
        remap = np.cumsum(keep) - 1
        columns = {name: values[keep] for name, values in self.columns.items()}
        return Rows(columns, weight[keep], remap[self.inverse[chosen]])


def compress(**columns: np.ndarray) -> Rows:
    """Groups identical rows: customers with the same (x, t_x, T) share one likelihood term,
    which in whole days or weeks shrinks a million customers to a few hundred thousand rows
    or fewer. A hash group-by (Polars), not a sort."""
    names = list(columns)
    frame = pl.DataFrame({name: np.asarray(v, dtype=np.float64) for name, v in columns.items()})
    n = frame.height
    if n == 0:
        empty = {name: np.empty(0) for name in names}
        return Rows(empty, np.empty(0), np.empty(0, dtype=np.int64))
    # Sorted, so that the same customers give the same rows in the same order every time:
    # sums, and so the fit, repeat to the last bit.
    groups = frame.with_row_index("_row").group_by(names).agg(pl.col("_row")).sort(names)
    counts = groups["_row"].list.len().to_numpy()
    inverse = np.empty(n, dtype=np.int64)
    inverse[groups["_row"].explode().to_numpy()] = np.repeat(np.arange(groups.height), counts)
    distinct = {name: groups[name].to_numpy() for name in names}
    return Rows(distinct, counts.astype(np.float64), inverse)


@dataclass(frozen=True)
class FitResult:
    """One fitted model: its parameters and whether they can be trusted."""

    model: str
    params: dict[str, float]
    log_likelihood: float
    n_customers: int
    converged: bool
    iterations: int
    message: str
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.converged and not self.problems

    def describe(self) -> str:
        values = ", ".join(f"{k} = {v:.6g}" for k, v in self.params.items())
        verdict = "ok" if self.ok else "REJECTED: " + "; ".join(self.problems_and_convergence)
        return (
            f"{self.model} on {self.n_customers:,} customers: {values}; log-likelihood "
            f"{self.log_likelihood:.4f}; {verdict}"
        )

    @property
    def problems_and_convergence(self) -> list[str]:
        issues = [] if self.converged else [f"did not converge ({self.message})"]
        return issues + list(self.problems)


LogLik = Callable[[np.ndarray, Rows], tuple[float, np.ndarray | None]]


def fit(
    model: str,
    names: Sequence[str],
    loglik: LogLik,
    rows: Rows,
    start: Sequence[float],
    extra_checks: Callable[[dict[str, float]], list[str]] | None = None,
    max_iterations: int = 1000,
    scaling: np.ndarray | None = None,
) -> FitResult:
    """Maximises the weighted log-likelihood over log-parameters with L-BFGS-B.

    With an analytic gradient from `loglik`, one evaluation gives value and gradient; without
    one (None), the gradient is a central difference in each log-parameter. `scaling` (a
    matrix S) makes the search run over u with θ = θ0 + S u: with S from the Hessian's
    Cholesky factor the problem looks like a unit bowl and converges in a few steps.
    """
    n = rows.customers
    if n == 0:
        nan = dict.fromkeys(names, math.nan)
        return FitResult(model, nan, math.nan, 0, False, 0, "no customers to fit")

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(theta)
        total, gradient = loglik(params, rows)
        if not np.isfinite(total) or not np.all(np.isfinite(params)) or np.any(params == 0):
            # A step far out (a parameter under- or overflowed): a steep wall that the line
            # search backs off from, sloping back towards the start.
            return _WALL + float(theta @ theta), 2 * theta
        if gradient is None:
            return -total / n, -_central_difference(theta, loglik, rows) / n
        # d/dθ = d/dparam × param (θ = log param).
        return -total / n, -np.asarray(gradient) * params / n

    theta0 = np.log(np.asarray(start, dtype=np.float64))
    S = np.eye(theta0.size) if scaling is None else scaling

    def scaled(u: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = objective(theta0 + S @ u)
        return value, S.T @ gradient

    with np.errstate(all="ignore"):
        result = minimize(
            scaled,
            np.zeros(theta0.size),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-8, "maxcor": 20},
        )
        theta = theta0 + S @ result.x
        value, gradient = objective(theta)
    params = {name: float(v) for name, v in zip(names, np.exp(theta), strict=True)}
    log_likelihood = -value * n
    gradient_norm = float(np.max(np.abs(gradient))) if np.all(np.isfinite(gradient)) else math.inf
    # L-BFGS-B also stops when it cannot improve further (ABNORMAL); at a true optimum
    # the gradient is still ~0, so the gradient is the test, not the message.
    converged = bool(np.isfinite(log_likelihood) and gradient_norm < GRADIENT_TOLERANCE)
    message = str(result.message)
    if not converged:
        message = f"{message}; largest gradient {gradient_norm:.2g} after {result.nit} iterations"
    problems = implausible(params)
    if extra_checks is not None and not problems:
        problems += extra_checks(params)
    return FitResult(
        model, params, log_likelihood, n, converged, int(result.nit), message, tuple(problems)
    )


# Above this many customers a fit starts from the optimum of a random subsample: the full
# data then need only a few evaluations.
WARM_START_CUSTOMERS = 200_000
SUBSAMPLE_CUSTOMERS = 50_000


def fit_warm(
    model: str,
    names: Sequence[str],
    loglik: LogLik,
    rows: Rows,
    start: Sequence[float],
    prepare: Callable[[Rows], Rows],
    extra_checks: Callable[[dict[str, float]], list[str]] | None = None,
) -> FitResult:
    """`fit`, from a subsample's optimum when there are many customers, scaled by the
    subsample's Hessian there (the full data's is close to it)."""
    scaling = None
    if rows.customers > WARM_START_CUSTOMERS:
        sample = prepare(rows.subsample(SUBSAMPLE_CUSTOMERS))
        first = fit(model, names, loglik, sample, start)
        if first.converged and not implausible(first.params):
            start = [first.params[name] for name in names]
            scaling = _inverse_cholesky(_hessian(np.log(start), loglik, sample))
    return fit(model, names, loglik, prepare(rows), start, extra_checks, scaling=scaling)


def _hessian(theta: np.ndarray, loglik: LogLik, rows: Rows) -> np.ndarray | None:
    """The Hessian of the mean negative log-likelihood in log-parameters, by central
    differences of the analytic gradient; None without one."""
    n = rows.customers

    def gradient(t: np.ndarray) -> np.ndarray | None:
        params = np.exp(t)
        g = loglik(params, rows)[1]
        return None if g is None else -np.asarray(g) * params / n

    if gradient(theta) is None:
        return None
    k = theta.size
    hessian = np.empty((k, k))
    for j in range(k):
        step = 1e-5
        up, down = theta.copy(), theta.copy()
        up[j] += step
        down[j] -= step
        hessian[:, j] = (gradient(up) - gradient(down)) / (2 * step)
    return (hessian + hessian.T) / 2


def _inverse_cholesky(hessian: np.ndarray | None) -> np.ndarray | None:
    """S with Sᵀ H S = I, or None when H is not positive definite."""
    if hessian is None or not np.all(np.isfinite(hessian)):
        return None
    try:
        lower = np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return None
    return np.linalg.inv(lower).T


def implausible(params: dict[str, float]) -> list[str]:
    problems = []
    for name, value in params.items():
        low, high = SCALE_RANGE if name in SCALE_PARAMETERS else SHAPE_RANGE
        if not math.isfinite(value):
            problems.append(f"{name} is not a finite number")
        elif not low <= value <= high:
            problems.append(
                f"{name} = {value:.3g} is outside [{low:g}, {high:g}]: the data do not pin it down"
            )
    return problems


def _central_difference(theta: np.ndarray, loglik: LogLik, rows: Rows) -> np.ndarray:
    gradient = np.empty_like(theta)
    for i in range(theta.size):
        step = 1e-6 * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        high = loglik(np.exp(up), rows)[0]
        low = loglik(np.exp(down), rows)[0]
        gradient[i] = (high - low) / (2 * step)
    return gradient
