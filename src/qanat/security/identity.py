"""The verified identity of a caller, and the headers that carry it upstream.

After the gateway authenticates a request (a JWT, an API key) the upstream
service needs to know *who* called, without re-verifying anything. The gateway
says so in request headers — but only the gateway may say so: a client that
sends ``x-qanat-identity-subject: admin`` itself must not be believed.

The rule, which the gateway applies on **every** request, authenticated or
not, before any filter runs::

    headers = strip_identity_headers(headers)       # drop whatever the client claimed
    ...authenticate...
    headers += identity_headers(identity)            # add what the gateway verified

``strip_identity_headers`` removes every header whose name starts with one of
``IDENTITY_HEADER_PREFIXES`` (ours, and APISIX's ``x-consumer-*`` /
``x-credential-*``), so an upstream can trust them exactly when the request
came through the gateway.

Header values are percent-encoded UTF-8 (RFC 3986: every byte outside visible
ASCII, and ``%`` itself, becomes ``%XX``), so any claim value travels safely
and ``urllib.parse.unquote`` gives it back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

HeaderList = list[tuple[bytes, bytes]]

#: Header-name prefixes that only the gateway may set; stripped from every request.
IDENTITY_HEADER_PREFIXES: tuple[bytes, ...] = (
    b"x-qanat-identity-",
    b"x-consumer-",
    b"x-credential-",
)
PREFIX = "x-qanat-identity-"
# Visible ASCII except '%' (so decoding is unambiguous), '"' and '\' kept literal is fine.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

Method = Literal["jwt", "apikey"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request, as verified by the gateway.

    ``subject``: the JWT ``sub`` (or configured subject claim), or the API-key
    consumer's name. ``method``: how it was proven. ``consumer``: the
    configured consumer name (API keys), else None. ``issuer``/``audience``:
    the token's ``iss``/``aud``. ``scopes``: from ``scope`` (space-separated,
    RFC 8693) or ``scp`` (a list). ``claims``: the configured subset of other
    claims, as ``(name, text)`` pairs (non-strings JSON-encoded).
    ``expires_at``: the token's ``exp`` (Unix seconds), when it has one.
    """

    subject: str
    method: Method
    consumer: str | None = None
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    claims: tuple[tuple[str, str], ...] = ()
    expires_at: float | None = None

    def claim(self, name: str) -> str | None:
        """The forwarded claim ``name``, or None."""
        for k, v in self.claims:
            if k == name:
                return v
        return None


def valid_claim_name(name: str) -> bool:
    """Whether ``name`` can be forwarded as ``x-qanat-identity-claim-<name>``."""
    return bool(_CLAIM_NAME.match(name))


def _enc(value: str) -> bytes:
    return quote(value, safe=_SAFE).encode("ascii")


def identity_headers(identity: Identity) -> HeaderList:
    """The request headers that tell the upstream who ``identity`` is.

    ``x-qanat-identity-subject`` and ``-method`` always; ``-issuer``,
    ``-audience`` and ``-scopes`` (space-separated) when known;
    ``-claim-<name>`` per forwarded claim (name lower-cased, ``_`` and ``.``
    become ``-``); and ``x-consumer-username`` for an API-key consumer, as
    APISIX sends it.
    """
    out: HeaderList = [
        (b"x-qanat-identity-subject", _enc(identity.subject)),
        (b"x-qanat-identity-method", identity.method.encode("ascii")),
    ]
    if identity.issuer is not None:
        out.append((b"x-qanat-identity-issuer", _enc(identity.issuer)))
    if identity.audience:
        out.append((b"x-qanat-identity-audience", b" ".join(map(_enc, identity.audience))))
    if identity.scopes:
        out.append((b"x-qanat-identity-scopes", b" ".join(map(_enc, identity.scopes))))
    for name, value in identity.claims:
        header = PREFIX + "claim-" + name.lower().replace("_", "-").replace(".", "-")
        out.append((header.encode("ascii"), _enc(value)))
    if identity.consumer is not None:
        out.append((b"x-consumer-username", _enc(identity.consumer)))
    return out


def strip_identity_headers(headers: Sequence[tuple[bytes, bytes]]) -> HeaderList:
    """``headers`` without any identity header a client may have forged.

    Removes every header whose (case-insensitive) name starts with one of
    ``IDENTITY_HEADER_PREFIXES``. Returns a new list; the input is not changed.
    """
    return [(k, v) for k, v in headers if not k.lower().startswith(IDENTITY_HEADER_PREFIXES)]


__all__ = [
    "IDENTITY_HEADER_PREFIXES",
    "Identity",
    "identity_headers",
    "strip_identity_headers",
    "valid_claim_name",
]
