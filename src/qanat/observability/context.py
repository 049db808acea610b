"""Per-request context shared by logs, traces and the outgoing client.

Context variables, so every log line and every outgoing call inside a request
sees the request's id, trace and deadline without passing them around.
"""

from __future__ import annotations

import contextvars
import re
import time

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "qanat_request_id", default=None
)
deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "qanat_deadline", default=None
)  # absolute, in time.monotonic() seconds

BUDGET_HEADER = "x-qanat-budget-ms"
"""The caller's remaining time budget in milliseconds, sent on every outgoing call."""

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"[A-Za-z0-9._\-]{1,128}")


def valid_request_id(value: str | None) -> bool:
    """True when an incoming ``X-Request-Id`` is safe to keep (and to log)."""
    # fullmatch, not match with "$": "$" also matches before a final newline.
    return value is not None and _SAFE_ID.fullmatch(value) is not None


def parse_budget(value: str | None) -> float | None:
    """Seconds of budget in a ``x-qanat-budget-ms`` header; None when absent or malformed."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        return None
    if ms != ms or ms > 86_400_000:  # NaN or absurd: ignore it rather than trust it
        return None
    return ms / 1000.0


def remaining(now: float | None = None) -> float | None:
    """Seconds left before the current request's deadline; None when there is none."""
    d = deadline.get()
    if d is None:
        return None
    return d - (time.monotonic() if now is None else now)
