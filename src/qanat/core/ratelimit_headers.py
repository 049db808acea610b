"""Rate-limit response headers from a ``Decision``: pure functions, no I/O.

- ``Retry-After`` (RFC 9110 §10.2.3, sent with 429 per RFC 6585): whole
  seconds, rounded *up*, at least 1, so a client that waits as told is not
  refused again.
- ``RateLimit-Policy`` and ``RateLimit`` per the IETF httpapi draft
  (draft-ietf-httpapi-ratelimit-headers-10/11, Structured Field lists):
  ``RateLimit-Policy: "name";q=<quota>;w=<window seconds>`` and
  ``RateLimit: "name";r=<remaining>;t=<seconds>``. ``t`` is the effective
  window: when refused it is the wait (so ``Retry-After`` never points
  earlier than the window's end, as §6 asks); when allowed it is the time
  until the quota is whole again.
- ``X-RateLimit-Limit/-Remaining/-Reset`` as Kong and APISIX send them
  (``Reset`` in seconds from now, rounded up).
"""

from __future__ import annotations

import math
import re

from qanat.core.ratelimit_base import Decision

HeaderList = list[tuple[bytes, bytes]]
_TOKENISH = re.compile(r"^[\x20-\x7e]{1,64}$")


def _ceil(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))  # 2.0000000001 from float noise is still 2


def retry_after(d: Decision) -> bytes:
    """``Retry-After`` for a refused ``d``: integer seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(d.retry_after))).encode("ascii")


def _sf_string(name: str) -> str:
    if not _TOKENISH.match(name):
        raise ValueError(f"a policy name is 1-64 printable ASCII characters, got {name!r}")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_window(rate: float, burst: int) -> tuple[int, int]:
    """``(q, w)`` describing a ``rate``/s limit with ``burst``: ``burst`` per ``burst/rate`` s.

    The draft allows whole seconds only; a window under a second is widened
    to 1 s with the quota the rate gives in it (never less than ``burst``).
    """
    window = burst / rate
    if window >= 1:
        return burst, math.ceil(window - 1e-9)
    return max(burst, math.floor(rate)), 1


def ratelimit_policy(name: str, quota: int, window: int) -> bytes:
    """``RateLimit-Policy`` value: ``"name";q=<quota>;w=<window>`` (window in whole seconds)."""
    if quota < 0 or window < 1:
        raise ValueError(f"quota must be >= 0 and window >= 1 s, got q={quota} w={window}")
    return f"{_sf_string(name)};q={quota};w={window}".encode("ascii")


def ratelimit(name: str, d: Decision) -> bytes:
    """``RateLimit`` value: ``"name";r=<remaining>;t=<effective window seconds>``."""
    t = max(1, math.ceil(d.retry_after)) if not d.allowed else _ceil(d.reset_after)
    return f"{_sf_string(name)};r={max(0, d.remaining)};t={t}".encode("ascii")


def x_ratelimit(d: Decision) -> HeaderList:
    """``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (seconds from now, rounded up)."""
    return [
        (b"x-ratelimit-limit", str(d.limit).encode("ascii")),
        (b"x-ratelimit-remaining", str(max(0, d.remaining)).encode("ascii")),
        (b"x-ratelimit-reset", str(_ceil(d.reset_after)).encode("ascii")),
    ]


def rate_limit_headers(
    d: Decision,
    *,
    policy: str = "default",
    window: int | None = None,
    ietf: bool = True,
    legacy: bool = True,
) -> HeaderList:
    """Every header for ``d``: IETF fields (``RateLimit-Policy`` only when ``window`` is
    given, with ``q = d.limit``), the ``X-RateLimit-*`` trio, and ``Retry-After`` when refused.
    """
    out: HeaderList = []
    if ietf:
        if window is not None:
            out.append((b"ratelimit-policy", ratelimit_policy(policy, d.limit, window)))
        out.append((b"ratelimit", ratelimit(policy, d)))
    if legacy:
        out.extend(x_ratelimit(d))
    if not d.allowed:
        out.append((b"retry-after", retry_after(d)))
    return out


__all__ = [
    "policy_window",
    "rate_limit_headers",
    "ratelimit",
    "ratelimit_policy",
    "retry_after",
    "x_ratelimit",
]
