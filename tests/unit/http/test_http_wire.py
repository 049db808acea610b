"""Request serialisation (pure): round trips through an independent parser, and refusals."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.http import InvalidRequest
from qanat.http.wire import (
    CHUNKED,
    LAST_CHUNK,
    LENGTH,
    NO_BODY,
    encode_head,
    frame_chunk,
    prepare_headers,
)

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(TCHAR, min_size=1, max_size=20).map(str.encode)
# Field values: visible ASCII and inner spaces (RFC 9110 §5.5), no leading/trailing space.
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(
    str.encode
)
targets = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(
    lambda t: b"/" + t.encode()
)


class Parsed:
    """What httptools' request parser saw."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def parse(data: bytes) -> tuple[Parsed, httptools.HttpRequestParser]:
    parsed = Parsed()
    parser = httptools.HttpRequestParser(parsed)
    parser.feed_data(data)
    return parsed, parser


@given(
    method=st.sampled_from([b"GET", b"DELETE", b"OPTIONS", b"PATCH"]),
    target=targets,
    headers=st.lists(st.tuples(tokens, values), max_size=8),
)
def test_head_round_trips_through_an_independent_parser(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Method, target and every header (order and case kept) survive serialisation."""
    head = encode_head(method, target, [(b"host", b"h"), *headers])
    parsed, parser = parse(head)
    assert parser.get_method() == method
    assert parsed.url == target
    assert parsed.headers == [(b"host", b"h"), *headers]


@given(chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=10))
def test_chunk_framing_round_trips(chunks: list[bytes]) -> None:
    """Chunks framed one by one and ended with the last chunk decode to the same body."""
    head = encode_head(b"POST", b"/", [(b"host", b"h"), (b"transfer-encoding", b"chunked")])
    framed = b"".join(b"".join(frame_chunk(c)) for c in chunks) + LAST_CHUNK
    parsed, _ = parse(head + framed)
    assert parsed.complete and parsed.body == b"".join(chunks)


@given(
    prefix=st.binary(max_size=10),
    breaker=st.sampled_from([b"\r", b"\n", b"\r\n"]),
    suffix=st.binary(max_size=10),
)
def test_line_breaks_in_a_header_value_are_refused(
    prefix: bytes, breaker: bytes, suffix: bytes
) -> None:
    """Any CR or LF inside a field value raises InvalidRequest naming the header."""
    with pytest.raises(InvalidRequest, match="x-user"):
        encode_head(b"GET", b"/", [(b"host", b"h"), (b"x-user", prefix + breaker + suffix)])


@pytest.mark.parametrize(
    ("method", "target", "name", "match"),
    [
        (b"GET", b"/a b", b"x", "target"),
        (b"GET", b"/a\r\nb", b"x", "target"),
        (b"GE T", b"/", b"x", "method"),
        (b"GET", b"/", b"x\r\ny", "header name"),
    ],
)
def test_request_line_and_names_are_checked(
    method: bytes, target: bytes, name: bytes, match: str
) -> None:
    """Spaces or line breaks where the grammar forbids them are refused with the culprit named."""
    with pytest.raises(InvalidRequest, match=match):
        encode_head(method, target, [(name, b"v")])


def test_host_is_added_only_when_missing() -> None:
    """host is prepended when absent (with the port unless 80), kept when given anywhere."""
    fields, framing, _ = prepare_headers([(b"a", b"1")], "example.org", 8080, NO_BODY, 0)
    assert (list(fields), framing) == ([(b"host", b"example.org:8080"), (b"a", b"1")], NO_BODY)
    fields, _, _ = prepare_headers([(b"a", b"1"), (b"Host", b"x")], "h", 80, NO_BODY, 0)
    assert list(fields) == [(b"a", b"1"), (b"Host", b"x")]
    fields, _, _ = prepare_headers([], "::1", 80, NO_BODY, 0)
    assert list(fields) == [(b"host", b"[::1]")]


def test_body_framing_is_added_unless_given() -> None:
    """bytes get content-length, streams get chunked; caller-given framing wins."""
    host = [(b"host", b"h")]
    fields, framing, size = prepare_headers(host, "h", 80, LENGTH, 5)
    assert (fields[0], framing, size) == ((b"content-length", b"5"), LENGTH, 5)
    fields, framing, size = prepare_headers(host, "h", 80, CHUNKED, 0)
    assert (fields[0], framing, size) == ((b"transfer-encoding", b"chunked"), CHUNKED, None)
    given_length = [*host, (b"Content-Length", b"12")]
    assert prepare_headers(given_length, "h", 80, CHUNKED, 0)[1:] == (LENGTH, 12)
    given_te = [*host, (b"Transfer-Encoding", b"chunked")]
    assert prepare_headers(given_te, "h", 80, LENGTH, 5)[1:] == (CHUNKED, None)


@pytest.mark.parametrize(
    ("headers", "kind", "match"),
    [
        ([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")], LENGTH, "both"),
        ([(b"content-length", b"4")], LENGTH, "does not match"),
        ([(b"content-length", b"-1")], LENGTH, "non-negative"),
    ],
)
def test_contradictory_framing_is_refused(
    headers: list[tuple[bytes, bytes]], kind: int, match: str
) -> None:
    """Framing the server would have to guess at is refused before sending (RFC 9112 §6)."""
    with pytest.raises(InvalidRequest, match=match):
        prepare_headers([(b"host", b"h"), *headers], "h", 80, kind, 3)


@given(headers=st.lists(st.tuples(tokens, values), max_size=6))
def test_head_bytes_are_the_request_line_then_one_line_per_field(
    headers: list[tuple[bytes, bytes]],
) -> None:
    """The head is exactly the request line, ``name: value`` CRLF per field, then CRLF."""
    expected = b"GET /x HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    assert encode_head(b"GET", b"/x", headers) == expected + b"\r\n"
