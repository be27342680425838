"""Min/max ("peak") decimation for long curves: what a plot of `columns` pixels needs to show.

`PeakSeries` stores x/y in growable arrays (capacity doubles) and keeps a pyramid of per-bucket
minima and maxima beside them: level k holds one (min, max) pair per FACTOR**k points. Appending
m points updates O(m + levels * FACTOR) entries, so a live run pays per batch, not per point held.

`decimate(a, b, columns)` turns the points a..b-1 into at most two points per pixel column (the
column's minimum and maximum, so a one-step spike stays visible at any zoom), plus the first and
last point exactly. It reads the coarsest pyramid level that still has two buckets per column and
bins those by x, so the work is O(columns), whatever the number of points in view. When the range
holds no more than 2 * columns points, the points themselves are returned.

Pure numpy, no Qt: the plot widget decides which range is visible and how wide it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FACTOR = 4  # points per bucket, level to level
TOP = 64  # stop adding levels once the coarsest one has at most this many buckets


def _grown(arr: np.ndarray, used: int, need: int) -> np.ndarray:
    """`arr` if it holds `need` values, else a copy of its first `used` values with capacity doubled
    until it does."""
    if need <= len(arr):
        return arr
    capacity = max(len(arr), 1)
    while capacity < need:
        capacity *= 2
    grown = np.empty(capacity)
    grown[:used] = arr[:used]
    return grown


def _reduce(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min of `lo` and max of `hi` per run of FACTOR values (the last run may be shorter).
    NaN is skipped (fmin/fmax); a bucket of only NaN stays NaN, which the plot draws as a gap."""
    full = len(lo) // FACTOR * FACTOR
    out_lo = np.fmin.reduce(lo[:full].reshape(-1, FACTOR), axis=1)
    out_hi = np.fmax.reduce(hi[:full].reshape(-1, FACTOR), axis=1)
    if full < len(lo):
        out_lo = np.append(out_lo, np.fmin.reduce(lo[full:]))
        out_hi = np.append(out_hi, np.fmax.reduce(hi[full:]))
    return out_lo, out_hi


class _Level:
    """One pyramid level: per-bucket minima and maxima, growable."""

    def __init__(self) -> None:
        self.lo = np.empty(256)
        self.hi = np.empty(256)
        self.n = 0

    def write(self, start: int, lo: np.ndarray, hi: np.ndarray) -> None:
        need = start + len(lo)
        self.lo = _grown(self.lo, self.n, need)
        self.hi = _grown(self.hi, self.n, need)
        self.lo[start:need] = lo
        self.hi[start:need] = hi
        self.n = need


class PeakSeries:
    """x/y float64 arrays that grow by doubling, with a min/max pyramid kept up to date.

    `view()` is the filled part. `version` changes with every change, so a cached drawing of the
    series can tell whether it is stale. x is expected to be non-decreasing (steps); when it is
    not, `window` gives the whole series and `decimate` bins by index instead of by x.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.x = np.empty(capacity)
        self.y = np.empty(capacity)
        self.n = 0
        self.version = 0
        self.sorted = True
        self.x_min = self.x_max = np.nan  # x extent of all points (NaN skipped)
        self.levels: list[_Level] = []  # levels[k - 1] has buckets of FACTOR**k points

    def extend(self, xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray) -> None:
        xs, ys = np.asarray(xs, dtype=float).ravel(), np.asarray(ys, dtype=float).ravel()
        if len(xs) != len(ys):
            raise ValueError(f"{len(xs)} x values but {len(ys)} y values")
        if not len(xs):
            return
        old, need = self.n, self.n + len(xs)
        if self.sorted:  # NaN compares false, so it counts as unsorted
            ordered = bool(np.all(xs[1:] >= xs[:-1]))
            self.sorted = ordered and (old == 0 or bool(xs[0] >= self.x[old - 1]))
        self.x = _grown(self.x, old, need)
        self.y = _grown(self.y, old, need)
        self.x[old:need] = xs
        self.y[old:need] = ys
        self.n = need
        self.version += 1
        self.x_min = float(np.fmin(self.x_min, np.fmin.reduce(xs)))
        self.x_max = float(np.fmax(self.x_max, np.fmax.reduce(xs)))
        self._update_levels(old)

    def _update_levels(self, first: int) -> None:
        """Recompute every bucket that holds an index >= `first` of the level below."""
        below_lo, below_hi, below_n = self.y, self.y, self.n
        k = 0
        while True:
            if k == len(self.levels):
                if below_n <= TOP:
                    return
                self.levels.append(_Level())
                first = 0  # a new level is computed whole (amortised: levels shrink by FACTOR)
            level = self.levels[k]
            start = first // FACTOR
            lo, hi = _reduce(below_lo[start * FACTOR : below_n], below_hi[start * FACTOR : below_n])
            level.write(start, lo, hi)
            below_lo, below_hi, below_n = level.lo, level.hi, level.n
            first = start
            k += 1

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[: self.n], self.y[: self.n]

    def clear(self) -> None:
        self.n = 0
        self.version += 1
        self.sorted = True
        self.x_min = self.x_max = np.nan
        self.levels.clear()

    def window(self, x0: float | None = None, x1: float | None = None) -> tuple[int, int]:
        """Index range [a, b) of the points with x0 <= x <= x1; everything when x0/x1 is None or
        x is not sorted."""
        if x0 is None or x1 is None or not self.sorted:
            return 0, self.n
        x = self.x[: self.n]
        return int(np.searchsorted(x, x0, "left")), int(np.searchsorted(x, x1, "right"))

    def decimate(self, a: int, b: int, columns: int,
                 x0: float | None = None, x1: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Points to draw for indices [a, b) on a plot `columns` pixels wide showing x0..x1.

        Returns new arrays: the points themselves when there are at most 2 * columns of them,
        else the first point, then a min and a max per pixel column (at the column's first and
        last x, in the order the data runs), then the last point. The
        neighbours a-1 and b, where they exist, are added exactly, so lines run on to the edges
        of the view. x0/x1 (the visible x range) default to the first and last x in [a, b).
        """
        columns = max(int(columns), 1)
        left, right = max(a - 1, 0), min(b + 1, self.n)
        if b - a <= 2 * columns:
            return self.x[left:right].copy(), self.y[left:right].copy()
        lo, hi, first_index = self._buckets(a, b, columns)
        x = self.x
        lo_x = x[a] if x0 is None else x0
        span = (x[b - 1] if x1 is None else x1) - lo_x
        if self.sorted and span > 0:  # pixel column of each bucket, from its first point's x
            col = np.floor((x[first_index] - lo_x) * (columns / span))
            np.clip(col, 0, columns - 1, out=col)
        else:
            col = (first_index - a) * columns // (b - a)
        starts = np.flatnonzero(col[1:] != col[:-1]) + 1
        starts = np.concatenate(([0], starts))
        col_lo = np.fmin.reduceat(lo, starts)
        col_hi = np.fmax.reduceat(hi, starts)
        # Each column becomes a line from its first to its last x, running min -> max where the
        # data rises across the column and max -> min where it falls: a smooth ramp stays a
        # straight line instead of a one-pixel staircase, and noise still fills the envelope.
        first = first_index[starts]
        last = np.append(first[1:], b) - 1
        rising = self.y[last] >= self.y[first]
        pairs_x = np.empty((len(starts), 2))
        pairs_x[:, 0], pairs_x[:, 1] = x[first], x[last]
        pairs_y = np.empty((len(starts), 2))
        pairs_y[:, 0] = np.where(rising, col_lo, col_hi)
        pairs_y[:, 1] = np.where(rising, col_hi, col_lo)
        head = np.arange(left, a + 1)  # neighbour (if any) and the first point, exactly
        tail = np.arange(b - 1, right)  # the last point and neighbour (if any)
        out_x = np.concatenate((x[head], pairs_x.ravel(), x[tail]))
        out_y = np.concatenate((self.y[head], pairs_y.ravel(), self.y[tail]))
        return out_x, out_y

    def _buckets(self, a: int, b: int, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(min, max, first index) of buckets covering [a, b) exactly: whole buckets from the
        coarsest level that still gives at least 2 * columns of them, raw partial buckets at
        either end."""
        k = 0
        while k < len(self.levels) and (b - a) // FACTOR ** (k + 1) >= 2 * columns:
            k += 1
        size = FACTOR**k
        ja, jb = -(-a // size), b // size  # whole buckets ja..jb-1
        if k == 0:
            mid_lo = mid_hi = self.y[ja:jb]
        else:
            level = self.levels[k - 1]
            mid_lo, mid_hi = level.lo[ja:jb], level.hi[ja:jb]
        lo_parts, hi_parts, index_parts = [], [], []
        if a < ja * size:
            lo_parts.append([np.fmin.reduce(self.y[a : ja * size])])
            hi_parts.append([np.fmax.reduce(self.y[a : ja * size])])
            index_parts.append([a])
        lo_parts.append(mid_lo)
        hi_parts.append(mid_hi)
        index_parts.append(np.arange(ja, jb) * size)
        if jb * size < b:
            lo_parts.append([np.fmin.reduce(self.y[jb * size : b])])
            hi_parts.append([np.fmax.reduce(self.y[jb * size : b])])
            index_parts.append([jb * size])
        return np.concatenate(lo_parts), np.concatenate(hi_parts), np.concatenate(index_parts)
