"""Request-target path normalisation: what the gateway routes on is what it forwards.

The rules (RFC 3986 §6.2.2, with Envoy's ``normalize_path`` + ``merge_slashes``
as the model, and its ``path_with_escaped_slashes_action: REJECT_REQUEST``):

1. Percent-encodings must be well formed (``%`` + two hex digits), else 400.
2. Encodings of *unreserved* characters (``A-Z a-z 0-9 - . _ ~``) are decoded
   (RFC 3986 §6.2.2.2); every other encoding is kept, with upper-case hex
   (§6.2.2.1). So ``%2e%2e`` becomes ``..`` *before* dot-segment removal and
   cannot smuggle a ``..`` past the router to an upstream that decodes it.
3. An encoded ``/`` or ``\\`` (``%2F``, ``%5C``) or NUL (``%00``), and a raw
   ``\\``, are rejected with 400: upstreams disagree on whether they separate
   segments, so no single routing decision is safe for all of them.
4. Bytes that are not allowed raw in a path (RFC 3986 ``pchar``) are
   percent-encoded.
5. Runs of ``/`` are merged into one.
6. Dot segments are removed (RFC 3986 §5.2.4); ``..`` never climbs above the root.

The query string is not touched. Pure functions: no I/O, no state.
"""

from __future__ import annotations

import re

from qanat.gateway.hardening import RequestRejected

_HEX = b"0123456789ABCDEF"
_HEXDIGITS = frozenset(b"0123456789ABCDEFabcdef")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; plus "/" between segments.
_PATH_SAFE = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")
_REJECT_DECODED = {0x2F: "an encoded slash (%2F)", 0x5C: "an encoded backslash (%5C)", 0: "NUL"}
# Anything other than plain pchars, or a '//' or a dot segment, needs the slow path.
_NEEDS_WORK = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@/]|//|/\.\.?(?:/|$)")


def normalize_path(path: bytes) -> bytes:
    """Return the normalised form of an origin-form ``path`` (no query), or raise.

    Raises ``RequestRejected`` (status 400) for a path that does not start with
    ``/``, a malformed percent-encoding, an encoded slash, backslash or NUL, or a
    raw backslash. The result always starts with ``/``, contains no ``//`` and
    no dot segments, and ``normalize_path(normalize_path(p)) == normalize_path(p)``.
    """
    if not path.startswith(b"/"):
        raise RequestRejected(400, "the request path must start with '/'")
    if _NEEDS_WORK.search(path) is None:
        return path  # the common case: already normal, no copy
    return remove_dot_segments(_merge_slashes(_normalize_encoding(path)))


def _normalize_encoding(path: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == 0x25:  # '%'
            pair = path[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEXDIGITS or pair[1] not in _HEXDIGITS:
                raise RequestRejected(400, f"malformed percent-encoding at byte {i} of the path")
            b = int(pair, 16)
            if b in _REJECT_DECODED:
                raise RequestRejected(400, f"the path contains {_REJECT_DECODED[b]}")
            if b in _UNRESERVED:
                out.append(b)
            else:
                out += b"%" + bytes((_HEX[b >> 4], _HEX[b & 15]))
            i += 3
            continue
        if c == 0x5C:
            raise RequestRejected(400, "the path contains a backslash")
        if c in _PATH_SAFE:
            out.append(c)
        else:
            out += b"%" + bytes((_HEX[c >> 4], _HEX[c & 15]))
        i += 1
    return bytes(out)


_SLASHES = re.compile(rb"/{2,}")


def _merge_slashes(path: bytes) -> bytes:
    return _SLASHES.sub(b"/", path) if b"//" in path else path


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 for an absolute path: drop ``.``, let ``..`` pop one segment.

    A trailing ``.`` or ``..`` leaves a trailing ``/`` (``/a/b/..`` -> ``/a/``),
    and ``..`` at the root is dropped (``/../g`` -> ``/g``), as the RFC says.
    """
    segments = path.split(b"/")[1:]
    out: list[bytes] = []
    for seg in segments:
        if seg == b"..":
            if out:
                out.pop()
        elif seg != b".":
            out.append(seg)
    result = b"/" + b"/".join(out)
    if segments and segments[-1] in (b".", b"..") and not result.endswith(b"/"):
        result += b"/"
    return result


__all__ = ["normalize_path", "remove_dot_segments"]
