"""How numbers read in the GUI: exact counts with thousands separators, compact sizes."""

from __future__ import annotations


def exact(n: int) -> str:
    """``103546880`` -> ``103,546,880``."""
    return f"{n:,}"


def compact(n: float) -> str:
    """``70553706496`` -> ``70.55 B``; ``67108864`` -> ``67.1 M``; small numbers stay exact."""
    n = float(n)
    for limit, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            value = n / limit
            digits = 2 if value < 100 else 1
            return f"{value:.{digits}f} {unit}"
    return f"{int(n):,}"


def percent(p: float) -> str:
    """Percentages small enough to matter: ``0.147 %``, ``12.5 %``."""
    if p == 0:
        return "0 %"
    if p < 0.01:
        return f"{p:.4f} %"
    if p < 1:
        return f"{p:.3f} %"
    return f"{p:.1f} %"


def size_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def duration(seconds: float | None) -> str:
    """``3725`` -> ``1:02:05``; None -> ``–``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
