"""Chart geometry for the dashboard's inline SVG: pure functions, no I/O, no markup.

The templates draw what these return (coordinates in SVG user units, labels as data),
so every string reaching the page goes through Jinja's escaping and the charts need no
JavaScript, no chart library and nothing from the network. Three shapes:

    line_chart        a telemetry series over time (polyline + points, axis extremes)
    paired_bars       reference vs current distribution over the same bins (drift)
    stacked_bar       one deployment phase's devices by status (a progress bar)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

WIDTH: Final = 600.0
HEIGHT: Final = 160.0
PAD_LEFT: Final = 64.0
PAD_RIGHT: Final = 12.0
PAD_Y: Final = 14.0


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class LineChart:
    width: float
    height: float
    polyline: str
    """'x,y x,y ...' for <polyline points=...>."""
    points: tuple[Point, ...]
    y_min: float
    y_max: float
    t_start: datetime
    t_end: datetime
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float


def _fmt(value: float) -> str:
    """A short label: integers plainly, otherwise 4 significant digits."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def line_chart(
    series: Sequence[tuple[datetime, float]], width: float = WIDTH, height: float = HEIGHT
) -> LineChart | None:
    """The chart of `series` (any order; drawn oldest to newest); None when it is empty.

    A flat series is drawn mid-height; a single point at the left edge.
    """
    values = sorted((t, v) for t, v in series if math.isfinite(v))
    if not values:
        return None
    left, right = PAD_LEFT, width - PAD_RIGHT
    top, bottom = PAD_Y, height - PAD_Y
    t0, t1 = values[0][0], values[-1][0]
    span_t = (t1 - t0).total_seconds()
    lo = min(v for _, v in values)
    hi = max(v for _, v in values)
    span_v = hi - lo

    def x_of(t: datetime) -> float:
        return left if span_t <= 0 else left + (t - t0).total_seconds() / span_t * (right - left)

    def y_of(v: float) -> float:
        return (top + bottom) / 2 if span_v <= 0 else bottom - (v - lo) / span_v * (bottom - top)

    points = tuple(
        Point(round(x_of(t), 2), round(y_of(v), 2), f"{t.isoformat()}: {_fmt(v)}")
        for t, v in values
    )
    return LineChart(
        width=width,
        height=height,
        polyline=" ".join(f"{p.x},{p.y}" for p in points),
        points=points,
        y_min=lo,
        y_max=hi,
        t_start=t0,
        t_end=t1,
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
    )


@dataclass(frozen=True)
class BarPair:
    label: str
    reference: float
    current: float
    x: float
    bar_width: float
    reference_y: float
    reference_height: float
    current_y: float
    current_height: float


@dataclass(frozen=True)
class PairedBars:
    width: float
    height: float
    baseline: float
    bars: tuple[BarPair, ...]
    top_share: float


def shares(counts: Sequence[float]) -> list[float]:
    """Counts as shares of their total (all zeros when the total is zero)."""
    total = float(sum(counts))
    return [0.0 if total <= 0 else c / total for c in counts]


def paired_bars(
    labels: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    width: float = WIDTH,
    height: float = HEIGHT,
) -> PairedBars:
    """Side-by-side bars per bin of two distributions, each given as counts or shares
    (normalised here, so a window of 50 and a reference of 50,000 compare)."""
    if not (len(labels) == len(reference) == len(current)):
        raise ValueError(
            f"labels, reference and current differ in length "
            f"({len(labels)}, {len(reference)}, {len(current)})"
        )
    ref, cur = shares(reference), shares(current)
    top_share = max([*ref, *cur, 0.0]) or 1.0
    left, right = PAD_LEFT, width - PAD_RIGHT
    top, bottom = PAD_Y, height - PAD_Y
    slot = (right - left) / max(1, len(labels))
    bar_w = slot * 0.4
    bars = []
    for i, label in enumerate(labels):
        x = left + i * slot + slot * 0.1
        rh = ref[i] / top_share * (bottom - top)
        ch = cur[i] / top_share * (bottom - top)
        bars.append(
            BarPair(
                label=label,
                reference=ref[i],
                current=cur[i],
                x=round(x, 2),
                bar_width=round(bar_w, 2),
                reference_y=round(bottom - rh, 2),
                reference_height=round(rh, 2),
                current_y=round(bottom - ch, 2),
                current_height=round(ch, 2),
            )
        )
    return PairedBars(
        width=width, height=height, baseline=bottom, bars=tuple(bars), top_share=top_share
    )


@dataclass(frozen=True)
class Segment:
    status: str
    count: int
    x: float
    width: float


def stacked_bar(
    counts: Mapping[str, int], order: Sequence[str], width: float = 300.0
) -> tuple[Segment, ...]:
    """Segments of a bar `width` long, one per status with devices, in `order` (statuses
    not in `order` follow, alphabetically)."""
    total = sum(max(0, c) for c in counts.values())
    if total <= 0:
        return ()
    statuses = [s for s in order if s in counts] + sorted(s for s in counts if s not in order)
    out, x = [], 0.0
    for status in statuses:
        n = max(0, counts[status])
        if n == 0:
            continue
        w = n / total * width
        out.append(Segment(status, n, round(x, 2), round(w, 2)))
        x += w
    return tuple(out)
