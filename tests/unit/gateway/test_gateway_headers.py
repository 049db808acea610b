"""Forwarding headers: hop-by-hop removal, X-Forwarded-*, Via, request id, traceparent."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from qanat.gateway.config import HeaderOps
from qanat.gateway.headers import (
    HOP_BY_HOP,
    VIA,
    HeaderEdit,
    forward_request_headers,
    forward_response_headers,
    next_traceparent,
    request_id_for,
    valid_request_id,
)

TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _fwd(headers: list[tuple[bytes, bytes]], connection: tuple[bytes, ...] = (),
         **kw: object) -> dict[bytes, list[bytes]]:
    out = forward_request_headers(
        headers, connection, host=b"api.example", peer=b"10.0.0.9", proto=b"http",
        request_id=b"rid-1", **kw  # type: ignore[arg-type]
    )
    got: dict[bytes, list[bytes]] = {}
    for name, value in out:
        got.setdefault(name, []).append(value)
    return got


def test_hop_by_hop_and_connection_named_fields_are_removed() -> None:
    """Connection, every field it names, Keep-Alive, TE, Upgrade, Proxy-Connection are dropped."""
    got = _fwd(
        [(b"connection", b"keep-alive, x-secret"), (b"x-secret", b"s"), (b"keep-alive", b"5"),
         (b"te", b"trailers"), (b"upgrade", b"h2c"), (b"proxy-connection", b"x"),
         (b"transfer-encoding", b"chunked"), (b"accept", b"*/*")],
        connection=(b"keep-alive", b"x-secret"),
    )
    for name in (b"connection", b"x-secret", b"keep-alive", b"te", b"upgrade",
                 b"proxy-connection", b"transfer-encoding"):
        assert name not in got
    assert got[b"accept"] == [b"*/*"]


def test_forwarding_headers_append_and_overwrite() -> None:
    """XFF gets the peer appended, Via gets '1.1 qanat', XF-Proto and XF-Host are ours."""
    got = _fwd([(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https"),
                (b"x-forwarded-host", b"evil"), (b"via", b"1.0 edge")],
               forwarded_host=b"public.example")
    assert got[b"x-forwarded-for"] == [b"1.2.3.4, 10.0.0.9"]
    assert got[b"x-forwarded-proto"] == [b"http"]
    assert got[b"x-forwarded-host"] == [b"public.example"]
    assert got[b"via"] == [b"1.0 edge, 1.1 qanat"]
    assert got[b"host"] == [b"api.example"]
    assert got[b"x-request-id"] == [b"rid-1"]


def test_request_id_kept_when_safe_else_generated() -> None:
    """A safe X-Request-Id is kept; an unsafe one is replaced by 32 hex digits."""
    assert request_id_for([(b"x-request-id", b"abc-123_X.y")]) == b"abc-123_X.y"
    for bad in (b"", b"a b", b"x" * 129, b"<script>", b"a\xffb"):
        new = request_id_for([(b"x-request-id", bad)])
        assert re.fullmatch(rb"[0-9a-f]{32}", new)
    assert request_id_for([]) != request_id_for([])
    assert valid_request_id(b"x" * 128) and not valid_request_id(b"x" * 129)


def test_valid_traceparent_keeps_trace_and_gets_new_parent() -> None:
    """A valid traceparent keeps trace id and flags; the parent id becomes the gateway's span."""
    out, kept = next_traceparent(TRACE)
    assert kept
    assert out[:36] == TRACE[:36] and out[-3:] == TRACE[-3:]
    assert out[36:52] != TRACE[36:52] and re.fullmatch(rb"[0-9a-f]{16}", out[36:52])


def test_invalid_traceparent_starts_a_new_trace_and_drops_tracestate() -> None:
    """All-zero ids, version ff, upper-case hex or bad lengths start a new trace."""
    for bad in (
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        b"garbage",
    ):
        got = _fwd([(b"traceparent", bad), (b"tracestate", b"k=v")])
        (tp,) = got[b"traceparent"]
        assert re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01", tp)
        assert tp[3:35] != bad[3:35]
        assert b"tracestate" not in got
    got = _fwd([(b"traceparent", TRACE), (b"tracestate", b"k=v")])
    assert got[b"tracestate"] == [b"k=v"]


def test_route_edits_remove_set_then_add() -> None:
    """remove drops, set replaces every occurrence, add appends; gateway fields can be removed."""
    edit = HeaderEdit.from_ops(HeaderOps(add={"x-add": "1"}, set={"x-set": "new"},
                                         remove=["x-gone", "via"]))
    got = _fwd([(b"x-set", b"old"), (b"x-set", b"old2"), (b"x-gone", b"g"), (b"x-add", b"0")],
               edit=edit)
    assert got[b"x-set"] == [b"new"]
    assert got[b"x-add"] == [b"0", b"1"]
    assert b"x-gone" not in got and b"via" not in got


def test_response_headers_lose_hop_by_hop_and_echo_request_id() -> None:
    """Upstream Connection-named and hop-by-hop fields go; Via and X-Request-Id are added."""
    out = forward_response_headers(
        [(b"Connection", b"close, X-Internal"), (b"X-Internal", b"1"),
         (b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"text/plain"),
         (b"X-Request-Id", b"spoofed")],
        b"rid-9",
        HeaderEdit.from_ops(HeaderOps(set={"x-frame-options": "DENY"})),
    )
    assert out == [(b"content-type", b"text/plain"), (b"via", b"1.1 qanat"),
                   (b"x-request-id", b"rid-9"), (b"x-frame-options", b"DENY")]


@given(st.lists(st.tuples(st.sampled_from([b"a", b"connection", b"te", b"x-y", b"upgrade",
                                           b"keep-alive", b"b"]),
                          st.binary(max_size=5)), max_size=10))
def test_no_hop_by_hop_field_ever_leaves(headers: list[tuple[bytes, bytes]]) -> None:
    """Whatever the client sends, no hop-by-hop field is forwarded and others keep order."""
    out = forward_request_headers(headers, (b"x-y",), host=b"h", peer=b"p", proto=b"http",
                                  request_id=b"r")
    names = [n for n, _ in out]
    assert not {b"connection", b"te", b"upgrade", b"keep-alive", b"x-y"} & set(names)
    kept = [(n, v) for n, v in headers if n in (b"a", b"b")]
    assert [(n, v) for n, v in out if n in (b"a", b"b")] == kept


# W3C Trace Context §3.2, version 00, stated independently of the gateway's code.
_TRACEPARENT_RE = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TP_CHARS = st.sampled_from(list(b"0123456789abcdefABx- \t"))


@given(st.one_of(
    st.lists(_TP_CHARS, min_size=55, max_size=55).map(bytes),
    st.tuples(st.sampled_from([b"00", b"01", b"0-"]),
              st.sampled_from([b"0" * 32, b"a" * 32, b"4bf92f3577b34da6a3ce929d0e0e4736",
                               b"4BF92F3577B34DA6A3CE929D0E0E4736"]),
              st.sampled_from([b"0" * 16, b"00f067aa0ba902b7", b"00f067aa-ba902b7"]),
              st.sampled_from([b"01", b"00", b"ff", b"0g"])).map(lambda t: b"-".join(t)),
))
def test_the_hand_checked_traceparent_answers_as_the_regex(value: bytes) -> None:
    """For 55-byte values, the hand check keeps exactly the traceparents the W3C regex keeps."""
    m = _TRACEPARENT_RE.fullmatch(value.strip())
    valid = m is not None and m.group(1) != b"0" * 32 and m.group(2) != b"0" * 16
    out, kept = next_traceparent(value)
    assert kept is valid
    if valid:
        assert m is not None
        assert out[:36] == b"00-" + m.group(1) + b"-" and out[52:] == b"-" + m.group(3)
    assert _TRACEPARENT_RE.fullmatch(out) is not None


def _response_headers_reference(headers: list[tuple[bytes, bytes]],
                                request_id: bytes) -> list[tuple[bytes, bytes]]:
    """The two-pass definition: Connection-named fields first, then the rest."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    drop = HOP_BY_HOP | {b"x-request-id"} | named
    out, via = [], []
    for name, value in headers:
        if name.lower() == b"via":
            via.append(value)
        elif name.lower() not in drop:
            out.append((name.lower(), value))
    return [*out, (b"via", b", ".join([*via, VIA])), (b"x-request-id", request_id)]


@given(st.lists(st.tuples(
    st.sampled_from([b"Content-Type", b"connection", b"Connection", b"VIA", b"x-a", b"X-B",
                     b"keep-alive", b"x-request-id", b"etag"]),
    st.sampled_from([b"x-a", b"X-B, etag", b"close", b"1.1 up", b"v"])), max_size=8))
def test_forward_response_headers_in_one_pass_matches_the_definition(
    headers: list[tuple[bytes, bytes]],
) -> None:
    assert forward_response_headers(headers, b"rid") == _response_headers_reference(headers, b"rid")


def test_host_goes_first_so_the_pool_has_nothing_to_scan() -> None:
    """RFC 9110 §7.2: Host first; the pool's ``prepare_headers`` then keeps the list as is."""
    from qanat.http.wire import NO_BODY, prepare_headers

    out = forward_request_headers([(b"accept", b"*/*"), (b"host", b"old")], (), host=b"api",
                                  peer=b"10.0.0.9", proto=b"http", request_id=b"rid")
    assert out[0] == (b"host", b"api") and [n for n, _ in out].count(b"host") == 1
    assert prepare_headers(out, "10.0.0.1", 80, NO_BODY, 0)[0] is out
