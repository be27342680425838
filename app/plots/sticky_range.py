"""Axis ranges for live plots that change rarely, in steps that are round numbers.

A plot that auto-ranges on every update rebuilds its axes (tick positions and tick text) every
time: offscreen, the six live plots took ~70 ms per redraw with ranges that moved and ~6 ms with
ranges that stayed put (`tests/bench/bench_ui_stall.py` measured the window's stalls). So each
curve reports bounds that only move when its data leaves them (or fills less than `min_fill` of
them), and then jump to round values with some room to grow: the view changes a few times per
run instead of on every batch. Pure Python, no Qt.
"""

from __future__ import annotations

import math

# Upper x bounds are taken from this sequence (times powers of ten): the curve always fills
# at least 2/3 of the width, and the axis changes about six times per decade of steps.
_NICE = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0)


def nice_ceil(value: float) -> float:
    """The smallest number of the form n * 10**k with n in _NICE that is >= value (> 0)."""
    if value <= 0 or not math.isfinite(value):
        return value
    decade = 10.0 ** math.floor(math.log10(value))
    for n in _NICE:
        if n * decade >= value * (1 - 1e-12):
            return n * decade
    return 10.0 * decade


def nice_step(span: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) of about span / 5."""
    raw = span / 5
    decade = 10.0 ** math.floor(math.log10(raw))
    for n in (1.0, 2.0, 5.0):
        if n * decade >= raw:
            return n * decade
    return 10.0 * decade


class StickyX:
    """Bounds of a growing step axis.

    With `limit` (the run's last planned step) the axis spans the whole run from its first
    step, like a progress track, and never moves while the run lasts: a moving step axis
    rebuilds the ticks of all six linked plots at once (~50 ms offscreen). Without a limit (or
    past it) the end jumps to the next round number, about six times per decade of steps.
    """

    def __init__(self) -> None:
        self.bounds: tuple[float, float] | None = None

    def fit(self, lo: float, hi: float, limit: float | None = None) -> tuple[float, float]:
        if limit is not None and lo < limit and hi <= limit:
            self.bounds = (lo, limit)
            return self.bounds
        if self.bounds is not None and self.bounds[0] <= lo and hi <= self.bounds[1]:
            return self.bounds
        self.bounds = (lo, nice_ceil(hi - lo) + lo if hi > lo else hi + 1)
        return self.bounds


class StickyY:
    """Bounds of a value axis: kept while the data stays inside them and spans at least
    `min_fill` of them; else the data's range with 10 % room each side, rounded out to a step."""

    def __init__(self, min_fill: float = 0.4) -> None:
        self.min_fill = min_fill
        self.bounds: tuple[float, float] | None = None

    def fit(self, lo: float, hi: float) -> tuple[float, float]:
        if self.bounds is not None:
            b0, b1 = self.bounds
            if b0 <= lo and hi <= b1 and (hi - lo) >= self.min_fill * (b1 - b0):
                return self.bounds
        span = hi - lo
        if span <= 0:  # a constant: a band around it
            span = abs(hi) * 0.1 or 1.0
        step = nice_step(span * 1.2)
        low = math.floor((lo - 0.1 * span) / step) * step
        if lo >= 0 > low:  # a count, a rate, a loss: no negative room below zero
            low = 0.0
        self.bounds = (low, math.ceil((hi + 0.1 * span) / step) * step)
        return self.bounds
