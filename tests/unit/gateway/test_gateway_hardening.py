"""Request-head hardening: what llhttp rejects for us, and what check_head adds."""

from __future__ import annotations

import httptools
import pytest

from qanat.gateway.hardening import Limits, RequestRejected, check_head, split_target

MAX = 1000


def _head(*lines: str, version: str = "1.1") -> list[tuple[bytes, bytes]]:
    out = []
    for line in lines:
        name, _, value = line.partition(":")
        out.append((name.strip().lower().encode(), value.strip().encode()))
    return out


class _Sink:
    def on_header(self, name: bytes, value: bytes) -> None: ...


# The framing attacks llhttp (strict mode) refuses before our code runs. If a
# future httptools turns on a leniency, these fail and check_head must grow.
LLHTTP_REJECTS = {
    "CL with TE": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate CL": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    "CL list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
    "CL sign": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
    "TE xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
    "TE chunked, identity": b"POST / HTTP/1.1\r\nHost: a\r\n"
    b"Transfer-Encoding: chunked, identity\r\n\r\n",
    "TE twice": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: a\r\nFoo : bar\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nFoo: bar\r\n baz\r\n\r\n",
    "NUL in value": b"GET / HTTP/1.1\r\nHost: a\r\nFoo: b\x00r\r\n\r\n",
    "CR in value": b"GET / HTTP/1.1\r\nHost: a\r\nFoo: b\rr\r\n\r\n",
    "LF in value": b"GET / HTTP/1.1\r\nHost: a\r\nFoo: b\nr\r\n\r\n",
    "bare LF lines": b"GET / HTTP/1.1\nHost: a\n\n",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\n",
    "lower-case method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("raw", LLHTTP_REJECTS.values(), ids=LLHTTP_REJECTS.keys())
def test_llhttp_rejects_framing_attacks(raw: bytes) -> None:
    """httptools raises a parse error for each classic smuggling or bad-field pattern."""
    parser = httptools.HttpRequestParser(_Sink())
    with pytest.raises(httptools.HttpParserError):
        parser.feed_data(raw)


def test_accepts_a_plain_request_and_reports_its_facts() -> None:
    """A valid head yields its host, length, framing and Connection tokens."""
    head = check_head("1.1", _head("Host: a.example:80", "Content-Length: 12",
                                   "Connection: keep-alive, X-Secret"), MAX)
    assert head.host == b"a.example:80"
    assert head.content_length == 12
    assert not head.chunked
    assert head.connection == (b"keep-alive", b"x-secret")


@pytest.mark.parametrize(
    ("version", "lines", "status"),
    [
        ("1.1", [], 400),  # missing Host
        ("1.1", ["Host: a", "Host: b"], 400),
        ("1.1", ["Host: a", "Host: a"], 400),
        ("1.1", ["Host: a b"], 400),
        ("1.1", ["Host: a/b"], 400),
        ("1.1", ["Host: a@b"], 400),
        ("1.1", ["Host: a", "Transfer-Encoding: gzip, chunked"], 501),
        ("1.1", ["Host: a", "Transfer-Encoding: chunked, gzip"], 400),
        ("1.0", ["Transfer-Encoding: chunked"], 400),
        ("2.0", ["Host: a"], 505),
        ("1.1", ["Host: a", "Expect: something"], 417),
        ("1.1", ["Host: a", f"Content-Length: {MAX + 1}"], 413),
    ],
)
def test_rejects_what_llhttp_lets_through(version: str, lines: list[str], status: int) -> None:
    """Host problems, unsupported codings, HTTP/2 over HTTP/1, odd Expect, oversize CL."""
    with pytest.raises(RequestRejected) as info:
        check_head(version, _head(*lines), MAX)
    assert info.value.status == status
    assert info.value.close


def test_http10_without_host_is_allowed() -> None:
    """HTTP/1.0 predates Host: its absence is not an error (RFC 9112 §3.2)."""
    assert check_head("1.0", [], MAX).host == b""


def test_chunked_and_expect_continue_are_recognised() -> None:
    """'Transfer-Encoding: Chunked' (any case) and 'Expect: 100-continue' are accepted."""
    head = check_head("1.1", _head("Host: a", "Transfer-Encoding: Chunked",
                                   "Expect: 100-Continue"), MAX)
    assert head.chunked and head.expect_continue


def test_ipv6_host_literal_is_accepted() -> None:
    """A bracketed IPv6 literal with a port is a valid Host."""
    assert check_head("1.1", _head("Host: [::1]:8080"), MAX).host == b"[::1]:8080"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/a/b?x=1", (None, b"/a/b", b"?x=1")),
        (b"/", (None, b"/", b"")),
        (b"http://h.example:81/p?q", (b"h.example:81", b"/p", b"?q")),
        (b"HTTP://h.example", (b"h.example", b"/", b"")),
        (b"https://h?q", (b"h", b"/", b"?q")),
    ],
)
def test_split_target_origin_and_absolute_form(
    target: bytes, expected: tuple[bytes | None, bytes, bytes]
) -> None:
    """Origin-form splits path/query; absolute-form also yields the authority."""
    assert split_target(target) == expected


@pytest.mark.parametrize("target", [b"*", b"example.com:443", b"ftp://h/x", b"http://u@h/x"])
def test_split_target_rejects_other_forms(target: bytes) -> None:
    """Asterisk, authority-form, other schemes and userinfo get 400."""
    with pytest.raises(RequestRejected) as info:
        split_target(target)
    assert info.value.status == 400


def test_limits_must_be_positive() -> None:
    """A zero or negative limit is a clear ValueError naming the field."""
    with pytest.raises(ValueError, match="max_body_bytes"):
        Limits(max_body_bytes=0)
