"""Pictures of the warehouse for people, as PNG files: the cohort retention heatmap, CRR and
churn by month, LTV curves by cohort and segment sizes. Each reads the marts BI reads."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter, StrMethodFormatter  # noqa: E402
from PIL import Image  # noqa: E402

from retention_pipeline.lib.warehouse import connect  # noqa: E402

# Every chart but the heatmap (whose height follows its cohorts) is this size in pixels.
DPI = 110
LINE_FIGSIZE = (10, 4.6)
HEATMAP_WIDTH = 12

# The spec's RFM segments, best first, and the value tiers from the top down.
RFM_SEGMENTS = (
    "champions", "loyal", "potential_loyalists", "new", "promising", "need_attention",
    "about_to_sleep", "at_risk", "cant_lose", "hibernating",
)  # fmt: skip
TIERS = ("vip", "pre_vip", "standard")
TIER_COLORS = {"vip": "#08306b", "pre_vip": "#2b7bba", "standard": "#9ecae1"}


def _query(warehouse: Path, sql: str, params: dict | None = None) -> pl.DataFrame:
    with connect(warehouse, read_only=True) as con:
        return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())


def _save(figure: plt.Figure, out: Path) -> Path:
    """The figure as a 256-colour PNG: a third of the full-colour size, which matters for
    images carried in the HTML report and in every run's Dagster metadata."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, format="png")
    plt.close(figure)
    image = Image.open(buffer).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG", optimize=True)
    return out


def _no_data(axes: plt.Axes, what: str) -> None:
    axes.text(0.5, 0.5, what, ha="center", va="center", transform=axes.transAxes, color="0.4")
    axes.set_xticks([])
    axes.set_yticks([])


def cohort_heatmap(warehouse: Path, out: Path, cohorts: int = 24, periods: int = 12) -> Path:
    """Monthly cohorts (rows) by months since the first order (columns), as a PNG."""
    cells = _query(
        warehouse,
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
        {"cohorts": cohorts, "periods": periods},
    )
    starts = sorted(set(cells["cohort_start"].to_list()))
    grid = np.full((len(starts), periods + 1), np.nan)
    sizes = {}
    for start, k, rate, size, complete in cells.iter_rows():
        # Incomplete months stay blank: a half month is not a drop in retention.
        if complete and k > 0:
            grid[starts.index(start), k] = rate
        grid[starts.index(start), 0] = 1.0
        sizes[start] = size
    figure, axes = plt.subplots(figsize=(HEATMAP_WIDTH, 0.36 * len(starts) + 1.6))
    if not starts:
        _no_data(axes, "no monthly cohorts yet")
        return _save(figure, out)
    image = axes.imshow(grid[:, 1:], cmap="YlGnBu", aspect="auto", vmin=0)
    shown = grid[:, 1:]
    top = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
    for row, col in zip(*np.where(~np.isnan(shown)), strict=True):
        value = grid[row, col + 1]
        axes.text(
            col,
            row,
            f"{value:.0%}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if value > top * 0.6 else "black",
        )
    axes.set_xticks(range(periods), [str(k) for k in range(1, periods + 1)])
    axes.set_yticks(range(len(starts)), [f"{s:%Y-%m}  ({sizes[s]:,})" for s in starts], fontsize=8)
    axes.set_xlabel("months since first order")
    axes.set_ylabel("cohort (customers)")
    axes.set_title("Share of each monthly cohort buying again, by month since the first order")
    figure.colorbar(image, ax=axes, format=PercentFormatter(1.0))
    return _save(figure, out)


def retention_rates_chart(warehouse: Path, out: Path, months: int = 36) -> Path:
    """CRR and churn rate of the last complete months (activity base), as a PNG. The month
    still running is left out: its customers have not all had their chance to buy yet."""
    rates = _query(
        warehouse,
        """
        select period_start, crr, churn_rate
        from main.retention_rates
        where grain = 'month' and base = 'activity' and is_complete and crr is not null
        order by period_start desc
        limit $months
        """,
        {"months": months},
    ).sort("period_start")
    figure, axes = plt.subplots(figsize=LINE_FIGSIZE)
    if rates.is_empty():
        _no_data(axes, "no complete month with a previous month yet")
        return _save(figure, out)
    starts = rates["period_start"].to_list()
    axes.plot(starts, rates["crr"], marker="o", markersize=3, color="#2b7bba", label="CRR")
    axes.plot(
        starts, rates["churn_rate"], marker="o", markersize=3, color="#d7301f", label="churn rate"
    )
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    highest = rates.select(pl.max_horizontal("crr", "churn_rate").max()).item()
    axes.set_ylim(0, max(1.0, highest * 1.05))  # CRR passes 100% when many reactivate
    axes.grid(axis="y", color="0.9")
    axes.set_ylabel("share of last month's customers")
    axes.set_title("Customer retention rate (CRR) and churn rate by month (complete months)")
    axes.legend(loc="upper left", frameon=False, ncols=2)
    figure.autofmt_xdate()
    return _save(figure, out)


def ltv_curves_chart(warehouse: Path, out: Path, quarters: int = 8, periods: int = 24) -> Path:
    """Cumulative net revenue per acquired customer by months since the first order, one
    line per quarter of first orders (the quarter's monthly cohorts together), as a PNG.
    A line stops at the last month that is complete for all of its monthly cohorts."""
    curves = _query(
        warehouse,
        """
        with monthly as (
            select
                date_trunc('quarter', cohort_start) as cohort_quarter,
                cohort_start,
                period_number,
                cohort_customers,
                cumulative_net_revenue,
                is_complete
            from main.cohort_retention
            where grain = 'month' and period_number <= $periods
        ),
        quarter_sizes as (
            select cohort_quarter, count(distinct cohort_start) as months,
                sum(cohort_customers) filter (where period_number = 0) as customers
            from monthly group by cohort_quarter
        ),
        recent as (
            select * from quarter_sizes order by cohort_quarter desc limit $quarters
        ),
        curves as (
            select
                monthly.cohort_quarter,
                monthly.period_number,
                sum(monthly.cumulative_net_revenue)::double
                    / sum(monthly.cohort_customers) as revenue_per_customer,
                count(*) filter (where monthly.is_complete) as complete_months
            from monthly group by monthly.cohort_quarter, monthly.period_number
        )
        select curves.cohort_quarter, recent.customers, curves.period_number,
            curves.revenue_per_customer
        from curves inner join recent on curves.cohort_quarter = recent.cohort_quarter
        where curves.complete_months = recent.months
        order by curves.cohort_quarter, curves.period_number
        """,
        {"quarters": quarters, "periods": periods},
    )
    figure, axes = plt.subplots(figsize=LINE_FIGSIZE)
    groups = curves.partition_by("cohort_quarter", maintain_order=True, as_dict=False)
    if not groups:
        _no_data(axes, "no complete cohort month yet")
        return _save(figure, out)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(groups)))
    for color, curve in zip(colors, groups, strict=True):
        quarter = curve["cohort_quarter"][0]
        label = f"{quarter.year} Q{(quarter.month - 1) // 3 + 1} ({curve['customers'][0]:,})"
        axes.plot(
            curve["period_number"],
            curve["revenue_per_customer"],
            marker="o",
            markersize=2.5,
            color=color,
            label=label,
        )
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    axes.grid(color="0.92")
    axes.set_xlabel("months since first order")
    axes.set_ylabel("net revenue per customer, cumulative")
    axes.set_title(
        "Lifetime value so far: revenue per acquired customer, by quarter of first order"
    )
    axes.legend(title="cohort (customers)", fontsize=8, frameon=False, loc="upper left")
    return _save(figure, out)


def segment_sizes_chart(warehouse: Path, out: Path) -> Path:
    """Customers per RFM segment, split by value tier, as a PNG."""
    counts = _query(
        warehouse,
        """
        select rfm_segment, tier, count(*) as customers
        from main.customer_segments
        group by rfm_segment, tier
        """,
    )
    figure, axes = plt.subplots(figsize=LINE_FIGSIZE)
    if counts.is_empty():
        _no_data(axes, "no customers yet")
        return _save(figure, out)
    known = [s for s in RFM_SEGMENTS if s in set(counts["rfm_segment"].to_list())]
    others = sorted(set(counts["rfm_segment"].drop_nulls().to_list()) - set(RFM_SEGMENTS))
    segments = known + others
    table = (
        counts.filter(pl.col("rfm_segment").is_in(segments))
        .pivot(on="tier", index="rfm_segment", values="customers")
        .fill_null(0)
    )
    rows = {row["rfm_segment"]: row for row in table.iter_rows(named=True)}
    positions = np.arange(len(segments))[::-1]  # the best segment on top
    left = np.zeros(len(segments))
    for tier in TIERS:
        widths = np.array([rows[s].get(tier, 0) for s in segments], dtype=float)
        axes.barh(
            positions,
            widths,
            left=left,
            color=TIER_COLORS[tier],
            label=tier.replace("_", "-"),
            height=0.7,
        )
        left += widths
    total = int(counts["customers"].sum())
    for position, size in zip(positions, left, strict=True):
        axes.text(size, position, f"  {int(size):,} ({size / total:.0%})", va="center", fontsize=8)
    axes.set_yticks(positions, [s.replace("_", " ").replace("cant ", "can't ") for s in segments])
    axes.set_xlim(0, left.max() * 1.18)
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_xlabel("customers")
    axes.set_title(f"Customers by RFM segment and value tier ({total:,} customers)")
    axes.legend(title="tier", frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes.spines[["top", "right"]].set_visible(False)
    return _save(figure, out)
