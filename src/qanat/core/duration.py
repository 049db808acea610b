"""Durations as people write them in configuration: ``250ms``, ``5s``, ``1m30s``, ``2h``.

A bare number means seconds. Go's and Dapr's units are accepted (``ns``,
``us``/``µs``, ``ms``, ``s``, ``m``, ``h``), so a Dapr resiliency spec reads
unchanged.
"""

from __future__ import annotations

import math
import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``; raise ValueError saying what is allowed when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '5s' or '250ms', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_units(text)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _parse_units(text: str) -> float:
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise ValueError(
                f"expected a duration such as '5s', '250ms' or '1m30s' "
                f"(units: ns, us, ms, s, m, h), got {text!r}"
            )
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"expected a duration such as '5s' or '250ms', got {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """A short human form: ``250ms``, ``5s``, ``1m30s``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s" if rest else f"{int(minutes)}m"
