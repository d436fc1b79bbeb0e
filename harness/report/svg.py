"""Inline SVG plots for the HTML report, drawn in Python: no plotting library, nothing external.

Every plot is a ``<svg role="img">`` whose ``<title>`` and ``<desc>`` name what it shows, whose
marks carry their own ``<title>`` (a tooltip and a screen-reader label), and whose series are
told apart by shape and text as well as colour. Colours come from CSS classes (``c-control``,
``c-candidate``, ``c-unwaived``, ``c-waived``, ...) defined in ``STYLE``, which the page
inlines. All text is escaped here; callers pass plain strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable, Sequence

__all__ = ["Canvas", "Mark", "Bar", "Lane", "nice_ticks", "error_plot", "level_timeline",
           "hbar_chart", "range_panels", "grouped_bars", "WIDTH", "STYLE", "ERROR_PLOT_COLUMNS",
           "TIMELINE_COLUMNS"]

WIDTH = 1100
STYLE = """
svg { max-width: 100%; height: auto; display: block; font-size: 12px; }
svg .axis { stroke: #57606a; } svg .grid { stroke: #e5e7eb; } svg .dashed { stroke-dasharray: 4 3; }
svg .tick { fill: #57606a; } svg .muted { font-style: italic; } svg .value { fill: #1f2328; }
svg .row-label, svg .panel-title { fill: #1f2328; font-weight: 600; }
svg .axis-label { fill: #57606a; }
svg .vertical { writing-mode: vertical-rl; transform-box: fill-box; }
svg .series { fill: none; stroke: #4e79a7; stroke-width: 1.2; } svg .series-dot { fill: #4e79a7; }
svg .whisker { stroke: #1f2328; stroke-width: 1.5; }
.c-control { fill: #4e79a7; } .c-candidate { fill: #b07aa1; } .c-coverage { fill: #76b7b2; }
.c-unwaived { fill: #d62728; stroke: #7f1d1d; } .c-waived { fill: #e49b0f; stroke: #7c5300; }
.d-none { fill: #afb8c1; } .d-hit { fill: #59a14f; } .d-some { fill: #f28e2b; }
.d-miss { fill: #9c1c1c; }
"""
_LEFT, _RIGHT, _TOP, _BOTTOM = 86, 24, 34, 44
_MAX_DOTS = 200
ERROR_PLOT_COLUMNS = WIDTH - _LEFT - _RIGHT  # above this many calls, one column shows several
TIMELINE_COLUMNS = WIDTH - 190 - _LEFT  # the same for level_timeline (its notes take the right)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Mark:
    """A point mark: ``x`` and ``y`` in data units (a timeline ignores ``y``), a CSS class, a
    shape (``triangle``, ``diamond``, ``circle``) and a tooltip."""

    x: float
    y: float
    css: str
    shape: str
    tooltip: str


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: a label under it, a value (None: nothing to draw), an optional whisker top, the
    text above it, a CSS class and a tooltip."""

    label: str
    value: float | None
    text: str
    css: str
    tooltip: str
    whisker: float | None = None


class Canvas:
    """An SVG document under construction; ``render()`` returns the markup."""

    def __init__(self, width: int, height: int, title: str, description: str, dom_id: str) -> None:
        self.width, self.height, self.dom_id = width, height, dom_id
        self.title, self.description = title, description
        self.parts: list[str] = []

    def line(self, x1: float, y1: float, x2: float, y2: float, css: str) -> None:
        self.parts.append(f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" '
                          f'y2="{_num(y2)}" class="{css}"/>')

    def rect(self, x: float, y: float, width: float, height: float, css: str,
             tooltip: str | None = None) -> None:
        body = f"<title>{escape(tooltip)}</title>" if tooltip else ""
        self.parts.append(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(max(width, 0.0))}" '
                          f'height="{_num(max(height, 0.0))}" class="{css}">{body}</rect>')

    def text(self, x: float, y: float, text: str, css: str = "", anchor: str = "start") -> None:
        self.parts.append(f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" '
                          f'class="{css}">{escape(text)}</text>')

    def polyline(self, points: Sequence[tuple[float, float]], css: str) -> None:
        coords = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
        self.parts.append(f'<polyline points="{coords}" class="{css}"/>')

    def mark(self, x: float, y: float, shape: str, css: str, tooltip: str,
             size: float = 5.5) -> None:
        if shape == "circle":
            self.parts.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(size * 0.7)}" '
                              f'class="{css}"><title>{escape(tooltip)}</title></circle>')
            return
        if shape == "triangle":
            points = [(x, y - size), (x + size, y + size * 0.8), (x - size, y + size * 0.8)]
        else:
            points = [(x, y - size), (x + size, y), (x, y + size), (x - size, y)]
        coords = " ".join(f"{_num(px)},{_num(py)}" for px, py in points)
        self.parts.append(f'<polygon points="{coords}" class="{css}">'
                          f'<title>{escape(tooltip)}</title></polygon>')

    def render(self) -> str:
        title_id, desc_id = f"{self.dom_id}-title", f"{self.dom_id}-desc"
        return (f'<svg role="img" width="{self.width}" '
                f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" '
                f'aria-labelledby="{title_id} {desc_id}" id="{self.dom_id}">'
                f'<title id="{title_id}">{escape(self.title)}</title>'
                f'<desc id="{desc_id}">{escape(self.description)}</desc>'
                + "".join(self.parts) + "</svg>")


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (about ``count`` of them)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _x_axis(canvas: Canvas, num_calls: int, x_of: Callable[[float], float], y: float,
            right: float) -> None:
    canvas.line(_LEFT, y, right, y, "axis")
    for tick in nice_ticks(0, max(num_calls - 1, 0), 8):
        if tick != int(tick):
            continue
        px = x_of(tick)
        canvas.line(px, y, px, y + 4, "axis")
        canvas.text(px, y + 16, str(int(tick)), "tick", "middle")
    canvas.text((_LEFT + right) / 2, y + 34, "call index", "axis-label", "middle")


def _x_scale(num_calls: int, right: float) -> Callable[[float], float]:
    span = right - _LEFT
    if num_calls <= 1:
        return lambda x: _LEFT + span / 2
    return lambda x: _LEFT + span * x / (num_calls - 1)


def _linear(base: float, top: float, ceiling: float) -> Callable[[float], float]:
    return lambda value: base - (base - top) * value / ceiling


def _envelope(values: Sequence[float], num_columns: int) -> list[tuple[float, float]]:
    """``(x, max value)`` per pixel column when there are more values than columns (peaks kept)."""
    if len(values) <= num_columns:
        return [(float(i), v) for i, v in enumerate(values)]
    out = []
    for column in range(num_columns):
        start = column * len(values) // num_columns
        stop = max((column + 1) * len(values) // num_columns, start + 1)
        out.append(((start + stop - 1) / 2, max(values[start:stop])))
    return out


def _exp_label(value: float) -> str:
    """``2e-5``, ``1e0``, ``5e10``: one significant digit, no padding or plus sign."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _log_ticks(lo: int, hi: int) -> list[float]:
    """Decades from ``10**lo`` to ``10**hi`` (thinned to about 8); 2 and 5 in between as well
    when the range spans two decades or less."""
    step = max(1, math.ceil((hi - lo) / 8))
    ticks = [10.0 ** exponent for exponent in range(lo, hi + 1, step)]
    if hi - lo <= 2:
        ticks += [m * 10.0 ** exponent for exponent in range(lo, hi) for m in (2, 5)]
    return sorted(ticks)


def error_plot(values: Sequence[float], marks: Sequence[Mark], *, title: str, description: str,
               dom_id: str, height: int = 300) -> str:
    """Per-call error on a log scale, with a lane for exact zeros under it (a log scale has no
    zero). Values that are not positive and finite are drawn in the zero lane; marks are drawn
    at ``Mark.y``, their call's error. With no positive value there is no log scale: the plot
    shrinks to the zero lane and says so."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    height = height if positive else 120
    canvas = Canvas(WIDTH, height, title, description, dom_id)
    x_of = _x_scale(len(values), WIDTH - _RIGHT)
    zero_y = height - _BOTTOM - 10
    top, bottom = _TOP, zero_y - 26
    if not positive:
        canvas.text((_LEFT + WIDTH - _RIGHT) / 2, _TOP,
                    f"all {len(values)} values are exactly 0" if values else "no values",
                    "tick muted", "middle")
    lo = math.floor(math.log10(min(positive))) if positive else 0
    hi = math.ceil(math.log10(max(positive))) if positive else 1
    hi = max(hi, lo + 1)

    def y_of(value: float) -> float:
        if not (value > 0 and math.isfinite(value)):
            return zero_y
        return bottom - (bottom - top) * (math.log10(value) - lo) / (hi - lo)

    if positive:
        for tick in _log_ticks(lo, hi):
            py = y_of(tick)
            canvas.line(_LEFT, py, WIDTH - _RIGHT, py, "grid")
            canvas.text(_LEFT - 8, py + 4, _exp_label(tick), "tick", "end")
        canvas.line(_LEFT, bottom + 13, WIDTH - _RIGHT, bottom + 13, "grid dashed")
    canvas.line(_LEFT, zero_y, WIDTH - _RIGHT, zero_y, "grid")
    canvas.text(_LEFT - 8, zero_y + 4, "0", "tick", "end")
    if positive:
        canvas.text(14, (top + zero_y) / 2, "max abs error", "axis-label vertical", "middle")
    points = [(x_of(x), y_of(v)) for x, v in _envelope(values, ERROR_PLOT_COLUMNS)]
    if len(points) > 1:
        canvas.polyline(points, "series")
    if len(values) <= _MAX_DOTS:  # few calls: a dot (and tooltip) per call
        for index, (px, py) in enumerate(points):
            canvas.mark(px, py, "circle", "series-dot", f"call {index}: {values[index]:.3g}",
                        size=3.0)
    for mark in marks:
        canvas.mark(x_of(mark.x), y_of(mark.y), mark.shape, mark.css, mark.tooltip)
    _x_axis(canvas, len(values), x_of, height - _BOTTOM, WIDTH - _RIGHT)
    return canvas.render()


@dataclass(frozen=True, slots=True)
class Lane:
    """One lane of :func:`level_timeline`: a label, a note right of the lane, per call a level
    (an index into the plot's levels; higher is drawn taller and counts as worse), and
    ``describe(start, stop)``, the tooltip of calls ``start..stop-1``."""

    label: str
    note: str
    levels: Sequence[int]
    describe: Callable[[int, int], str]


def _columns(num_calls: int, num_columns: int) -> list[tuple[int, int]]:
    """``(start, stop)`` call ranges of ``num_columns`` near-equal columns."""
    return [(column * num_calls // num_columns, (column + 1) * num_calls // num_columns)
            for column in range(num_columns)]


def _level_runs(levels: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(start, stop, level)`` per column, one call each up to ``TIMELINE_COLUMNS`` calls; past
    that, each column takes its calls' highest level and equal neighbours merge into one run."""
    if len(levels) <= TIMELINE_COLUMNS:
        return [(index, index + 1, level) for index, level in enumerate(levels)]
    runs: list[tuple[int, int, int]] = []
    for start, stop in _columns(len(levels), TIMELINE_COLUMNS):
        level = max(levels[start:stop])
        if runs and runs[-1][2] == level:
            runs[-1] = (runs[-1][0], stop, level)
        else:
            runs.append((start, stop, level))
    return runs


def level_timeline(num_calls: int, lanes: Sequence[Lane], levels: Sequence[tuple[str, str]],
                   marks: Sequence[Mark], marks_label: str, marks_note: str, *, title: str,
                   description: str, dom_id: str) -> str:
    """Per-call levels over call index, one lane each, then a lane of point marks.

    ``levels`` are ``(css, legend text)`` from lowest to highest; a level is drawn as a thin bar
    whose height grows with it, so the plot reads without colour, and a legend says which is
    which. Above ``TIMELINE_COLUMNS`` calls, one column covers several calls and shows the
    highest level among them (see :func:`_level_runs`). ``Mark.y`` is ignored.
    """
    lane_height, bar_top = 34, 8
    height = _TOP + lane_height * (len(lanes) + 1) + _BOTTOM
    canvas = Canvas(WIDTH, height, title, description, dom_id)
    right = WIDTH - 190
    span, x_of = right - _LEFT, _x_scale(num_calls, right)
    bar_height = [3 + (lane_height - bar_top - 3) * k / max(len(levels) - 1, 1)
                  for k in range(len(levels))]
    width = min(max(span / max(num_calls, 1) * 0.6, 1.0), 8.0)  # of one call's bar
    legend_x = _LEFT
    for (css, text), glyph in zip(levels, bar_height):
        canvas.rect(legend_x, 26 - glyph, 4, glyph, css)
        canvas.text(legend_x + 9, 26, text, "tick")
        legend_x += 36 + 6.2 * len(text)
    for position, lane in enumerate(lanes):
        base = _TOP + lane_height * (position + 1) - 4
        canvas.line(_LEFT, base, right, base, "grid")
        canvas.text(_LEFT - 8, base - 8, lane.label, "row-label", "end")
        canvas.text(right + 16, base - 8, lane.note, "tick")
        if not lane.levels:
            canvas.text((_LEFT + right) / 2, base - 10, "not recorded" if num_calls else "no calls",
                        "tick muted", "middle")
        bucketed = len(lane.levels) > TIMELINE_COLUMNS
        for start, stop, level in _level_runs(lane.levels):
            if bucketed:
                x0, x1 = _LEFT + span * start / num_calls, _LEFT + span * stop / num_calls
            else:
                x0 = x_of(start) - width / 2
                x1 = x0 + width
            canvas.rect(x0, base - bar_height[level], x1 - x0, bar_height[level],
                        levels[level][0], lane.describe(start, stop))
    marks_y = _TOP + lane_height * len(lanes) + lane_height / 2
    canvas.line(_LEFT, marks_y, right, marks_y, "grid")
    canvas.text(_LEFT - 8, marks_y + 4, marks_label, "row-label", "end")
    canvas.text(right + 16, marks_y + 4, marks_note, "tick")
    size = 6.5 if len(marks) <= 50 else 4.5  # many marks: smaller, so fewer overlap
    for mark in marks:
        canvas.mark(x_of(mark.x), marks_y, mark.shape, mark.css, mark.tooltip, size=size)
    _x_axis(canvas, num_calls, x_of, height - _BOTTOM, right)
    return canvas.render()


def hbar_chart(items: Sequence[tuple[str, int]], *, title: str, description: str, dom_id: str,
               css: str = "c-coverage") -> str:
    """Horizontal bars, label left and value right; linear from zero."""
    row_height, label_width = 22, 190
    height = _TOP + row_height * max(len(items), 1) + 16
    canvas = Canvas(WIDTH, height, title, description, dom_id)
    span = WIDTH - label_width - 90
    largest = max((value for _, value in items), default=0)
    if not items:
        canvas.text(label_width, _TOP + 14, "nothing recorded", "tick")
    for position, (label, value) in enumerate(items):
        y = _TOP + row_height * position
        width = span * value / largest if largest else 0.0
        canvas.text(label_width - 8, y + 15, label, "row-label", "end")
        canvas.rect(label_width, y + 3, max(width, 1.0 if value else 0.0), row_height - 6, css,
                    f"{label}: {value}")
        canvas.text(label_width + width + 6, y + 15, str(value), "tick")
    return canvas.render()


def _bars(canvas: Canvas, bars: Sequence[Bar], x0: float, width: float,
          y_of: Callable[[float], float], base: float) -> None:
    slot = width / max(len(bars), 1)
    bar_width = min(slot * 0.6, 70)
    for position, bar in enumerate(bars):
        cx = x0 + slot * (position + 0.5)
        canvas.text(cx, base + 15, bar.label, "tick", "middle")
        if bar.value is None:
            canvas.text(cx, base - 6, bar.text, "tick muted", "middle")
            continue
        top = y_of(bar.value)
        canvas.rect(cx - bar_width / 2, top, bar_width, base - top, bar.css, bar.tooltip)
        label_y = top
        if bar.whisker is not None:
            whisker_y = y_of(bar.whisker)
            canvas.line(cx, top, cx, whisker_y, "whisker")
            canvas.line(cx - bar_width / 4, whisker_y, cx + bar_width / 4, whisker_y, "whisker")
            label_y = whisker_y
        canvas.text(cx, label_y - 6, bar.text, "value", "middle")


def range_panels(panels: Sequence[tuple[str, Sequence[Bar]]], *, unit: str, title: str,
                 description: str, dom_id: str, height: int = 260) -> str:
    """Small multiples: one panel of bars (with whiskers) per group, each on its own linear
    scale from zero, so a fast call kind stays readable beside a slow one."""
    canvas = Canvas(WIDTH, height, title, description, dom_id)
    if not panels:
        canvas.text(_LEFT, _TOP + 20, "nothing recorded", "tick")
        return canvas.render()
    panel_width = (WIDTH - 20) / len(panels)
    base, top = height - 40, _TOP + 34
    for index, (panel_title, bars) in enumerate(panels):
        x0 = 10 + panel_width * index
        largest = max((max(b.value or 0.0, b.whisker or 0.0) for b in bars), default=0.0)
        ceiling = nice_ticks(0, largest, 4)[-1] if largest > 0 else 1.0
        ceiling = max(ceiling, largest)
        y_of = _linear(base, top, ceiling)
        canvas.text(x0 + panel_width / 2, _TOP - 10, panel_title, "panel-title", "middle")
        for tick in nice_ticks(0, ceiling, 4):
            canvas.line(x0 + 52, y_of(tick), x0 + panel_width - 12, y_of(tick), "grid")
            canvas.text(x0 + 48, y_of(tick) + 4, f"{tick:g}", "tick", "end")
        canvas.text(x0 + 48, top - 16, unit, "tick", "end")
        _bars(canvas, bars, x0 + 52, panel_width - 64, y_of, base)
        canvas.line(x0 + 52, base, x0 + panel_width - 12, base, "axis")
    return canvas.render()


def grouped_bars(groups: Sequence[tuple[str, Sequence[Bar]]], *, title: str, description: str,
                 dom_id: str, height: int = 280) -> str:
    """Bars of fractions (0..1) in groups, on one 0-100 % scale."""
    canvas = Canvas(WIDTH, height, title, description, dom_id)
    base, top = height - 56, _TOP + 10
    plot_width = WIDTH - _LEFT - _RIGHT
    y_of = _linear(base, top, 1.0)
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        canvas.line(_LEFT, y_of(tick), WIDTH - _RIGHT, y_of(tick), "grid")
        canvas.text(_LEFT - 8, y_of(tick) + 4, f"{tick:.0%}", "tick", "end")
    canvas.text(14, (top + base) / 2, "hit rate", "axis-label vertical", "middle")
    if not groups:
        canvas.text(_LEFT + 10, base - 10, "no pool was queried", "tick")
    group_width = plot_width / max(len(groups), 1)
    for index, (label, bars) in enumerate(groups):
        x0 = _LEFT + group_width * index
        _bars(canvas, bars, x0 + group_width * 0.15, group_width * 0.7, y_of, base)
        canvas.text(x0 + group_width / 2, base + 36, label, "panel-title", "middle")
    canvas.line(_LEFT, base, WIDTH - _RIGHT, base, "axis")
    return canvas.render()
