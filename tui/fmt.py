"""Numbers as an operator reads them in a narrow terminal: sizes, rates, durations, and
sparklines of a few recent rates."""

from __future__ import annotations

import math
from collections.abc import Sequence

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_BARS = "▁▂▃▄▅▆▇█"


def size(n: float) -> str:
    """``2048`` -> ``2.0 KiB``: one decimal beyond bytes, at most 9 characters."""
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the last unit returns")


RATE_WIDTH = 9  # what ``rate`` writes at most


def rate(bytes_per_s: float | None) -> str:
    """``107110.4`` -> ``104.6K/s`` (bytes, binary prefixes): at most RATE_WIDTH characters."""
    if bytes_per_s is None:
        return "-"
    n = bytes_per_s
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}B/s" if unit == "B" else f"{n:.1f}{unit}/s"
        n /= 1024
    raise AssertionError("unreachable: the last unit returns")


def duration(seconds: float | None) -> str:
    """``75`` -> ``1m15s``; under ten seconds with a tenth."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def sparkline(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last ``width`` values as bars scaled to their largest (or to ``top``, a scale
    shared with other plots), right-aligned; a value of zero is a blank, so an idle link
    reads as empty, not as a low bar."""
    shown = list(values)[-width:]
    top = max(shown, default=0.0) if top is None else max(top, *shown, 0.0)
    # A bar k eighths high for a value above (k - 1) / 8 of the largest, up to k / 8.
    bars = [" " if v <= 0 else _BARS[math.ceil(v / top * len(_BARS)) - 1] for v in shown]
    return "".join(bars).rjust(width)


def buckets(values: Sequence[float], width: int, per: int) -> list[float]:
    """The last ``width * per`` values as up to ``width`` means of ``per`` each, the
    newest last (the oldest bucket may hold fewer): a plot of minutes in a few columns."""
    shown = list(values)[-width * per :]
    first = len(shown) % per or per
    groups = [shown[:first]] + [shown[i : i + per] for i in range(first, len(shown), per)]
    return [sum(g) / len(g) for g in groups if g]


def short_id(node_id: str) -> str:
    return f"{node_id[:8]}…"
