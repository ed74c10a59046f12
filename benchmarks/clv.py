"""BG/NBD plus Gamma-Gamma on a million customers: our fit against lifetimes, on the same
summary, in the same run.

The summary is drawn from the published CDNOW estimates (shared/data/cdnow/README.md) for
customers of ages up to 78 weeks in whole days, so it looks like one built from order
dates. Our time includes compressing the summary; lifetimes gets the same arrays. The
target: ours under 5 s, at least 10x faster, the same parameters to 1e-3 relative.

    python -m benchmarks.clv [--customers 1000000] [--repeats 3] [--no-lifetimes]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np

from retention_pipeline.lib.clv import simulate
from retention_pipeline.lib.clv.models import BgNbd, GammaGamma, ParetoNbd, summary_rows

BG_NBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}
MAX_AGE_DAYS = 546  # 78 weeks


def make_summary(customers: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    ages = rng.integers(1, MAX_AGE_DAYS + 1, customers).astype(np.float64)
    x, t_x, T = simulate.bg_nbd_summary(rng, ages, **BG_NBD)
    z = simulate.gamma_gamma_spend(rng, x, **GAMMA_GAMMA)
    return x, t_x, T, z


def fit_ours(x, t_x, T, z):
    bg, bg_fit = BgNbd.fit(summary_rows(x, t_x, T))
    gg, gg_fit = GammaGamma.fit(x, z)
    assert bg_fit.ok and gg_fit.ok, (bg_fit.describe(), gg_fit.describe())
    return {**bg_fit.params, **{f"gg_{k}": v for k, v in gg_fit.params.items()}}


def fit_lifetimes(x, t_x, T, z):
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    bg = BetaGeoFitter().fit(pd.Series(x), pd.Series(t_x), pd.Series(T))
    repeat = x > 0
    gg = GammaGammaFitter().fit(pd.Series(x[repeat]), pd.Series(z[repeat]))
    params = {k: float(v) for k, v in bg.params_.items()}
    gg_params = dict(zip(("p", "q", "gamma"), (float(v) for v in gg.params_.values), strict=True))
    return {**params, **{f"gg_{k}": v for k, v in gg_params.items()}}


def timed(function, *args, repeats: int = 1):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-lifetimes", action="store_true", help="time our fit alone")
    parser.add_argument(
        "--pareto", type=int, default=0, metavar="N", help="also time Pareto/NBD on N customers"
    )
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load:.1f} at start"
    )
    x, t_x, T, z = make_summary(args.customers)
    distinct = summary_rows(x, t_x, T).weight.size
    print(
        f"summary: {args.customers:,} customers ({distinct:,} distinct (x, t_x, T)), "
        f"{int((x > 0).sum()):,} repeat buyers"
    )
    ours_time, ours = timed(fit_ours, x, t_x, T, z, repeats=args.repeats)
    print(f"ours (BG/NBD + Gamma-Gamma), median of {args.repeats}: {ours_time:.2f} s")
    print("| parameter | ours | lifetimes | relative difference |")
    print("|---|---|---|---|")
    if args.no_lifetimes:
        for name, value in ours.items():
            print(f"| {name} | {value:.6g} | | |")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs_time, theirs = timed(fit_lifetimes, x, t_x, T, z)
        worst = 0.0
        for name, value in ours.items():
            difference = abs(value - theirs[name]) / abs(theirs[name])
            worst = max(worst, difference)
            print(f"| {name} | {value:.6g} | {theirs[name]:.6g} | {difference:.1e} |")
        print(f"lifetimes 0.11.3 (BetaGeoFitter + GammaGammaFitter): {theirs_time:.1f} s")
        print(
            f"speed-up: {theirs_time / ours_time:.1f}x; largest relative parameter "
            f"difference {worst:.1e}; ours under 5 s: {'yes' if ours_time < 5 else 'no'}"
        )
    if args.pareto:
        rng = np.random.default_rng(8)
        ages = rng.integers(1, MAX_AGE_DAYS + 1, args.pareto).astype(np.float64)
        px, pt, pT = simulate.pareto_nbd_summary(rng, ages, 0.553, 10.578, 0.606, 11.669)
        seconds, (_, result) = timed(lambda: ParetoNbd.fit(summary_rows(px, pt, pT)))
        print(f"ours Pareto/NBD on {args.pareto:,} customers: {seconds:.1f} s")
        print(result.describe())


if __name__ == "__main__":
    main()
