"""PeakSeries: growable arrays, an incrementally kept min/max pyramid, per-column decimation."""

from __future__ import annotations

import numpy as np
import pytest
from graftlab.app.plots.decimate import FACTOR, PeakSeries


def brute_level(y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    size = FACTOR**k
    starts = np.arange(0, len(y), size)
    return np.fmin.reduceat(y, starts), np.fmax.reduceat(y, starts)


def test_series_grows_by_doubling():
    s = PeakSeries(capacity=4)
    s.extend([1, 2, 3], [1, 2, 3])
    s.extend(range(10), range(10))
    assert s.n == 13 and len(s.x) == 16
    x, y = s.view()
    assert list(x[:4]) == [1, 2, 3, 0] and len(y) == 13
    assert not s.sorted  # 0 after 3


def test_pyramid_matches_a_full_recomputation_after_ragged_appends():
    rng = np.random.default_rng(1)
    s = PeakSeries(capacity=8)
    ys = []
    while s.n < 50_000:
        m = int(rng.choice([1, 3, 10, 257, 4096]))
        y = rng.normal(size=m)
        y[rng.random(m) < 0.01] = np.nan  # NaN is skipped, not propagated
        s.extend(np.arange(s.n, s.n + m), y)
        ys.append(y)
    y = np.concatenate(ys)
    assert s.n == len(y) and s.sorted
    assert len(s.levels) >= 5
    for k, level in enumerate(s.levels, start=1):
        lo, hi = brute_level(y, k)
        assert level.n == len(lo)
        np.testing.assert_array_equal(level.lo[: level.n], lo)
        np.testing.assert_array_equal(level.hi[: level.n], hi)
    assert (s.x_min, s.x_max) == (0, len(y) - 1)


def test_decimation_keeps_the_extremes_of_the_visible_range():
    rng = np.random.default_rng(2)
    n = 1_000_003
    s = PeakSeries()
    y = rng.normal(size=n)
    y[123_457] = 50.0  # one-point spikes, one inside and one outside the window below
    y[900_001] = -60.0
    y[10] = 99.0
    s.extend(np.arange(n, dtype=float), y)
    for x0, x1 in [(None, None), (1_000.5, 950_000.0), (123_000.0, 124_000.0)]:
        a, b = s.window(x0, x1)
        columns = 700
        out_x, out_y = s.decimate(a, b, columns, x0, x1)
        assert len(out_x) <= 2 * columns + 4
        inner = slice(1 if a > 0 else 0, len(out_y) - (1 if b < n else 0))  # without neighbours
        assert np.nanmax(out_y[inner]) == np.nanmax(y[a:b])
        assert np.nanmin(out_y[inner]) == np.nanmin(y[a:b])
        assert out_x[inner][0] == a and out_x[inner][-1] == b - 1  # first and last point exact
        assert np.all(np.diff(out_x) >= 0)


def test_a_ramp_stays_a_straight_line():
    """Each column runs from its first to its last x in the direction of the data, so a ramp
    is decimated to points on the ramp itself (no one-pixel staircase)."""
    s = PeakSeries()
    x = np.arange(100_000, dtype=float)
    s.extend(x, 3 * x)
    out_x, out_y = s.decimate(0, 100_000, 300)
    assert len(out_x) <= 602
    np.testing.assert_array_equal(out_y, 3 * out_x)
    s.clear()
    s.extend(x, -x)  # falling, like a loss
    out_x, out_y = s.decimate(0, 100_000, 300)
    np.testing.assert_array_equal(out_y, -out_x)
    a, b = s.window(1_000.5, 950_000.0)
    out_x, out_y = s.decimate(a, b, 700, 1_000.5, 950_000.0)
    assert 99.0 not in out_y  # the spike at x=10 is outside the view


def test_a_spike_is_drawn_in_its_own_pixel_column():
    n, columns = 1_000_000, 800
    s = PeakSeries()
    y = np.zeros(n)
    spikes = [7, 333_333, 500_000, 999_990]
    y[spikes] = 1.0
    s.extend(np.arange(n, dtype=float), y)
    out_x, out_y = s.decimate(0, n, columns)
    per_pixel = (n - 1) / columns
    for i in spikes:  # drawn in the pixel column that holds it, or the next (bucket rounding)
        hit = out_x[out_y == 1.0]
        assert np.min(np.abs(hit // per_pixel - i // per_pixel)) <= 1, i
    assert len(out_x) <= 2 * columns + 2


def test_few_points_come_back_exactly_with_their_neighbours():
    n = 1_000_000
    s = PeakSeries()
    x = np.arange(1, n + 1, dtype=float)
    y = np.sin(x)
    s.extend(x, y)
    a, b = s.window(5000.0, 5099.0)
    assert (a, b) == (4999, 5099)  # exactly the 100 points 5000..5099
    out_x, out_y = s.decimate(a, b, 800, 5000.0, 5099.0)
    np.testing.assert_array_equal(out_x, np.arange(4999, 5101))  # plus one neighbour each side
    np.testing.assert_array_equal(out_y, y[4998:5100])
    out_x, _ = s.decimate(0, 3, 800)
    assert list(out_x) == [1, 2, 3, 4]  # right neighbour only: nothing left of index 0


def test_unsorted_x_falls_back_to_the_whole_series_binned_by_index():
    s = PeakSeries()
    s.extend(np.arange(10_000, dtype=float), np.zeros(10_000))
    s.extend([5.0, 6.0], [7.0, -7.0])  # e.g. history after a resume from an earlier checkpoint
    assert not s.sorted
    assert s.window(100.0, 200.0) == (0, s.n)
    out_x, out_y = s.decimate(0, s.n, 100, 100.0, 200.0)
    assert len(out_x) <= 204 and out_y.max() == 7.0 and out_y.min() == -7.0


def test_all_nan_columns_stay_gaps(recwarn):
    s = PeakSeries()
    y = np.ones(10_000)
    y[4000:6000] = np.nan  # a diverged stretch
    s.extend(np.arange(10_000, dtype=float), y)
    _x, out_y = s.decimate(0, 10_000, 100)
    assert np.isnan(out_y).any() and np.nanmax(out_y) == 1.0
    assert not recwarn.list


def test_clear_and_mismatched_lengths():
    s = PeakSeries()
    s.extend(np.arange(1000.0), np.arange(1000.0))
    version = s.version
    s.clear()
    assert s.n == 0 and s.levels == [] and s.version != version and s.sorted
    s.extend([3.0], [4.0])
    out_x, out_y = s.decimate(*s.window(), 10)
    assert list(out_x) == [3.0] and list(out_y) == [4.0]
    with pytest.raises(ValueError):
        s.extend([1.0, 2.0], [1.0])
