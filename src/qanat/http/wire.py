"""Serialise HTTP/1.1 requests (RFC 9112 §3 request line, §5 fields, §6-7 framing).

Pure functions: bytes in, bytes out, no I/O. Headers are sent as given, in
order; the only additions are ``host`` when the caller gave none (RFC 9112
§3.2 makes it mandatory) and the body framing field when the caller gave
neither ``content-length`` nor ``transfer-encoding``.
"""

from __future__ import annotations

from collections.abc import Sequence

from qanat.http.errors import InvalidRequest

Header = tuple[bytes, bytes]

#: The zero-size chunk and empty trailer section that end a chunked body (RFC 9112 §7.1).
LAST_CHUNK = b"0\r\n\r\n"

# Body framing modes.
NO_BODY = 0
LENGTH = 1
CHUNKED = 2


_COLON_SPACE_JOIN = b": ".join


def encode_head(method: bytes, target: bytes, headers: Sequence[Header]) -> bytes:
    """The request line and header section, ending with the empty line.

    Raises :class:`InvalidRequest` when a CR or LF inside the method, target or
    a header would split the message (request smuggling), or when the method
    or target contains a space. Header names are otherwise sent unchecked (the
    hot path does not scan each one); callers pass names from code or from a
    parser that already validated them.
    """
    # One join of "name: value" pairs joined by CRLF, mapped in C: no bytecode per field.
    if headers:
        fields = b"\r\n".join(map(_COLON_SPACE_JOIN, headers))
        head = b"".join((method, b" ", target, b" HTTP/1.1\r\n", fields, b"\r\n\r\n"))
    else:
        head = b"".join((method, b" ", target, b" HTTP/1.1\r\n\r\n"))
    # One LF and one CR per line is the whole check: cheaper than scanning
    # every field, and any injected line break changes the counts.
    lines = len(headers) + 2
    if (
        head.count(b"\n") != lines
        or head.count(b"\r") != lines
        or target.find(b" ") >= 0  # not ``b" " in``: that formats and drops a TypeError
        or method.find(b" ") >= 0
    ):
        _explain_bad_head(method, target, headers)
    return head


def _explain_bad_head(method: bytes, target: bytes, headers: Sequence[Header]) -> None:
    """Raise an :class:`InvalidRequest` naming the offending part."""
    bad = (b"\r", b"\n")
    if any(c in method for c in (*bad, b" ")) or not method:
        raise InvalidRequest(f"method {method!r}: must be a token without spaces or CR/LF")
    if any(c in target for c in (*bad, b" ")) or not target:
        raise InvalidRequest(
            f"target {target!r}: must be non-empty with no spaces or CR/LF; percent-encode them"
        )
    for name, value in headers:
        if not name or any(c in name for c in (*bad, b":", b" ")):
            raise InvalidRequest(f"header name {name!r}: must be a token (no ':', space, CR, LF)")
        if any(c in value for c in bad):
            raise InvalidRequest(
                f"header {name!r} value {value!r}: CR/LF are not allowed in field values"
            )
    raise InvalidRequest("request head contains a stray CR or LF")  # pragma: no cover


def prepare_headers(
    headers: Sequence[Header], host: str, port: int, body_kind: int, length: int
) -> tuple[Sequence[Header], int, int | None]:
    """Add ``host`` and body framing if missing; return (headers, framing, content_length).

    ``body_kind`` is ``NO_BODY``, ``LENGTH`` (a bytes body of ``length`` bytes)
    or ``CHUNKED`` (a stream). A caller-given ``content-length`` turns a stream
    into a length-delimited body of that size; a caller-given
    ``transfer-encoding`` means the body is chunked.
    """
    has_host = bool(headers) and headers[0][0].lower() == b"host"
    if has_host and body_kind == NO_BODY:
        return headers, NO_BODY, None  # the common case: nothing to scan
    given_length: int | None = None
    chunked = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"host":
            has_host = True
        elif lname == b"content-length":
            given_length = _parse_length(value)
        elif lname == b"transfer-encoding":
            chunked = True
    if given_length is not None and chunked:
        raise InvalidRequest(
            "both content-length and transfer-encoding given; send only one (RFC 9112 §6.2)"
        )
    extra: list[Header] = []
    if not has_host:
        extra.append((b"host", _host_header(host, port)))
    if body_kind == NO_BODY:
        framing, size = NO_BODY, given_length
    elif chunked:
        framing, size = CHUNKED, None
    elif given_length is not None:
        if body_kind == LENGTH and given_length != length:
            raise InvalidRequest(
                f"content-length {given_length} does not match the {length}-byte body"
            )
        framing, size = LENGTH, given_length
    elif body_kind == LENGTH:
        extra.append((b"content-length", b"%d" % length))
        framing, size = LENGTH, length
    else:
        extra.append((b"transfer-encoding", b"chunked"))
        framing, size = CHUNKED, None
    return ([*extra, *headers] if extra else headers), framing, size


def _parse_length(value: bytes) -> int:
    text = value.strip()
    if not text.isdigit():
        raise InvalidRequest(f"content-length {value!r}: must be a non-negative integer")
    return int(text)


def _host_header(host: str, port: int) -> bytes:
    name = f"[{host}]" if ":" in host else host
    encoded = name.encode("ascii") if name.isascii() else name.encode("idna")
    return encoded if port == 80 else b"%s:%d" % (encoded, port)


def frame_chunk(data: bytes) -> list[bytes]:
    """One chunk of a chunked body: size in hex, CRLF, data, CRLF (RFC 9112 §7.1)."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]


__all__ = [
    "CHUNKED",
    "LAST_CHUNK",
    "LENGTH",
    "NO_BODY",
    "encode_head",
    "frame_chunk",
    "prepare_headers",
]
