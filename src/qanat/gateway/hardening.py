"""Pure validation of a parsed HTTP/1.1 request head, and the server's limits.

httptools (llhttp, strict mode) already rejects, before we see a request:
Content-Length with Transfer-Encoding, duplicate or non-digit Content-Length,
a Transfer-Encoding whose final coding is not ``chunked`` (``xchunked``,
``identity``, ``chunked, identity``, two TE lines), whitespace before the
colon, obs-fold, CR/LF/NUL and other control bytes in values, bare LF line
ends, bad chunk sizes and non-token methods. ``check_head`` adds what llhttp
lets through (RFC 9112, REFERENCE.md "HTTP/1.1 at a proxy"):

- missing (HTTP/1.1) or duplicate ``Host``, or a Host that is not an authority;
- ``Transfer-Encoding`` that is not exactly ``chunked`` (e.g. ``gzip, chunked``:
  501, we do not decode transfer codings) or sent in an HTTP/1.0 request;
- an HTTP major version other than 1 (505);
- ``Expect`` other than ``100-continue`` (417);
- a Content-Length over the body limit, up front (413).

Every rejection is a ``RequestRejected`` carrying the status; the server
answers it and closes the connection, because after a framing error the
position of the next request in the byte stream cannot be trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qanat.errors import QanatError

MIB = 1024 * 1024


class RequestRejected(QanatError):
    """The request is refused with ``status``; ``detail`` says why (sent to the client).

    ``close`` says whether the connection must be closed after the answer
    (always, for framing errors).
    """

    def __init__(self, status: int, detail: str, *, close: bool = True) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.close = close


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits on what a client may send, with the answer when one is exceeded.

    Defaults follow nginx and Envoy where they agree (sources in docs/gateway.md).
    """

    max_header_bytes: int = 32 * 1024  # request line + header block -> 431 (nginx 4 x 8k)
    max_headers: int = 100  # header lines -> 431 (Envoy max_headers_count)
    max_url_bytes: int = 8 * 1024  # request target -> 414
    max_body_bytes: int = 10 * MIB  # Content-Length up front, chunked while streaming -> 413
    header_timeout: float = 10.0  # first byte to end of headers -> 408 and close
    body_timeout: float = 60.0  # max wait between two reads of a request body -> 408 and close
    idle_timeout: float = 75.0  # keep-alive idle -> silent close (nginx keepalive_timeout)
    max_connections: int = 10_000  # over the cap: 503 and close at once
    max_pipelined: int = 16  # queued pipelined requests before reading pauses
    shutdown_timeout: float = 10.0  # graceful shutdown: in-flight requests get this long

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")


@dataclass(slots=True)
class Head:
    """Facts about a validated request head that the server and proxy need."""

    host: bytes  # the Host value as sent (authority), b"" for HTTP/1.0 without Host
    content_length: int | None  # None when absent
    chunked: bool  # Transfer-Encoding: chunked
    expect_continue: bool  # Expect: 100-continue
    connection: tuple[bytes, ...]  # lower-cased tokens of the Connection header(s)


_AUTHORITY = re.compile(
    rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?"
)


_HEAD_FIELDS = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection",
                          b"expect"))


def check_head(
    version: str, headers: list[tuple[bytes, bytes]], max_body_bytes: int
) -> Head:
    """Validate a head that llhttp accepted; ``headers`` have lower-cased names.

    Returns the facts the server needs, or raises ``RequestRejected``.
    """
    if not version.startswith("1."):
        raise RequestRejected(505, f"HTTP/{version} is not supported; use HTTP/1.1")
    host: bytes | None = None
    content_length: int | None = None
    te: bytes | None = None
    expect = False
    connection: tuple[bytes, ...] = ()
    for name, value in headers:
        if name not in _HEAD_FIELDS:  # most fields: one set lookup
            continue
        if name == b"host":
            if host is not None:
                raise RequestRejected(400, "more than one Host header")
            host = value.strip()
            if _AUTHORITY.fullmatch(host) is None:
                raise RequestRejected(400, "the Host header is not a valid host[:port]")
        elif name == b"content-length":
            content_length = int(value)  # llhttp checked: digits, one header only
        elif name == b"transfer-encoding":
            te = value
        elif name == b"connection":
            connection += tuple(t.strip().lower() for t in value.split(b",") if t.strip())
        elif name == b"expect":
            if value.strip().lower() != b"100-continue":
                raise RequestRejected(417, "only 'Expect: 100-continue' is supported")
            expect = True
    if host is None:
        if version != "1.0":
            raise RequestRejected(400, "an HTTP/1.1 request needs a Host header")
        host = b""
    chunked = False
    if te is not None:
        chunked = _check_transfer_encoding(version, te)
    if content_length is not None and content_length > max_body_bytes:
        raise RequestRejected(
            413, f"the body ({content_length} bytes) is over the limit of {max_body_bytes} bytes"
        )
    return Head(host, content_length, chunked, expect, connection)


def _check_transfer_encoding(version: str, te: bytes) -> bool:
    if version == "1.0":
        raise RequestRejected(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
    codings = [c.strip().lower() for c in te.split(b",")]
    if codings[-1] != b"chunked":
        raise RequestRejected(400, "the final transfer coding must be 'chunked'")
    if len(codings) != 1:
        raise RequestRejected(501, "transfer codings other than 'chunked' are not supported")
    return True


def parse_error(exc: Exception) -> RequestRejected:
    """Map an httptools parse error to the answer (400 for every framing error)."""
    return RequestRejected(400, f"malformed request: {exc}")


def split_target(target: bytes) -> tuple[bytes | None, bytes, bytes]:
    """Split a request target into (authority or None, path, query including '?').

    Origin-form ``/p?q`` gives ``(None, b"/p", b"?q")``; absolute-form
    ``http://h/p?q`` gives ``(b"h", b"/p", b"?q")`` (RFC 9112 §3.2.2: the
    authority then replaces Host). Anything else (authority-form, ``*``,
    other schemes) raises ``RequestRejected`` (400).
    """
    authority: bytes | None = None
    if not target.startswith(b"/"):
        lower = target[:8].lower()
        if lower.startswith(b"http://"):
            rest = target[7:]
        elif lower.startswith(b"https://"):
            rest = target[8:]
        else:
            raise RequestRejected(400, "the request target must be a path (origin-form)")
        slash = rest.find(b"/")
        qmark = rest.find(b"?")
        end = min(i for i in (slash, qmark, len(rest)) if i >= 0)
        authority, target = rest[:end], rest[end:]
        if b"@" in authority or _AUTHORITY.fullmatch(authority) is None:
            raise RequestRejected(400, "the request target has an invalid authority")
        if not target.startswith(b"/"):
            target = b"/" + target
    q = target.find(b"?")
    if q < 0:
        return authority, target, b""
    return authority, target[:q], target[q:]


__all__ = ["Head", "Limits", "RequestRejected", "check_head", "parse_error", "split_target"]
