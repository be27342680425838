"""Sticky axis ranges: live plots change their view rarely, to round numbers."""

from __future__ import annotations

import math

import pytest
from graftlab.app.plots.sticky_range import StickyX, StickyY, nice_ceil, nice_step


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (1.2, 1.5), (7, 7.5), (8, 10),
                                                 (101, 150), (0.031, 0.04), (5000, 5000)])
def test_nice_ceil(value, expected):
    assert math.isclose(nice_ceil(value), expected)


@pytest.mark.parametrize(("span", "expected"), [(10, 2), (3, 1), (0.7, 0.2), (240, 50)])
def test_nice_step(span, expected):
    assert math.isclose(nice_step(span), expected)


def test_the_step_axis_spans_the_planned_run_and_never_moves():
    x = StickyX()
    ranges = {x.fit(1, hi, limit=500) for hi in range(1, 501)}
    assert ranges == {(1, 500)}


def test_without_a_limit_the_step_axis_grows_a_few_times_per_decade():
    x = StickyX()
    ranges = [x.fit(0, hi) for hi in range(1, 10_001)]
    steps = range(1, 10_001)
    assert all(lo <= 0 and hi <= end for (lo, end), hi in zip(ranges, steps, strict=True))
    assert len(set(ranges)) <= 8 * 4 + 1  # a handful per decade, not one per step
    assert all(hi >= 2 / 3 * end for (_lo, end), hi in zip(ranges, range(1, 10_001), strict=True)
               if hi >= 10)  # the curve fills at least two thirds of the width


def test_past_the_planned_end_the_axis_grows_again():
    x = StickyX()
    assert x.fit(0, 90, limit=100) == (0, 100)
    lo, hi = x.fit(0, 120, limit=100)
    assert lo == 0 and hi >= 120


def test_y_keeps_its_range_while_the_data_stays_inside_and_follows_it_out():
    y = StickyY()
    first = y.fit(2.0, 4.0)
    assert first[0] <= 2.0 and first[1] >= 4.0
    assert y.fit(2.1, 3.9) == first  # noise inside: no change
    moved = y.fit(1.0, 4.0)  # the loss fell below: the range follows, to round numbers
    assert moved != first and moved[0] <= 1.0
    step = nice_step(3.0 * 1.2)
    assert math.isclose(moved[0] / step, round(moved[0] / step))
    assert y.fit(3.9, 4.0) != moved  # the data now fills too little of it: shrink


def test_y_of_non_negative_data_never_gets_negative_room():
    assert StickyY().fit(0.01, 5.0)[0] == 0.0
    assert StickyY().fit(-1.0, 5.0)[0] < -1.0


def test_a_constant_gets_a_band_around_it():
    lo, hi = StickyY().fit(900.0, 900.0)
    assert lo < 900.0 < hi
