"""Small charts of ``report.html`` as inline SVG, written directly (no matplotlib).

The report's figures are line charts (training curves, memorization), grouped bars (class
balance) and a scatter plot (worker quality for many workers). Each function returns one
``<svg>`` element that scales with the page (``viewBox``): axes with round-number ticks
(:func:`ticks`) and grid lines, axis labels, a title and a legend row above the plot. Colours not given
follow matplotlib's default cycle, so the charts look as the matplotlib figures did.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Line", "bar_chart", "line_chart", "scatter_chart", "ticks", "COLOURS"]

#: matplotlib's default colour cycle ("tab10").
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

_FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"'
_MARGIN = {"left": 58.0, "right": 14.0, "top": 30.0, "bottom": 46.0}
#: The height of the legend's row above the plot area.
_LEGEND_ROW = 18.0


@dataclass
class Line:
    """One series of a :func:`line_chart`: points ``(x, y)`` (a NaN ``y`` breaks the line),
    dots at the points with ``dots``, and star markers at ``stars`` (``(x, y)`` pairs)."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    colour: str | None = None
    dots: bool = False
    stars: Sequence[tuple[float, float]] = ()


def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: float) -> str:
    """A coordinate with two decimals, without trailing zeros."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values (steps of 1, 2 or 5 times a power of ten) from ``lo`` to ``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    out = []
    i = first
    while i * step <= hi + step * 1e-9:
        out.append(round(i * step, 12))
        i += 1
    return out


def _tick_text(v: float, values: Sequence[float]) -> str:
    """``v`` with as many decimals as the step between ``values`` needs."""
    step = min((abs(b - a) for a, b in zip(values, values[1:])), default=1.0) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{decimals}f}"


def _limits(values: np.ndarray, lo: float | None, hi: float | None, pad: float = 0.05) -> tuple[float, float]:
    """Axis limits: the given ones, else the finite data's range with ``pad`` of it added."""
    finite = values[np.isfinite(values)]
    dmin, dmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = dmax - dmin if dmax > dmin else max(abs(dmax), 1.0)
    return (dmin - pad * span if lo is None else lo), (dmax + pad * span if hi is None else hi)


class _Axes:
    """The mapping from data to pixels of one chart, and its frame, grid, ticks and labels."""

    def __init__(self, width: float, height: float, xlim: tuple[float, float], ylim: tuple[float, float], log_x: bool = False, legend: bool = False) -> None:
        self.w, self.h, self.log_x = width, height, log_x
        self.x0, self.x1 = _MARGIN["left"], width - _MARGIN["right"]
        self.y0, self.y1 = height - _MARGIN["bottom"], _MARGIN["top"] + (_LEGEND_ROW if legend else 0.0)
        self.xlim = tuple(math.log10(v) for v in xlim) if log_x else xlim
        self.ylim = ylim if ylim[1] > ylim[0] else (ylim[0] - 0.5, ylim[0] + 0.5)
        if self.xlim[1] <= self.xlim[0]:
            self.xlim = (self.xlim[0] - 0.5, self.xlim[0] + 0.5)

    def px(self, x: Any) -> Any:
        """A value's (or an array of values') x pixel."""
        v = np.log10(x) if self.log_x else x
        return self.x0 + (v - self.xlim[0]) / (self.xlim[1] - self.xlim[0]) * (self.x1 - self.x0)

    def py(self, y: Any) -> Any:
        """A value's (or an array of values') y pixel."""
        return self.y0 - (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0]) * (self.y0 - self.y1)

    def frame(self, title: str, xlabel: str, ylabel: str, xticks: Sequence[tuple[float, str]] | None = None, xrotate: bool = False, xfont: int = 11) -> list[str]:
        """Grid lines, tick labels, the frame, the axis labels and the title."""
        out: list[str] = []
        yt = [v for v in ticks(*self.ylim) if self.ylim[0] - 1e-12 <= v <= self.ylim[1] + 1e-12]
        for v in yt:
            y = _num(self.py(v))
            out.append(f'<line x1="{_num(self.x0)}" y1="{y}" x2="{_num(self.x1)}" y2="{y}" stroke="#e3e6ea"/>')
            out.append(f'<text x="{_num(self.x0 - 6)}" y="{y}" text-anchor="end" dominant-baseline="middle" font-size="11">{_tick_text(v, yt)}</text>')
        if xticks is None:
            if self.log_x:
                lo, hi = math.floor(self.xlim[0]), math.ceil(self.xlim[1])
                xticks = [(10.0**p, f"{10.0**p:g}") for p in range(lo, hi + 1) if self.xlim[0] - 1e-9 <= p <= self.xlim[1] + 1e-9]
            else:
                xt = ticks(*self.xlim)
                xticks = [(v, _tick_text(v, xt)) for v in xt if self.xlim[0] - 1e-12 <= v <= self.xlim[1] + 1e-12]
        for v, text in xticks:
            x = _num(self.px(v))
            out.append(f'<line x1="{x}" y1="{_num(self.y0)}" x2="{x}" y2="{_num(self.y0 + 4)}" stroke="#5b6473"/>')
            if xrotate:
                out.append(f'<text transform="translate({x},{_num(self.y0 + 7)}) rotate(-90)" text-anchor="end" dominant-baseline="middle" font-size="{xfont}">{_e(text)}</text>')
            else:
                out.append(f'<text x="{x}" y="{_num(self.y0 + 16)}" text-anchor="middle" font-size="{xfont}">{_e(text)}</text>')
        out.append(f'<rect x="{_num(self.x0)}" y="{_num(self.y1)}" width="{_num(self.x1 - self.x0)}" height="{_num(self.y0 - self.y1)}" fill="none" stroke="#5b6473"/>')
        if xlabel:
            out.append(f'<text x="{_num((self.x0 + self.x1) / 2)}" y="{_num(self.h - 6)}" text-anchor="middle" font-size="12">{_e(xlabel)}</text>')
        if ylabel:
            out.append(f'<text transform="translate(14,{_num((self.y0 + self.y1) / 2)}) rotate(-90)" text-anchor="middle" font-size="12">{_e(ylabel)}</text>')
        if title:
            out.append(f'<text x="{_num((self.x0 + self.x1) / 2)}" y="18" text-anchor="middle" font-size="13" font-weight="600">{_e(title)}</text>')
        return out

    def legend(self, entries: Sequence[tuple[str, str]]) -> list[str]:
        """Colour swatches and names in one row between the title and the plot area
        (room made by ``legend=True``), so that they never cover the data."""
        if not entries:
            return []
        widths = [22 + 6.5 * len(name) for name, _ in entries]
        x = (self.x0 + self.x1) / 2 - (sum(widths) + 12 * (len(widths) - 1)) / 2
        cy = _MARGIN["top"] + _LEGEND_ROW / 2 - 2
        out = []
        for (name, colour), w in zip(entries, widths):
            out.append(f'<rect x="{_num(x)}" y="{_num(cy - 4)}" width="12" height="8" fill="{colour}"/>')
            out.append(f'<text x="{_num(x + 16)}" y="{_num(cy)}" dominant-baseline="middle" font-size="11">{_e(name)}</text>')
            x += w + 12
        return out


def _svg(width: float, height: float, label: str, parts: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_num(width)} {_num(height)}" width="{_num(width)}" height="{_num(height)}" '
        f'role="img" aria-label="{_e(label)}" {_FONT} fill="#1d2330"><title>{_e(label)}</title>' + "".join(parts) + "</svg>"
    )


def _star(x: float, y: float, colour: str, r: float = 7.0) -> str:
    points = []
    for i in range(10):
        a = math.pi / 2 + i * math.pi / 5
        rr = r if i % 2 == 0 else r * 0.45
        points.append(f"{_num(x + rr * math.cos(a))},{_num(y - rr * math.sin(a))}")
    return f'<polygon points="{" ".join(points)}" fill="{colour}" stroke="#000" stroke-width="0.8"/>'


def line_chart(lines: Sequence[Line], title: str = "", xlabel: str = "", ylabel: str = "", ylim: tuple[float | None, float | None] = (None, None), width: float = 560, height: float = 300, legend: bool = True) -> str:
    """Lines (:class:`Line`) on one pair of axes; ``ylim`` bounds (``None``: from the data)."""
    xs = np.concatenate([np.asarray(s.x, dtype=float) for s in lines]) if lines else np.zeros(0)
    ys = np.concatenate([np.asarray(s.y, dtype=float) for s in lines]) if lines else np.zeros(0)
    ax = _Axes(width, height, _limits(xs, None, None, pad=0.03), _limits(ys, *ylim), legend=legend and bool(lines))
    parts = ax.frame(title, xlabel, ylabel)
    entries = []
    for i, s in enumerate(lines):
        colour = s.colour or COLOURS[i % len(COLOURS)]
        x, y = np.asarray(s.x, dtype=float), np.asarray(s.y, dtype=float)
        segment: list[str] = []
        for xv, yv in [*zip(x, y), (math.nan, math.nan)]:  # a NaN ends a segment
            if math.isfinite(xv) and math.isfinite(yv):
                segment.append(f"{_num(ax.px(xv))},{_num(ax.py(yv))}")
            elif segment:
                parts.append(f'<polyline points="{" ".join(segment)}" fill="none" stroke="{colour}" stroke-width="1.8" stroke-linejoin="round"/>')
                segment = []
        if s.dots:
            parts += [f'<circle cx="{_num(ax.px(a))}" cy="{_num(ax.py(b))}" r="2.4" fill="{colour}"/>' for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
        parts += [_star(ax.px(a), ax.py(b), colour) for a, b in s.stars if math.isfinite(a) and math.isfinite(b)]
        entries.append((s.name, colour))
    if legend:
        parts += ax.legend(entries)
    return _svg(width, height, title or ylabel, parts)


def bar_chart(categories: Sequence[Any], series: dict[str, np.ndarray], title: str = "", ylabel: str = "", width: float | None = None, height: float = 300) -> str:
    """Grouped bars: one group per category, one bar per series (its own colour)."""
    k, n = len(categories), max(1, len(series))
    width = width or max(560.0, 18.0 * k * n + _MARGIN["left"] + _MARGIN["right"] + 20)
    shown = min(max((len(str(c)) for c in categories), default=1), 24)  # names are cut at 24 characters
    # turned where the names (at about 6.6 px a character of the 11 px font) would overlap
    rotate = k > 8 or shown * 6.6 > 0.95 * (width - _MARGIN["left"] - _MARGIN["right"]) / max(1, k)
    bottom = _MARGIN["bottom"] + (shown * 6.0 if rotate else 0.0)
    values = np.concatenate([np.asarray(v, dtype=float) for v in series.values()]) if series else np.zeros(1)
    top = float(np.nanmax(values)) if values.size and np.isfinite(values).any() else 1.0
    ax = _Axes(width, height + bottom - _MARGIN["bottom"], (-0.5, k - 0.5), (0.0, (top if top > 0 else 1.0) * 1.08), legend=bool(series))
    ax.y0 = ax.h - bottom
    bar = 0.8 / n
    labels = [(float(j), str(c) if len(str(c)) <= 24 else str(c)[:23] + "…") for j, c in enumerate(categories)]
    parts = ax.frame(title, "", ylabel, xticks=labels, xrotate=rotate, xfont=11 if k <= 30 else 7)
    entries = []
    for i, (name, vals) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        for j, v in enumerate(np.asarray(vals, dtype=float)):
            if not math.isfinite(v):
                continue
            left = ax.px(j + (i - (n - 1) / 2) * bar - bar / 2)
            right = ax.px(j + (i - (n - 1) / 2) * bar + bar / 2)
            y = ax.py(v)
            parts.append(f'<rect x="{_num(left)}" y="{_num(y)}" width="{_num(max(0.5, right - left))}" height="{_num(max(0.0, ax.y0 - y))}" fill="{colour}"><title>{_e(name)}, {_e(categories[j])}: {v:.3f}</title></rect>')
        entries.append((name, colour))
    parts += ax.legend(entries)
    return _svg(width, ax.h, title or ylabel, parts)


def scatter_chart(x: Sequence[float], y: Sequence[float], title: str = "", xlabel: str = "", ylabel: str = "", log_x: bool = False, ylim: tuple[float | None, float | None] = (None, None), width: float = 620, height: float = 340) -> str:
    """Points ``(x, y)`` (half transparent); ``log_x`` for a logarithmic x axis (positive ``x`` only).
    Points that fall on the same pixel are drawn as one circle as opaque as the stacked
    circles would be, so a crowd of 200,000 workers stays a chart of at most a circle per pixel."""
    xv, yv = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xv) & np.isfinite(yv) & ((xv > 0) if log_x else True)
    xv, yv = xv[keep], yv[keep]
    if log_x:
        lo, hi = (float(xv.min()), float(xv.max())) if xv.size else (1.0, 10.0)
        xlim = (10.0 ** math.floor(math.log10(lo)), 10.0 ** math.ceil(math.log10(hi)) if hi > lo else 10.0 ** (math.floor(math.log10(lo)) + 1))
    else:
        xlim = _limits(xv, None, None)
    ax = _Axes(width, height, xlim, _limits(yv, *ylim), log_x=log_x)
    parts = ax.frame(title, xlabel, ylabel)
    px, py = ax.px(xv), ax.py(yv)
    _, first, count = np.unique(np.round(np.stack([px, py], 1)), axis=0, return_index=True, return_counts=True)
    opacity = 1 - 0.4 ** count  # n circles of opacity 0.6 on one spot
    parts += [f'<circle cx="{_num(px[i])}" cy="{_num(py[i])}" r="2.6" fill="{COLOURS[0]}" fill-opacity="{_num(o)}"/>' for i, o in zip(first, opacity)]
    return _svg(width, height, title or ylabel, parts)
