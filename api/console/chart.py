"""The fetch chart as inline SVG: credential fetches per hour over the last 7 days.

A pure function of :class:`vault.audit.activity.FetchActivity`, rendered on the server
(no script, no chart library). Hours run along the x axis; each hour is a stacked bar,
one segment per line (or runner), the busiest few in colour and the rest folded into
"other". Denied attempts are a hatched red segment on top of the hour's bar *and* a
triangle above it, so they read without colour too. The page puts the same numbers in a
table under the chart (:func:`activity_rows`): the image is the overview, the table the
accessible record.

The Content-Security-Policy forbids inline styles, so there is no ``style`` attribute and
no ``<style>`` element: only presentation attributes (``fill``, ``stroke``,
``font-size``), and classes the console's stylesheet may refine. Every text, line names
above all (tenants choose them), is escaped here.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from vault.audit.activity import ActivityGroup, FetchActivity, FetchSeries

__all__ = [
    "MAX_SERIES",
    "ActivityRow",
    "ChartSeries",
    "activity_rows",
    "fold_series",
    "render_fetch_chart",
    "series_label",
]

MAX_SERIES = 5
# Colour-blind-safe hues, each at least 3:1 against white (WCAG 1.4.11).
PALETTE = ("#0072B2", "#009E73", "#7B3294", "#AD5A00", "#6E7000")
OTHER_COLOUR = "#757575"
DENIED_COLOUR = "#B3261E"
TEXT_COLOUR = "#1F1F1F"
GRID_COLOUR = "#D9D9D9"

_WIDTH = 960
_LEFT, _RIGHT, _TOP, _PLOT_HEIGHT = 56, 16, 28, 200
_AXIS_SPACE = 48  # day labels and the x axis title under the plot
_LEGEND_COLUMNS, _LEGEND_ROW, _LEGEND_WIDTH = 3, 22, 300
_LABEL_MAX = 32
_FONT = 'font-family="sans-serif"'
# XML 1.0 cannot carry these at all, escaped or not: one would make the page unparsable.
_CHART_ID = re.compile("[A-Za-z][A-Za-z0-9_-]{0,40}")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ChartSeries:
    """What is drawn for one legend entry: a label, its colour and its hourly counts."""

    label: str
    colour: str
    success: tuple[int, ...]
    denied: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One non-empty (hour, line or runner) cell of the accessible table."""

    hour: datetime
    label: str
    success: int
    denied: int


def series_label(series: FetchSeries, group: ActivityGroup) -> str:
    """The name people know, else the id (a line since deleted, another tenant's line
    named in a refused attempt), else what the attempt could not say."""
    if series.name:
        return series.name
    if series.key:
        return series.key
    return "unidentified caller" if group == "runner" else "no line named"


def fold_series(activity: FetchActivity, limit: int = MAX_SERIES) -> list[ChartSeries]:
    """The ``limit`` busiest series in colour, every other one summed into "other"."""
    shown = activity.series[:limit]
    rest = activity.series[limit:]
    folded = [
        ChartSeries(series_label(s, activity.group), PALETTE[i % len(PALETTE)], s.success, s.denied)
        for i, s in enumerate(shown)
    ]
    if rest:
        success = tuple(map(sum, zip(*(s.success for s in rest), strict=True)))
        denied = tuple(map(sum, zip(*(s.denied for s in rest), strict=True)))
        label = f"other ({len(rest)} {_plural(activity.group, len(rest))})"
        folded.append(ChartSeries(label, OTHER_COLOUR, success, denied))
    return folded


def activity_rows(activity: FetchActivity) -> list[ActivityRow]:
    """Every non-zero count, hour by hour then busiest series first, unfolded."""
    rows = []
    for index in range(activity.hours):
        for s in activity.series:
            if s.success[index] or s.denied[index]:
                rows.append(
                    ActivityRow(
                        activity.hour(index),
                        series_label(s, activity.group),
                        s.success[index],
                        s.denied[index],
                    )
                )
    return rows


def render_fetch_chart(activity: FetchActivity, *, chart_id: str, limit: int = MAX_SERIES) -> str:
    """The chart as one ``<svg>`` element; ``chart_id`` prefixes its ids (two charts on a
    page must not share a title id or a pattern id). Empty data gives the same frame
    with a "no fetches" message."""
    if not _CHART_ID.fullmatch(chart_id):
        raise ValueError("chart_id must be a plain identifier")
    series = fold_series(activity, limit)
    legend_rows = math.ceil((len(series) + 1) / _LEGEND_COLUMNS) if series else 0
    height = _TOP + _PLOT_HEIGHT + _AXIS_SPACE + legend_rows * _LEGEND_ROW + 8
    served = sum(sum(s.success) for s in series)
    denied = sum(sum(s.denied) for s in series)
    hourly = [sum(s.success[i] + s.denied[i] for s in series) for i in range(activity.hours)]
    step, top = _scale(max(hourly, default=0))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="fetch-chart" role="img"'
        f' viewBox="0 0 {_WIDTH} {height}" width="100%"'
        f' aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{_esc(_title(activity))}</title>',
        f'<desc id="{chart_id}-desc">{_esc(_summary(activity, series, served, denied))}</desc>',
        _defs(chart_id),
        *_y_axis(step, top),
        *_x_axis(activity),
    ]
    if series:
        parts += [
            _hour_bar(activity, series, i, top, chart_id)
            for i in range(activity.hours)
            if hourly[i]
        ]
        parts += _legend(series, chart_id, _TOP + _PLOT_HEIGHT + _AXIS_SPACE)
    else:
        parts.append(_empty_message(activity))
    parts.append("</svg>")
    return "".join(parts)


# -- pieces ------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(_NOT_XML.sub("?", str(value)), quote=True)


def _plural(group: ActivityGroup, count: int) -> str:
    return group if count == 1 else f"{group}s"


def _days(activity: FetchActivity) -> str:
    days = activity.hours // 24
    return f"{days} days" if days != 1 else "day"


def _title(activity: FetchActivity) -> str:
    return f"Credential fetches per hour over the last {_days(activity)}, per {activity.group}"


def _summary(
    activity: FetchActivity, series: Sequence[ChartSeries], served: int, denied: int
) -> str:
    start, end = activity.start, activity.hour(activity.hours)
    span = f"from {start:%Y-%m-%d %H:00} to {end:%Y-%m-%d %H:00} UTC"
    if not series:
        return f"No fetches in the last {_days(activity)} ({span})."
    names = len(activity.series)
    return (
        f"{served} fetches served and {denied} denied {span}, across {names}"
        f" {_plural(activity.group, names)}; the busiest is {series[0].label}. Denied"
        " attempts are hatched segments marked with a triangle. The table below lists"
        " every count."
    )


def _scale(peak: int) -> tuple[int, int]:
    """A round tick step (1, 2 or 5 times a power of ten) and the axis top it gives."""
    rough = max(1.0, peak / 4)
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    return int(step), int(step * max(1, math.ceil(peak / step)))


def _y(value: float, top: int) -> float:
    return _TOP + _PLOT_HEIGHT - value / top * _PLOT_HEIGHT


def _bar_width(activity: FetchActivity) -> float:
    return (_WIDTH - _LEFT - _RIGHT) / activity.hours


def _defs(chart_id: str) -> str:
    return (
        f'<defs><pattern id="{chart_id}-hatch" patternUnits="userSpaceOnUse" width="4"'
        ' height="4" patternTransform="rotate(45)">'
        f'<rect width="4" height="4" fill="#FBE3E1"/>'
        f'<line x1="0" y1="0" x2="0" y2="4" stroke="{DENIED_COLOUR}" stroke-width="2"/>'
        "</pattern></defs>"
    )


def _y_axis(step: int, top: int) -> list[str]:
    parts = []
    for value in range(0, top + 1, step):
        y = _y(value, top)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}"'
            f' stroke="{GRID_COLOUR}" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" {_FONT}'
            f' fill="{TEXT_COLOUR}">{value}</text>'
        )
    mid = _TOP + _PLOT_HEIGHT / 2
    parts.append(
        f'<text x="14" y="{mid:.1f}" transform="rotate(-90 14 {mid:.1f})" text-anchor="middle"'
        f' font-size="12" {_FONT} fill="{TEXT_COLOUR}">Fetches per hour</text>'
    )
    return parts


def _x_axis(activity: FetchActivity) -> list[str]:
    base = _TOP + _PLOT_HEIGHT
    width = _bar_width(activity)
    parts = [
        f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{_WIDTH - _RIGHT}" y2="{base}"'
        f' stroke="{TEXT_COLOUR}" stroke-width="1"/>'
    ]
    for index in range(activity.hours):
        moment = activity.hour(index)
        if moment.hour != 0:
            continue
        x = _LEFT + index * width
        parts.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 5}" stroke="{TEXT_COLOUR}"'
            f' stroke-width="1"/><text x="{x + 3:.1f}" y="{base + 17}" font-size="11" {_FONT}'
            f' fill="{TEXT_COLOUR}">{_esc(f"{moment:%a %d %b}")}</text>'
        )
    parts.append(
        f'<text x="{(_LEFT + _WIDTH - _RIGHT) / 2:.1f}" y="{base + 38}" text-anchor="middle"'
        f' font-size="12" {_FONT} fill="{TEXT_COLOUR}">Hour (UTC), days start at the'
        " ticks</text>"
    )
    return parts


def _hour_bar(
    activity: FetchActivity, series: Sequence[ChartSeries], index: int, top: int, chart_id: str
) -> str:
    """One hour: served segments bottom-up per series, then the denied segment and its
    triangle. The group's ``<title>`` is the hover text with the hour's numbers."""
    width = _bar_width(activity)
    x = _LEFT + index * width
    level = 0
    rects = []
    for s in series:
        if s.success[index]:
            rects.append(
                _segment(x, width, level, s.success[index], top, paint=f'fill="{s.colour}"')
            )
            level += s.success[index]
    denied = sum(s.denied[index] for s in series)
    if denied:
        fill = f'class="denied" fill="url(#{chart_id}-hatch)" stroke="{DENIED_COLOUR}"'
        rects.append(_segment(x, width, level, denied, top, paint=fill))
        rects.append(_marker(x + width / 2, _y(level + denied, top), index))
    return (
        f'<g class="hour" data-hour="{index}"><title>{_esc(_hour_text(activity, series, index))}'
        f"</title>{''.join(rects)}</g>"
    )


def _segment(x: float, width: float, level: int, count: int, top: int, *, paint: str) -> str:
    y_top = _y(level + count, top)
    height = _y(level, top) - y_top
    return (
        f'<rect x="{x + 0.5:.2f}" y="{y_top:.2f}" width="{max(width - 1, 1):.2f}"'
        f' height="{height:.2f}" {paint}/>'
    )


def _marker(cx: float, y_top: float, index: int | None) -> str:
    """A downward triangle over a bar with denied attempts: a shape, not just a colour.
    ``index`` None is the legend's sample (a class of its own, no hour)."""
    tip = y_top - 2
    what = f'class="denied-marker" data-hour="{index}"' if index is not None else 'class="key"'
    return (
        f'<path {what} d="M{cx - 4:.2f} {tip - 7:.2f}L{cx + 4:.2f} {tip - 7:.2f}'
        f'L{cx:.2f} {tip:.2f}Z" fill="{DENIED_COLOUR}"/>'
    )


def _hour_text(activity: FetchActivity, series: Sequence[ChartSeries], index: int) -> str:
    counts = [
        f"{s.label}: {s.success[index]} served, {s.denied[index]} denied"
        for s in series
        if s.success[index] or s.denied[index]
    ]
    return f"{activity.hour(index):%a %d %b %H:00} UTC. " + "; ".join(counts)


def _legend(series: Sequence[ChartSeries], chart_id: str, y0: int) -> list[str]:
    entries = [(s.label, f'fill="{s.colour}"', False) for s in series]
    entries.append(
        ("denied attempts", f'fill="url(#{chart_id}-hatch)" stroke="{DENIED_COLOUR}"', True)
    )
    parts = ['<g class="legend">']
    for i, (label, paint, denied) in enumerate(entries):
        x = _LEFT + (i % _LEGEND_COLUMNS) * _LEGEND_WIDTH
        y = y0 + (i // _LEGEND_COLUMNS) * _LEGEND_ROW
        short = label if len(label) <= _LABEL_MAX else label[: _LABEL_MAX - 1] + "\u2026"
        parts.append(f'<g class="legend-entry"><title>{_esc(label)}</title>')
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" {paint}/>')
        if denied:
            parts.append(_marker(x + 24, y + 11, None))
        text_x = x + (36 if denied else 18)
        parts.append(
            f'<text x="{text_x}" y="{y + 11}" font-size="12" {_FONT} fill="{TEXT_COLOUR}">'
            f"{_esc(short)}</text></g>"
        )
    parts.append("</g>")
    return parts


def _empty_message(activity: FetchActivity) -> str:
    return (
        f'<text class="empty" x="{_WIDTH / 2:.1f}" y="{_TOP + _PLOT_HEIGHT / 2:.1f}"'
        f' text-anchor="middle" font-size="14" {_FONT} fill="{TEXT_COLOUR}">'
        f"No fetches in the last {_esc(_days(activity))}</text>"
    )
