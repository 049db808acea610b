"""Reading a JWT: decode the compact JWS (RFC 7515 §7.1) and check claim value types.

Pure helpers for ``qanat.security.jwt.JwtVerifier``: they answer None or
False rather than judge, and the verifier turns that into an ``AuthFailure``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")


def number(value: object) -> bool:
    """True for a finite int or float (not a bool): what ``exp``/``nbf``/``iat`` must be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def strings(value: object) -> tuple[str, ...] | None:
    """A string or a list of strings as a tuple (the shape of ``aud``), else None."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def b64url(segment: bytes) -> bytes:
    """Decode unpadded base64url (RFC 7515 §2); ``ValueError`` for anything else."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def parse(raw: bytes) -> tuple[dict[str, Any], bytes, bytes, bytes] | None:
    """``(header, payload, signing input, signature)`` of a compact JWS, or None (RFC 7515 §7.1)."""
    if raw.count(b".") != 2:
        return None
    signing_input, _, sig = raw.rpartition(b".")
    head, _, body = signing_input.partition(b".")
    try:
        header = json.loads(b64url(head))
        payload, signature = b64url(body), b64url(sig)
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict):
        return None
    return header, payload, signing_input, signature


def scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The token's scopes: ``scope`` (RFC 8693 §4.2, space-separated), else ``scp``."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return tuple(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        return tuple(scp.split())
    if isinstance(scp, list):
        return tuple(x for x in scp if isinstance(x, str))
    return ()


__all__ = ["b64url", "number", "parse", "scopes", "strings"]
