"""The report as one self-contained HTML file: inline CSS and SVG charts, no script, no external request.

Every chart is drawn from the same figures as the table beside it. Every text from Partner Center or from
a message (serials, error descriptions, sources) goes through html.escape: serials are stored verbatim and
may hold markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from .report import Report, outcome_columns

COLOURS = {"completed": "#2e7d32", "completed_with_failures": "#ef6c00", "timed_out": "#c62828",
           "not_found": "#6a1b9a", "access_denied": "#ad1457", "response_too_large": "#4e342e",
           "pending": "#1565c0"}
BAR_COLOUR = "#1565c0"
CHART_WIDTH = 640
LIST_LIMIT = 500  # rows in the attention and repeated-serial tables; the audit commands list the rest

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.figure{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f5f5f5}
.note{color:#666;font-size:.9em}.legend span{display:inline-block;margin-right:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
svg text{font-size:11px;fill:#333}
"""


def render_report(report: Report) -> str:
    scope = f"customer {report.customer}" if report.customer else "all customers"
    period = f"{_when(report.since) or 'the beginning'} to {_when(report.until) or 'now'}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>batchwatch report: {escape(scope)}</title>",
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
        f"<style>{STYLE}</style></head><body>",
        f"<h1>batchwatch report: {escape(scope)}</h1>",
        f'<p class="note">Batches first seen from {escape(period)}; {report.batches} batches. Generated '
        f"{escape(_when(report.generated_at))}.</p>",
        _outcomes(report), _codes(report), _customers(report), _durations(report), _attention(report),
        _repeated(report), "</body></html>",
    ]
    return "\n".join(parts)


def _outcomes(report: Report) -> str:
    columns = outcome_columns(report)
    buckets = sorted(report.outcomes_by_bucket)
    per = "week (starting Monday)" if report.bucket == "week" else "day"
    totals = {bucket: sum(report.outcomes_by_bucket[bucket].values()) for bucket in buckets}
    rows = [[bucket, *[report.outcomes_by_bucket[bucket][outcome] for outcome in columns], totals[bucket]]
            for bucket in buckets]
    table = _table("outcomes", [per, *columns, "all"], rows)
    height, bar = 220, max(4, min(40, (CHART_WIDTH - 60) // max(1, len(buckets)) - 4))
    top = max(totals.values(), default=0)
    shapes = []
    for index, bucket in enumerate(buckets):
        x, y = 50 + index * (bar + 4), float(height - 30)
        for outcome in columns:
            value = report.outcomes_by_bucket[bucket][outcome]
            if value:
                size = value / top * (height - 50)
                y -= size
                shapes.append(_rect(x, y, bar, size, COLOURS.get(outcome, "#757575"), value,
                                    f"{bucket} {outcome}: {value}"))
        if len(buckets) <= 20 or index % max(1, len(buckets) // 10) == 0:
            shapes.append(f'<text x="{x}" y="{height - 14}">{escape(bucket[5:])}</text>')
    legend = "".join(f'<span><i class="swatch" style="background:{COLOURS.get(outcome, "#757575")}"></i>'
                     f"{escape(outcome)}</span>" for outcome in columns)
    chart = _svg("outcomes", f"Outcomes per {per}", CHART_WIDTH, height, shapes, top)
    return _section(f"Outcomes per {per}", f'<div>{chart}<p class="legend">{legend}</p></div>{table}',
                    empty=not buckets)


def _codes(report: Report) -> str:
    rows = [[figure.label, figure.count, figure.remediation] for figure in report.codes]
    chart = _bars("codes", "Failed devices by error code", [(f.label, f.count) for f in report.codes])
    return _section("Failed devices by error code",
                    chart + _table("codes", ["error code", "devices", "what to do"], rows), empty=not rows)


def _customers(report: Report) -> str:
    failing = [figure for figure in report.customers if figure.failed_devices]
    chart = _bars("customers", "Failed devices by customer", [(f.customer_id, f.failed_devices) for f in failing])
    rows = [[f.customer_id, f.batches, f.failed_batches, f.failed_devices] for f in report.customers]
    return _section("Failures by customer", chart + _table(
        "customers", ["customer", "batches", "batches with failures", "failed devices"], rows), empty=not rows)


def _durations(report: Report) -> str:
    chart = _bars("durations", "Time from first seen to final", report.durations)
    summary = ""
    if report.duration_median_s is not None and report.duration_p95_s is not None:
        summary = (f'<p class="note">Median {_duration(report.duration_median_s)}, 95th percentile '
                   f"{_duration(report.duration_p95_s)}.</p>")
    table = _table("durations", ["time to final", "batches"], [list(row) for row in report.durations])
    return _section("Time from first seen to final", chart + table + summary,
                    empty=not any(count for _, count in report.durations))


def _attention(report: Report) -> str:
    rows = [[str(row.get("RowKey")), str(row.get("PartitionKey")), str(row.get("outcome")),
             _when(row.get("firstSeenAt")), str(row.get("lastResult") or "")] for row in report.attention]
    more = len(rows) - LIST_LIMIT
    note = f'<p class="note">{more} more: python -m shared.audit batches / pending.</p>' if more > 0 else ""
    return _section("Batches pending, timed out, not found or denied", _table(
        "attention", ["tracking id", "customer", "outcome", "first seen", "last result"], rows[:LIST_LIMIT]) + note,
        empty=not rows)


def _repeated(report: Report) -> str:
    rows = [[item.serial, len(item.batches), ", ".join(item.codes), " ".join(item.batches)]
            for item in report.repeated_serials]
    return _section("Serials that failed in more than one batch", _table(
        "repeated", ["serial", "batches", "error codes", "tracking ids"], rows[:LIST_LIMIT]), empty=not rows)


# --- building blocks ---------------------------------------------------------------------------------------
def _section(title: str, body: str, empty: bool) -> str:
    content = '<p class="note">None in this period.</p>' if empty else f'<div class="figure">{body}</div>'
    return f"<section><h2>{escape(title)}</h2>{content}</section>"


def _table(name: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{cell}</td>' if isinstance(cell, int) else f"<td>{escape(str(cell))}</td>" for cell in row)
        + "</tr>" for row in rows)
    return f'<table data-table="{name}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _bars(name: str, title: str, items: Sequence[tuple[str, int]]) -> str:
    """Horizontal bars, one per item, longest first as given."""
    shown = list(items)[:30]
    top = max((value for _, value in shown), default=0)
    height = 20 * len(shown) + 10
    shapes = []
    for index, (label, value) in enumerate(shown):
        y = 5 + index * 20
        width = value / top * (CHART_WIDTH - 330) if top else 0
        shapes.append(f'<text x="0" y="{y + 12}">{escape(label[:48])}</text>')
        if value:
            shapes.append(_rect(300, y, width, 14, BAR_COLOUR, value, f"{label}: {value}"))
        shapes.append(f'<text x="{304 + width:.1f}" y="{y + 12}">{value}</text>')
    return _svg(name, title, CHART_WIDTH, height, shapes, top)


def _svg(name: str, title: str, width: int, height: int, shapes: list[str], top: int) -> str:
    return (f'<svg data-chart="{name}" data-max="{top}" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
            + "".join(shapes) + "</svg>")


def _rect(x: float, y: float, width: float, height: float, colour: str, value: int, tip: str) -> str:
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{colour}" '
            f'data-value="{value}"><title>{escape(tip)}</title></rect>')


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
