"""Where credentials travel in a request: one header, a query parameter, a cookie.

Pure helpers over the gateway's request shape (``headers`` as a list of
``(name, value)`` byte pairs with lower-case names, ``query`` as the raw bytes
after ``?``). They find a credential and remove it again, so the upstream
never sees what the client authenticated with (APISIX ``hide_credentials``).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

Headers = Sequence[tuple[bytes, bytes]]
HeaderList = list[tuple[bytes, bytes]]


class Ambiguous(ValueError):
    """The same credential was sent more than once with different values."""


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (compared case-insensitively), in order."""
    return [v for k, v in headers if k == name or k.lower() == name]


def single_header(headers: Headers, name: bytes) -> bytes | None:
    """The one value of ``name``, None when absent; ``Ambiguous`` when values differ."""
    return one_value(header_values(headers, name), name)


def _split_query(query: bytes) -> list[bytes]:
    return [part for part in query.split(b"&") if part]


def _param_name(part: bytes) -> bytes:
    name = part.split(b"=", 1)[0]
    return unquote_to_bytes(name.replace(b"+", b" "))


def query_value(query: bytes, name: bytes) -> bytes | None:
    """The decoded value of query parameter ``name``; ``Ambiguous`` when it repeats differently."""
    found: bytes | None = None
    for part in _split_query(query):
        if _param_name(part) != name:
            continue
        raw = part.split(b"=", 1)[1] if b"=" in part else b""
        value = unquote_to_bytes(raw.replace(b"+", b" "))
        if found is not None and value != found:
            raise Ambiguous(f"the query parameter {name.decode('latin-1')!r} repeats")
        found = value
    return found


def strip_query(query: bytes, name: bytes) -> bytes:
    """``query`` without any ``name=...`` parameter (other parameters kept byte for byte)."""
    if name not in unquote_to_bytes(query.replace(b"+", b" ")):
        return query  # fast path: the name cannot be there
    return b"&".join(p for p in _split_query(query) if _param_name(p) != name)


def _cookie_pairs(value: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for item in value.split(b";"):
        name, sep, val = item.strip().partition(b"=")
        if sep:
            pairs.append((name.strip(), val.strip().strip(b'"')))
    return pairs


def cookie_value(headers: Headers, name: bytes) -> bytes | None:
    """The value of cookie ``name`` across every ``Cookie`` header (RFC 6265 §5.4)."""
    found: bytes | None = None
    for value in header_values(headers, b"cookie"):
        for k, v in _cookie_pairs(value):
            if k != name:
                continue
            if found is not None and v != found:
                raise Ambiguous(f"the cookie {name.decode('latin-1')!r} is sent more than once")
            found = v
    return found


def take_header(headers: Headers, name: bytes) -> tuple[list[bytes], HeaderList, bool]:
    """One pass over ``headers`` for a lower-case ``name``: its values (as
    ``header_values``), the headers without it (as ``strip_header``), and whether
    a ``Cookie`` header is among the rest (so a cookie strip can be skipped)."""
    n = len(name)
    values: list[bytes] = []
    rest: HeaderList = []
    cookie = False
    for kv in headers:
        k = kv[0]
        size = len(k)  # a name of another length cannot match: no lower() for it
        if size == n and (k == name or k.lower() == name):
            values.append(kv[1])
        else:
            rest.append(kv)
            if size == 6 and not cookie:
                cookie = k.lower() == b"cookie"
    return values, rest, cookie


def one_value(values: list[bytes], name: bytes) -> bytes | None:
    """``single_header``'s answer from the values already found."""
    if not values:
        return None
    if any(v != values[0] for v in values[1:]):
        raise Ambiguous(f"the {name.decode('latin-1')!r} header is sent more than once")
    return values[0].strip()


def strip_header(headers: Headers, name: bytes) -> HeaderList:
    """``headers`` without ``name``."""
    return [(k, v) for k, v in headers if k.lower() != name]


def strip_cookie(headers: Headers, name: bytes) -> HeaderList:
    """``headers`` with cookie ``name`` removed (a ``Cookie`` header left empty is dropped)."""
    out: HeaderList = []
    for k, v in headers:
        if k.lower() != b"cookie":
            out.append((k, v))
            continue
        kept = [item.strip() for item in v.split(b";") if item.strip()]
        kept = [item for item in kept if item.partition(b"=")[0].strip() != name]
        if kept:
            out.append((k, b"; ".join(kept)))
    return out
