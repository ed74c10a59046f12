"""The retention report: one self-contained HTML page (charts inline, no outside files,
scripts, styles or fonts) with the headline numbers of the last complete month, written
beside the warehouse, and the same charts as PNG files next to it."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from retention_pipeline.lib import charts
from retention_pipeline.lib.warehouse import connect

REPORT_FILENAME = "retention_report.html"


def report_path(warehouse: Path) -> Path:
    """Where the pipeline writes the report: `retention_report.html` in the warehouse's folder."""
    return warehouse.with_name(REPORT_FILENAME)


def images_dir(report: Path) -> Path:
    """The report's charts as PNG files: `<report name>_images/` beside it."""
    return report.with_name(f"{report.stem}_images")


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    table: str
    draw: Callable[[Path, Path], Path]
    how_to_read: str


CHARTS = (
    Chart(
        "cohort_retention_heatmap",
        "Who comes back, cohort by cohort",
        "cohort_retention",
        charts.cohort_heatmap,
        "Each row is the customers who first bought in one month (their cohort; the size is "
        "in brackets). Each cell is the share of them who bought again 1, 2, 3… months "
        "later. Darker is better. Compare rows in one column to see whether newer customers "
        "come back more than older ones did at the same age. Months not over yet are blank.",
    ),
    Chart(
        "crr_and_churn",
        "Retention and churn, month by month",
        "retention_rates",
        charts.retention_rates_chart,
        "CRR: customers who bought in a month and were not new, as a share of the previous "
        "month's buyers. Churn rate: the share of the previous month's buyers who did not buy "
        "this month. CRR also counts customers coming back after a break, so the two need "
        "not add up to 100%. Only complete months are drawn.",
    ),
    Chart(
        "ltv_curves",
        "Lifetime value so far, by cohort",
        "cohort_retention",
        charts.ltv_curves_chart,
        "Net revenue per acquired customer, added up month by month since the first order: "
        "one line per quarter in which customers first bought (their number in brackets). "
        "A steeper line is a cohort that is worth more sooner. Lines end at the last month "
        "that is complete for the whole quarter.",
    ),
    Chart(
        "segment_sizes",
        "Customer segments today",
        "customer_segments",
        charts.segment_sizes_chart,
        "Every customer sits in one RFM segment, from how recently and how often they bought: "
        "champions bought recently and often; at risk and can't lose bought often but not "
        "lately (worth a win-back); hibernating bought rarely and long ago. Colours split "
        "each segment by value tier: VIP is the top 5% of customers by revenue, pre-VIP the "
        "next 15%.",
    ),
)


@dataclass(frozen=True)
class Headline:
    """The last complete month's numbers, and the month before for comparison."""

    month: date
    crr: float | None
    churn_rate: float | None
    customers_start: int
    buying_customers: int
    new_customers: int
    returning_customers: int
    orders: int
    net_revenue: float
    repeat_purchase_rate: float | None
    previous: Headline | None = None


@dataclass(frozen=True)
class Report:
    path: Path
    as_of: date | None
    headline: Headline | None
    images: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    """chart name: the table it needs that this warehouse lacks"""

    def image_markdown(self, name: str) -> str:
        """The chart as Markdown with the PNG inline: Dagster's UI draws it from metadata."""
        title = next(c.title for c in CHARTS if c.name == name)
        return f"![{title}]({_data_uri(self.images[name])})"


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _tables(warehouse: Path) -> set[str]:
    with connect(warehouse, read_only=True) as con:
        rows = con.execute(
            "select table_name from information_schema.tables where table_schema = 'main'"
        ).fetchall()
    return {name for (name,) in rows}


def read_headline(warehouse: Path) -> tuple[date | None, Headline | None]:
    """The as-of date, and the numbers of the last complete month that has a month before."""
    with connect(warehouse, read_only=True) as con:
        as_of = con.execute("select max(activity_date) from main.customer_base_daily").fetchone()
        rows = con.execute(
            """
            select
                rates.period_start, rates.crr, rates.churn_rate, rates.customers_start,
                kpis.buying_customers, kpis.new_customers, kpis.returning_customers,
                kpis.orders, kpis.net_revenue::double, kpis.repeat_purchase_rate
            from main.retention_rates as rates
            inner join main.kpi_periodic as kpis
                on rates.grain = kpis.grain and rates.period_start = kpis.period_start
            where rates.grain = 'month' and rates.base = 'activity' and rates.is_complete
            order by rates.period_start desc
            limit 2
            """
        ).fetchall()
    headlines = [Headline(*row) for row in rows]
    if not headlines:
        return as_of[0], None
    latest = headlines[0]
    if len(headlines) > 1:
        latest = Headline(*rows[0], previous=headlines[1])
    return as_of[0], latest


def render_report(
    warehouse: Path,
    out: Path | None = None,
    currency: str = "USD",
    window_days: int = 90,
    label: str | None = None,
) -> Report:
    """Draws every chart whose table the warehouse has, and writes the HTML report to `out`
    (default: beside the warehouse) in one replace, so a reader never sees half a file.
    `label` names the warehouse on the page (default the file's name)."""
    warehouse = Path(warehouse)
    if not warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {warehouse}")
    out = Path(out) if out is not None else report_path(warehouse)
    tables = _tables(warehouse)
    images, missing = {}, {}
    for chart in CHARTS:
        if chart.table in tables:
            images[chart.name] = chart.draw(warehouse, images_dir(out) / f"{chart.name}.png")
        else:
            missing[chart.name] = chart.table
    as_of, headline = read_headline(warehouse)
    with connect(warehouse, read_only=True) as con:
        active = con.execute(
            "select active_end from main.customer_base_daily order by activity_date desc limit 1"
        ).fetchone()
    report = Report(out, as_of, headline, images, missing)
    page = _page(
        report, currency, active[0] if active else None, window_days, label or warehouse.name
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, out)
    return report


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1f2933; max-width: 1100px; margin: 2rem auto; padding: 0 1rem; }
h1 { margin-bottom: 0; } h2 { margin-top: 2.5rem; }
.sub { color: #52606d; margin-top: .2rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr));
  gap: .8rem; margin: 1.5rem 0; }
.card { border: 1px solid #d9e2ec; border-radius: 8px; padding: .8rem 1rem; }
.card .label { color: #52606d; font-size: .85rem; }
.card .value { font-size: 1.8rem; font-weight: 600; }
.card .delta { font-size: .85rem; color: #52606d; }
.card p { font-size: .85rem; margin: .4rem 0 0; color: #3e4c59; }
.summary { background: #f0f4f8; border-radius: 8px; padding: .8rem 1rem; }
figure { margin: 0; } img { max-width: 100%; height: auto; border: 1px solid #e4e7eb; }
.note { color: #52606d; font-size: .85rem; }
"""


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _delta_points(now: float | None, before: float | None) -> str:
    if now is None or before is None:
        return ""
    points = round((now - before) * 100, 1)
    if points == 0:
        return "unchanged from the month before"
    return f"{points:+.1f} points vs. the month before"


def _delta_share(now: float, before: float) -> str:
    if not before:
        return ""
    return f"{now / before - 1:+.0%} vs. the month before"


def _card(label: str, value: str, delta: str, explanation: str) -> str:
    return (
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>'
        f'<div class="delta">{html.escape(delta)}</div>'
        f"<p>{html.escape(explanation)}</p></div>"
    )


def _cards(h: Headline, currency: str) -> str:
    month, before = f"{h.month:%B %Y}", h.previous
    return "".join(
        [
            _card(
                "Customer retention rate (CRR)",
                _pct(h.crr),
                _delta_points(h.crr, before and before.crr),
                f"Buyers in {month} who were not new, per buyer of the month before "
                f"({h.customers_start:,}).",
            ),
            _card(
                "Churn rate",
                _pct(h.churn_rate),
                _delta_points(h.churn_rate, before and before.churn_rate),
                f"Share of the month before's buyers who bought nothing in {month}. Lower is "
                "better.",
            ),
            _card(
                "Customers who bought",
                f"{h.buying_customers:,}",
                _delta_share(h.buying_customers, before.buying_customers) if before else "",
                f"{h.new_customers:,} new and {h.returning_customers:,} returning, "
                f"{h.orders:,} orders.",
            ),
            _card(
                "Repeat purchase rate",
                _pct(h.repeat_purchase_rate),
                _delta_points(h.repeat_purchase_rate, before and before.repeat_purchase_rate),
                f"Share of all customers so far with two or more orders, at the end of {month}.",
            ),
            _card(
                "Net revenue",
                f"{h.net_revenue:,.0f} {currency}",
                _delta_share(h.net_revenue, before.net_revenue) if before else "",
                f"Valid orders in {month}, after refunds.",
            ),
        ]
    )


def _summary(h: Headline, active: int | None, window_days: int, as_of: date | None) -> str:
    month = f"{h.month:%B %Y}"
    sentences = []
    if h.crr is not None and h.churn_rate is not None:
        sentences.append(
            f"In {month}, {1 - h.churn_rate:.0%} of the previous month's "
            f"{h.customers_start:,} buyers bought again and {h.churn_rate:.0%} did not "
            f"(churn). Counting customers who came back after a break too, the customer "
            f"retention rate was {h.crr:.0%}."
        )
    if h.buying_customers:
        sentences.append(
            f"{h.new_customers / h.buying_customers:.0%} of the month's {h.buying_customers:,} "
            "buyers were new; the rest had bought before."
        )
    if active is not None and as_of is not None:
        sentences.append(
            f"On {as_of:%d %B %Y}, {active:,} customers were active (their last order within "
            f"{window_days} days)."
        )
    return f'<p class="summary">{html.escape(" ".join(sentences))}</p>'


def _page(
    report: Report, currency: str, active: int | None, window_days: int, warehouse: str
) -> str:
    as_of = f"{report.as_of:%d %B %Y}" if report.as_of else "no data yet"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may load from outside the page: inline styles and data: images only.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Customer retention report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Customer retention report</h1>",
        f'<p class="sub">Data up to {html.escape(as_of)} · warehouse '
        f"{html.escape(warehouse)} · made {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>",
    ]
    h = report.headline
    if h is None:
        parts.append("<p>No complete month yet: the numbers appear after the first full month.</p>")
    else:
        parts.append(f"<h2>{h.month:%B %Y}, the last complete month</h2>")
        parts.append(_summary(h, active, window_days, report.as_of))
        parts.append(f'<div class="cards">{_cards(h, currency)}</div>')
    for chart in CHARTS:
        parts.append(f"<h2>{html.escape(chart.title)}</h2>")
        if chart.name in report.images:
            parts.append(
                f'<figure><img id="{chart.name}" alt="{html.escape(chart.title)}" '
                f'src="{_data_uri(report.images[chart.name])}"></figure>'
            )
            parts.append(f"<p>{html.escape(chart.how_to_read)}</p>")
        else:
            parts.append(
                f'<p class="note">This warehouse has no table {chart.table} yet; run the '
                "pipeline again to build it.</p>"
            )
    parts.append(
        '<p class="note">Only valid orders count: not cancelled, failed or test orders, and '
        "net of refunds. Months are calendar months in the reporting timezone. Every "
        "definition, with worked examples, is in docs/metrics.md of the retention_pipeline "
        "repository.</p></body></html>"
    )
    return "\n".join(parts)
