"""The buy-till-you-die models: BG/NBD and Pareto/NBD for purchase counts, Gamma-Gamma for
spend. Each has a vectorised log-likelihood in log space, a fit by maximum likelihood, and
the predictions the pipeline publishes.

Notation (Fader, Hardie & Lee 2005): for a customer first seen at time 0, x is the number of
repeat purchases, t_x the time of the last one (0 without any) and T the time from the first
purchase to the end of calibration, all in the summary's time unit (days or weeks).

Stability: every likelihood is a sum of logs; the two-term mixtures use logaddexp; the
Gauss hypergeometric functions are evaluated after the Euler or Pfaff transformation that
leaves them bounded, so that no factor overflows for customers with many purchases.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import digamma, gammaln, hyp2f1

from retention_pipeline.lib.clv.mle import FitResult, Rows, compress, fit_warm

# (a − 1) appears as a divisor in the BG/NBD expectations; a fitted a this close to 1 is
# moved off it by this much (the expectations are continuous in a).
_A_NUDGE = 1e-7


def _prepare(rows: Rows) -> Rows:
    """The distinct purchase counts, once per fit: the special functions of x are
    evaluated per distinct x."""
    if "x_levels" not in rows.cache:
        levels, index = np.unique(rows["x"], return_inverse=True)
        rows.cache["x_levels"] = levels
        rows.cache["x_index"] = index
        rows.cache["x_weight"] = np.bincount(index, weights=rows.weight, minlength=levels.size)
    return rows


def summary_rows(x, t_x, T) -> Rows:
    """The (x, t_x, T) summary compressed to distinct rows."""
    return compress(x=np.asarray(x), t_x=np.asarray(t_x), T=np.asarray(T))


def rows_of_summary(summary) -> Rows:
    """`summary_rows` of a customer summary frame (OrderHistory.summary's columns)."""
    return summary_rows(summary["frequency"], summary["recency"], summary["age"])


def _relative_decay(k: float | np.ndarray, log_ratio: np.ndarray) -> np.ndarray:
    """(1 − exp(−k·L)) / k, and its limit L at k = 0."""
    k = np.asarray(k, dtype=np.float64)
    safe = np.where(np.abs(k) < 1e-12, 1.0, k)
    return np.where(np.abs(k) < 1e-12, log_ratio, -np.expm1(-k * log_ratio) / safe)


class _Model:
    """What the three models share: their parameters by name."""

    @property
    def params(self) -> dict[str, float]:
        return asdict(self)


# ------------------------------------------------------------------------------------------
# BG/NBD
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BgNbd(_Model):
    """Beta-geometric/NBD (Fader, Hardie & Lee 2005): purchases at Poisson rate λ ~
    Gamma(r, α) while alive; after each repeat purchase the customer drops out with
    probability p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    name = "bg_nbd"
    parameter_names = ("r", "alpha", "a", "b")

    def _a(self) -> float:
        return self.a + _A_NUDGE if abs(self.a - 1) < _A_NUDGE else self.a

    def p_alive(self, x, t_x, T) -> np.ndarray:
        x, t_x, T = _arrays(x, t_x, T)
        log_odds = np.where(
            x > 0,
            math.log(self.a)
            - np.log(np.where(x > 0, self.b + x - 1, 1.0))
            + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x)),
            -np.inf,
        )
        return np.exp(-np.logaddexp(0.0, log_odds))

    def expected_purchases(self, t, x, t_x, T) -> np.ndarray:
        """E[purchases in (T, T + t] | x, t_x, T]."""
        return self.expected_purchases_if_alive(t, x, T) * self.p_alive(x, t_x, T)

    def expected_purchases_if_alive(self, t, x, T) -> np.ndarray:
        """E[purchases in (T, T + t] | x, T, alive at T] (t_x does not enter)."""
        x, T = _arrays(x, T)
        a, b, r = self._a(), self.b, self.r
        t = np.asarray(t, dtype=np.float64)
        z = t / (self.alpha + T + t)
        c = a + b + x - 1
        # ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; c; z), Euler-transformed: bounded for any x.
        with np.errstate(invalid="ignore", over="ignore"):
            tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, c, z)
        return c / (a - 1) * (1 - tail)

    def expected_purchases_new(self, t) -> np.ndarray:
        """E[repeat purchases in (0, t]] of a customer who made a first purchase at 0."""
        a, b, r = self._a(), self.b, self.r
        t = np.asarray(t, dtype=np.float64)
        z = t / (self.alpha + t)
        tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b - 1, z)
        return (a + b - 1) / (a - 1) * (1 - tail)

    def p_alive_after(self, t, x, t_x, T) -> np.ndarray:
        """P(alive at T + t | x, t_x, T)."""
        return self.p_alive(x, t_x, T) * self.survival(t, x, T)

    def survival(self, t, x, T) -> np.ndarray:
        """P(alive at T + t | alive at T, x, T): no drop-out after the purchases of the next
        t, E[exp(−λ p t)] under the posterior Gamma(r + x, α + T) × Beta(a, b + x) =
        2F1(r + x, a; a + b + x; −t/(α + T)), Pfaff-transformed."""
        x, T = _arrays(x, T)
        u = np.asarray(t, dtype=np.float64) / (self.alpha + T)
        a, b, r = self.a, self.b, self.r
        return (1 + u) ** (-a) * hyp2f1(a, a + b - r, a + b + x, u / (1 + u))

    def p_alive_new(self, t) -> np.ndarray:
        u = np.asarray(t, dtype=np.float64) / self.alpha
        a, b, r = self.a, self.b, self.r
        return (1 + u) ** (-a) * hyp2f1(a, a + b - r, a + b, u / (1 + u))

    @staticmethod
    def prepare(rows: Rows) -> Rows:
        """Sums that do not change during the fit: customers per distinct x and per distinct
        T (and their purchases), and the repeat buyers' rows as indices into the distinct
        values of T and t_x, so that each evaluation takes logs of a few hundred ages."""
        cache = _prepare(rows).cache
        if "T_levels" in cache:
            return rows
        x, t_x, T, weight = rows["x"], rows["t_x"], rows["T"], rows.weight
        T_levels, T_index = np.unique(T, return_inverse=True)
        repeat = x > 0
        tx_levels, tx_index = np.unique(t_x[repeat], return_inverse=True)
        cache.update(
            customers=float(weight.sum()),
            T_levels=T_levels,
            T_weight=np.bincount(T_index, weights=weight, minlength=T_levels.size),
            T_purchases=np.bincount(T_index, weights=weight * x, minlength=T_levels.size),
            tx_levels=tx_levels,
            rep_T=T_index[repeat],
            rep_tx=tx_index,
            rep_x_index=cache["x_index"][repeat],
            rep_x=x[repeat],
            rep_weight=weight[repeat],
        )
        return rows

    @staticmethod
    def loglik(params: np.ndarray, rows: Rows) -> tuple[float, np.ndarray]:
        """Σ weight × log L(r, α, a, b | x, t_x, T) and its gradient (Fader, Hardie & Lee
        2005, eq. 6): log L = A(x) + r log α − (r + x) log(α + T) + softplus(d), where
        softplus(d) = log(1 + e^d) adds the chance of having dropped out after t_x,
        d = log(a / (b + x − 1)) + (r + x) log((α + T) / (α + t_x)) for x > 0."""
        r, alpha, a, b = params
        c = rows.cache
        levels, n_x, customers = c["x_levels"], c["x_weight"], c["customers"]
        t_weight, t_purchases = c["T_weight"], c["T_purchases"]
        by_x = (
            gammaln(r + levels)
            - gammaln(r)
            + gammaln(b + levels)
            + gammaln(a + b)
            - gammaln(b)
            - gammaln(a + b + levels)
        )
        log_alpha = np.log(alpha)
        log_T = np.log(alpha + c["T_levels"])
        log_tx = np.log(alpha + c["tx_levels"])
        has_repeat = levels > 0
        b_x1 = np.where(has_repeat, b + levels - 1, 1.0)
        odds_x = np.where(has_repeat, np.log(a) - np.log(b_x1), 0.0)
        rep_T, rep_tx, rep_x = c["rep_T"], c["rep_tx"], c["rep_x"]
        span = log_T[rep_T] - log_tx[rep_tx]
        d = odds_x[c["rep_x_index"]] + (r + rep_x) * span
        softplus = np.logaddexp(0.0, d)
        total = (
            customers * r * log_alpha
            + n_x @ by_x
            - log_T @ (r * t_weight + t_purchases)
            + c["rep_weight"] @ softplus
        )
        dropped = c["rep_weight"] * np.exp(d - softplus)  # weight × P(dropped out | data)
        dropped_by_x = np.bincount(c["rep_x_index"], weights=dropped, minlength=levels.size)
        inv_T = 1 / (alpha + c["T_levels"])
        inv_tx = 1 / (alpha + c["tx_levels"])
        psi_ab, psi_abx = digamma(a + b), digamma(a + b + levels)
        gradient = np.array(
            [
                customers * log_alpha
                + n_x @ (digamma(r + levels) - digamma(r))
                - log_T @ t_weight
                + dropped @ span,
                customers * r / alpha
                - inv_T @ (r * t_weight + t_purchases)
                + dropped @ ((r + rep_x) * (inv_T[rep_T] - inv_tx[rep_tx])),
                n_x @ (psi_ab - psi_abx) + dropped.sum() / a,
                n_x @ (digamma(b + levels) + psi_ab - digamma(b) - psi_abx)
                - dropped_by_x @ np.where(has_repeat, 1 / b_x1, 0.0),
            ]
        )
        return float(total), gradient

    @classmethod
    def fit(cls, rows: Rows) -> tuple[BgNbd | None, FitResult]:
        start = (1.0, _mean_age(rows), 1.0, 1.0)
        result = fit_warm(cls.name, cls.parameter_names, cls.loglik, rows, start, cls.prepare)
        return _model_or_none(cls, result), result


# ------------------------------------------------------------------------------------------
# Pareto/NBD
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParetoNbd(_Model):
    """Pareto/NBD (Schmittlein, Morrison & Colombo 1987): purchases at Poisson rate λ ~
    Gamma(r, α) while alive; an exponential lifetime with rate μ ~ Gamma(s, β)."""

    r: float
    alpha: float
    s: float
    beta: float

    name = "pareto_nbd"
    parameter_names = ("r", "alpha", "s", "beta")

    @staticmethod
    def _log_terms(params, x, t_x, T) -> tuple[np.ndarray, np.ndarray]:
        """log of the two terms of the likelihood bracket (Fader & Hardie 2005, "A note on
        deriving the Pareto/NBD model"): alive at T, and dropped out in (t_x, T]; without the
        common factor Γ(r+x) α^r β^s / Γ(r)."""
        r, alpha, s, beta = params
        q = r + s + x
        alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        # A0 = F(z(t_x)) / (M + t_x)^q − F(z(T)) / (M + T)^q with M = max(α, β),
        # z(t) = |α − β| / (M + t) and F = 2F1(q, b; q + 1; z), b = s + 1 when α ≥ β, else
        # r + x. F grows like (1 − z)^(1 − b): Euler's transformation F = (1 − z)^(1 − b) ·
        # 2F1(1, q + 1 − b; q + 1; z) leaves a factor between 1 and 1 / (1 − z), taken in logs.
        if alpha >= beta:
            big, small, power, inner_b = alpha, beta, -s, r + x
        else:
            big, small, power, inner_b = beta, alpha, 1 - r - x, s + 1.0

        def log_part(t: np.ndarray) -> np.ndarray:
            z = (big - small) / (big + t)
            log_1mz = np.log(small + t) - np.log(big + t)
            return power * log_1mz + np.log(hyp2f1(1.0, inner_b, q + 1, z)) - q * np.log(big + t)

        upper, lower = log_part(t_x), log_part(T)
        gap = lower - upper
        log_a0 = np.where(gap < 0, upper + np.log(-np.expm1(np.minimum(gap, -1e-300))), -np.inf)
        dropped = np.log(s) - np.log(q) + log_a0
        return alive, dropped

    def p_alive(self, x, t_x, T) -> np.ndarray:
        x, t_x, T = _arrays(x, t_x, T)
        alive, dropped = self._log_terms(self.astuple(), x, t_x, T)
        return np.exp(alive - np.logaddexp(alive, dropped))

    def astuple(self) -> tuple[float, float, float, float]:
        return (self.r, self.alpha, self.s, self.beta)

    def expected_purchases(self, t, x, t_x, T) -> np.ndarray:
        """E[purchases in (T, T + t] | x, t_x, T]."""
        return self.expected_purchases_if_alive(t, x, T) * self.p_alive(x, t_x, T)

    def expected_purchases_if_alive(self, t, x, T) -> np.ndarray:
        """E[purchases in (T, T + t] | x, T, alive at T] (t_x does not enter)."""
        x, T = _arrays(x, T)
        t = np.asarray(t, dtype=np.float64)
        rate = (self.r + x) / (self.alpha + T)  # posterior mean of λ
        # E[min(t, lifetime left)] under the posterior Gamma(s, β + T) of μ.
        exposure = (self.beta + T) * _relative_decay(
            self.s - 1, np.log((self.beta + T + t) / (self.beta + T))
        )
        return rate * exposure

    def expected_purchases_new(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        exposure = self.beta * _relative_decay(self.s - 1, np.log((self.beta + t) / self.beta))
        return self.r / self.alpha * exposure

    def p_alive_after(self, t, x, t_x, T) -> np.ndarray:
        return self.p_alive(x, t_x, T) * self.survival(t, x, T)

    def survival(self, t, x, T) -> np.ndarray:
        """P(alive at T + t | alive at T): under the posterior Gamma(s, β + T) of μ (x
        does not enter)."""
        T, t = _arrays(T, t)
        return ((self.beta + T) / (self.beta + T + t)) ** self.s

    def p_alive_new(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return (self.beta / (self.beta + t)) ** self.s

    @classmethod
    def loglik(cls, params: np.ndarray, rows: Rows) -> tuple[float, None]:
        r, alpha, s, beta = params
        c = rows.cache
        by_x = gammaln(r + c["x_levels"]) - gammaln(r)
        alive, dropped = cls._log_terms(params, rows["x"], rows["t_x"], rows["T"])
        total = (
            c["x_weight"] @ by_x
            + rows.customers * (r * np.log(alpha) + s * np.log(beta))
            + rows.weight @ np.logaddexp(alive, dropped)
        )
        # SciPy has no derivative of 2F1 in its parameters: the fit differentiates numerically.
        return float(total), None

    @classmethod
    def fit(cls, rows: Rows) -> tuple[ParetoNbd | None, FitResult]:
        start = (1.0, _mean_age(rows), 1.0, _mean_age(rows))
        result = fit_warm(cls.name, cls.parameter_names, cls.loglik, rows, start, _prepare)
        return _model_or_none(cls, result), result


# ------------------------------------------------------------------------------------------
# Gamma-Gamma
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGamma(_Model):
    """Gamma-Gamma spend model (Fader, Hardie & Lee 2005; Fader & Hardie 2013): each
    purchase's value ~ Gamma(p, ν) around a customer mean, ν ~ Gamma(q, γ) across customers,
    independent of the purchase process. Fitted on the repeat buyers' mean repeat spend."""

    p: float
    q: float
    gamma: float

    name = "gamma_gamma"
    parameter_names = ("p", "q", "gamma")

    @property
    def mean_spend(self) -> float:
        """Expected spend per purchase of a customer without repeat purchases."""
        return self.p * self.gamma / (self.q - 1)

    def expected_spend(self, x, mean_spend) -> np.ndarray:
        """E[spend per purchase | x repeat purchases with mean value z̄]: the population mean
        shrunk towards the customer's own mean as x grows."""
        x = np.asarray(x, dtype=np.float64)
        z = np.where(x > 0, np.nan_to_num(np.asarray(mean_spend, dtype=np.float64)), 0.0)
        return self.p * (self.gamma + x * z) / (self.p * x + self.q - 1)

    @staticmethod
    def prepare(rows: Rows) -> Rows:
        cache = _prepare(rows).cache
        if "log_z" not in cache:
            x, z, weight = rows["x"], rows["z"], rows.weight
            levels = cache["x_levels"]
            log_z = np.log(z)
            cache.update(
                customers=float(weight.sum()),
                log_z=log_z,
                sum_x_log_z=float(weight @ (x * log_z)),
                sum_log_z=float(weight @ log_z),
                x_log_x=levels * np.log(levels),
            )
        return rows

    @staticmethod
    def loglik(params: np.ndarray, rows: Rows) -> tuple[float, np.ndarray]:
        """Σ weight × log density of the mean z̄ of x purchases (Fader & Hardie 2013, eq. 5):
        log Γ(px + q) − log Γ(px) − log Γ(q) + q log γ + (px − 1) log z̄ + px log x
        − (px + q) log(γ + x z̄)."""
        p, q, gamma = params
        c = rows.cache
        x, z, weight = rows["x"], rows["z"], rows.weight
        levels, n_x, customers = c["x_levels"], c["x_weight"], c["customers"]
        px = p * levels
        log_g = np.log(gamma + x * z)
        inv_g = weight / (gamma + x * z)
        wx_log_g = (weight * x) @ log_g
        w_log_g = weight @ log_g
        total = (
            n_x @ (gammaln(px + q) - gammaln(px) + p * c["x_log_x"])
            - customers * (gammaln(q) - q * np.log(gamma))
            + p * c["sum_x_log_z"]
            - c["sum_log_z"]
            - p * wx_log_g
            - q * w_log_g
        )
        psi_pxq = digamma(px + q)
        gradient = np.array(
            [
                n_x @ (levels * (psi_pxq - digamma(px)) + c["x_log_x"])
                + c["sum_x_log_z"]
                - wx_log_g,
                n_x @ psi_pxq - customers * (digamma(q) - np.log(gamma)) - w_log_g,
                customers * q / gamma - p * (x @ inv_g) - q * inv_g.sum(),
            ]
        )
        return float(total), gradient

    @classmethod
    def fit(cls, x, mean_spend) -> tuple[GammaGamma | None, FitResult]:
        """Fits on the customers with x > 0 and a positive mean repeat spend."""
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(mean_spend, dtype=np.float64)
        keep = (x > 0) & np.isfinite(z) & (z > 0)
        # Mean spends are continuous: no two rows to merge, so no compression.
        rows = Rows({"x": x[keep], "z": z[keep]}, np.ones(int(keep.sum())), np.arange(keep.sum()))
        scale = float(np.mean(z[keep])) if keep.any() else 1.0
        result = fit_warm(
            cls.name,
            cls.parameter_names,
            cls.loglik,
            rows,
            (1.0, 2.0, scale),
            cls.prepare,
            extra_checks=_finite_mean_spend,
        )
        return _model_or_none(cls, result), result


def _finite_mean_spend(params: dict[str, float]) -> list[str]:
    if params["q"] <= 1:
        return [f"q = {params['q']:.3g} ≤ 1: the expected spend per purchase is infinite"]
    return []


COUNT_MODELS = {BgNbd.name: BgNbd, ParetoNbd.name: ParetoNbd}


def _model_or_none(cls, result: FitResult):
    return cls(**result.params) if result.ok else None


def _mean_age(rows: Rows) -> float:
    """A starting scale for α and β, in the summary's time unit."""
    return max(float(np.average(rows["T"], weights=rows.weight)), 1.0)


def _arrays(*values) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(value, dtype=np.float64) for value in values)
