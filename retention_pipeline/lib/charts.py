"""Pictures of the warehouse for people: the cohort retention heatmap."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from retention_pipeline.lib.warehouse import connect  # noqa: E402


def cohort_heatmap(warehouse: Path, out: Path, cohorts: int = 24, periods: int = 12) -> Path:
    """Monthly cohorts (rows) by months since the first order (columns), as a PNG."""
    with connect(warehouse, read_only=True) as con:
        cells = con.sql(
            """
            with recent as (
                select distinct cohort_start from main.cohort_retention
                where grain = 'month' order by cohort_start desc limit $cohorts
            )
            select cohort_start, period_number, retention_rate, cohort_customers, is_complete
            from main.cohort_retention
            where grain = 'month' and period_number <= $periods
                and cohort_start in (select cohort_start from recent)
            order by cohort_start, period_number
            """,
            params={"cohorts": cohorts, "periods": periods},
        ).to_arrow_table()
    cells = pl.from_arrow(cells)
    starts = sorted(set(cells["cohort_start"].to_list()))
    grid = np.full((len(starts), periods + 1), np.nan)
    sizes = {}
    for start, k, rate, size, complete in cells.iter_rows():
        # Incomplete months stay blank: a half month is not a drop in retention.
        if complete and k > 0:
            grid[starts.index(start), k] = rate
        grid[starts.index(start), 0] = 1.0
        sizes[start] = size
    figure, axes = plt.subplots(figsize=(12, 0.36 * len(starts) + 1.6))
    image = axes.imshow(grid[:, 1:], cmap="YlGnBu", aspect="auto", vmin=0)
    for row, col in zip(*np.where(~np.isnan(grid[:, 1:])), strict=True):
        value = grid[row, col + 1]
        axes.text(
            col,
            row,
            f"{value:.0%}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if value > np.nanmax(grid[:, 1:]) * 0.6 else "black",
        )
    axes.set_xticks(range(periods), [str(k) for k in range(1, periods + 1)])
    axes.set_yticks(range(len(starts)), [f"{s:%Y-%m}  ({sizes[s]:,})" for s in starts], fontsize=8)
    axes.set_xlabel("months since first order")
    axes.set_ylabel("cohort (customers)")
    axes.set_title("Share of each monthly cohort buying again, by month since the first order")
    figure.colorbar(image, ax=axes, format=matplotlib.ticker.PercentFormatter(1.0))
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
