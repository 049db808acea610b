"""Header work at the proxy: hop-by-hop removal, forwarding headers, request
id, trace context, and the per-route add/set/remove edits. Pure.

Sources: RFC 9110 §7.6.1 (Connection and hop-by-hop fields), §7.6.3 (Via);
the de-facto X-Forwarded-* headers as Envoy and nginx write them at the edge
(X-Forwarded-For appends the peer; X-Forwarded-Proto/-Host are overwritten,
because a client must not be able to claim it came over TLS); W3C Trace
Context (traceparent); APISIX request-id (keep a valid incoming id, else make one).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qanat.gateway.config import HeaderOps

HeaderList = list[tuple[bytes, bytes]]

# Never forwarded in either direction (RFC 9110 §7.6.1, plus Proxy-Connection).
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"te", b"transfer-encoding", b"upgrade",
     b"proxy-connection", b"trailer")
)
# Request fields the gateway writes itself (replaced, or appended to, below).
_OWN_REQUEST = HOP_BY_HOP | {
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via",
    b"x-request-id", b"traceparent", b"tracestate", b"expect", b"host",
}
_OWN_RESPONSE = HOP_BY_HOP | {b"x-request-id"}
_OWN_WHOLE_RESPONSE = _OWN_RESPONSE | {b"content-length"}
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_HEX_DASH = b"0123456789abcdef-"
VIA = b"1.1 qanat"


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    """A compiled add/set/remove edit: drop ``remove`` and ``set`` names, then append."""

    drop: frozenset[bytes]
    append: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def from_ops(cls, ops: HeaderOps) -> HeaderEdit:
        drop = {n.lower().encode() for n in ops.remove} | {n.lower().encode() for n in ops.set}
        append = [(n.lower().encode(), v.encode()) for n, v in ops.set.items()]
        append += [(n.lower().encode(), v.encode()) for n, v in ops.add.items()]
        return cls(frozenset(drop), tuple(append))

    @property
    def empty(self) -> bool:
        return not self.drop and not self.append


NO_EDIT = HeaderEdit(frozenset(), ())


def valid_request_id(value: bytes) -> bool:
    """True when an incoming X-Request-Id is safe to keep (``[A-Za-z0-9._-]{1,128}``)."""
    return _REQUEST_ID.fullmatch(value) is not None


# Ids come from the ``random`` module, not ``os.urandom``: a request or trace id
# must be unique, not secret (W3C Trace Context asks for random, not
# cryptographic, trace ids), and ``os.urandom`` costs a getrandom(2) syscall per
# call on the hot path. ``random`` reseeds itself in a forked child, so workers
# forked from one parent do not repeat each other's ids.
_bits = random.getrandbits


def new_request_id() -> bytes:
    """A fresh 32-hex-digit request id (128 random bits)."""
    return b"%032x" % _bits(128)


def request_id_for(headers: HeaderList) -> bytes:
    """The first X-Request-Id in ``headers`` when it is valid, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            return value if _REQUEST_ID.fullmatch(value) is not None else new_request_id()
    return new_request_id()


def next_traceparent(incoming: bytes | None) -> tuple[bytes, bool]:
    """The traceparent to send upstream, and whether the incoming one was kept.

    A valid version-00 value keeps its trace id and flags and gets a new parent
    id (the gateway's own span); anything else starts a new sampled trace.
    """
    if incoming is not None:
        # The usual value, exactly "00-<32 hex>-<16 hex>-<2 hex>", is checked by hand (a
        # C-level translate and count): cheaper than a regex match and its groups.
        # Anything else (white space around it, a bad shape) takes the regex path.
        if (len(incoming) == 55 and incoming[35] == 45 and incoming[52] == 45
                and incoming.startswith(b"00-") and incoming.count(45) == 3
                and not incoming.translate(None, _HEX_DASH)):
            trace = incoming[3:35]
            if trace != _ZERO_TRACE and incoming[36:52] != _ZERO_SPAN:
                return b"00-%s-%016x-%s" % (trace, _bits(64) or 1, incoming[53:]), True
            return b"00-%032x-%016x-01" % (_bits(128) or 1, _bits(64) or 1), False
        m = _TRACEPARENT.fullmatch(incoming.strip())
        if m is not None and m.group(1) != _ZERO_TRACE and m.group(2) != _ZERO_SPAN:
            return b"00-%s-%016x-%s" % (m.group(1), _bits(64) or 1, m.group(3)), True
    # all-zero ids are invalid (W3C Trace Context §3.2.2.3, §3.2.2.4): never make one
    return b"00-%032x-%016x-01" % (_bits(128) or 1, _bits(64) or 1), False


def forward_request_headers(
    headers: HeaderList,
    connection: Iterable[bytes],
    *,
    host: bytes,
    peer: bytes,
    proto: bytes,
    request_id: bytes,
    forwarded_host: bytes | None = None,
    edit: HeaderEdit = NO_EDIT,
) -> HeaderList:
    """Headers to send upstream.

    ``headers`` have lower-case names. Removes hop-by-hop fields and every
    field named in ``connection``; sends ``host`` as Host; appends ``peer`` to
    X-Forwarded-For and ``1.1 qanat`` to Via; overwrites X-Forwarded-Proto and
    X-Forwarded-Host (``forwarded_host``, default ``host``: what the client
    asked for); sends ``request_id`` (see ``request_id_for``); keeps a valid traceparent
    (with a new parent id; else a new trace, dropping tracestate); then applies
    the route's ``edit``.
    """
    named = frozenset(connection) if connection else None
    drop = _OWN_REQUEST | named if named else _OWN_REQUEST
    # One pass keeps the client's fields and sets aside the few the gateway
    # rewrites (usually just Host), which are then looked at one by one.
    out: HeaderList = [(b"host", host)]  # first (RFC 9110 §7.2): the pool then scans nothing
    own: HeaderList = []
    for pair in headers:
        if pair[0] in drop:
            own.append(pair)
        else:
            out.append(pair)
    xff: list[bytes] = []
    via: list[bytes] = []
    traceparent: bytes | None = None
    tracestate: list[tuple[bytes, bytes]] = []
    for name, value in own:
        if name == b"host":
            continue
        if name == b"x-forwarded-for":
            xff.append(value.strip())
        elif name == b"via":
            via.append(value.strip())
        elif name == b"traceparent":
            traceparent = value if traceparent is None else b"invalid"  # two: invalid
        elif name == b"tracestate" and not (named and name in named):
            tracestate.append((name, value))
    parent, kept = next_traceparent(traceparent)
    xff.append(peer)
    out += (
        (b"x-forwarded-for", b", ".join([v for v in xff if v]) if len(xff) > 1 else peer),
        (b"x-forwarded-proto", proto),
        (b"x-forwarded-host", host if forwarded_host is None else forwarded_host),
        (b"via", b", ".join([*via, VIA]) if via else VIA),
        (b"x-request-id", request_id),
        (b"traceparent", parent),
    )
    if kept:
        out.extend(tracestate)
    if edit.drop:
        out = [pair for pair in out if pair[0] not in edit.drop]
    if edit.append:
        out.extend(edit.append)
    return out


def forward_response_headers(
    headers: HeaderList, request_id: bytes, edit: HeaderEdit = NO_EDIT, *,
    whole: bool = False,
) -> HeaderList:
    """Upstream response headers for the client: hop-by-hop removed (and every
    field the upstream's Connection names), the request id echoed, Via added,
    then the route's ``edit``. Names come back lower-case. ``whole``: the body
    is passed on complete, and the server frames it: Content-Length is left out."""
    named: set[bytes] = set()
    out: HeaderList = []
    via: list[bytes] = []
    own = _OWN_WHOLE_RESPONSE if whole else _OWN_RESPONSE
    for name, value in headers:  # one pass, one lower() per name
        lname = name.lower()
        if lname == b"via":
            via.append(value)
        elif lname not in own:
            out.append((lname, value))
        elif lname == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    if named:  # fields the upstream's Connection names are hop-by-hop too
        out = [pair for pair in out if pair[0] not in named]
    via.append(VIA)
    out.append((b"via", b", ".join(via)))
    out.append((b"x-request-id", request_id))
    if edit.drop:
        out = [pair for pair in out if pair[0] not in edit.drop]
    if edit.append:
        out.extend(edit.append)
    return out


__all__ = [
    "HOP_BY_HOP",
    "NO_EDIT",
    "HeaderEdit",
    "forward_request_headers",
    "forward_response_headers",
    "new_request_id",
    "next_traceparent",
    "request_id_for",
    "valid_request_id",
]
