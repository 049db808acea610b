"""Why authentication failed, and the HTTP answer that says so.

``AuthFailure`` is the value an authenticator returns instead of an
``Identity``; ``challenge(failure)`` turns it into ``(status, headers, body)``:
a ``WWW-Authenticate`` challenge (RFC 6750 §3 for bearer tokens) and an
RFC 9457 problem-details body, ready for the gateway's ``Reply``.

RFC 6750 §3.1: a request with *no* credentials gets a bare challenge
(``Bearer realm="qanat"``, no error code); a bad token gets
``error="invalid_token"`` (401); a malformed request ``invalid_request``
(400); a valid token without the needed scope ``insufficient_scope`` (403).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http import HTTPStatus

HeaderList = list[tuple[bytes, bytes]]
PROBLEM_BASE = "urn:qanat:problem:"
# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E (no '"' or '\').
_NOT_DESC = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_STATUS = {None: 401, "invalid_token": 401, "invalid_request": 400, "insufficient_scope": 403}


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """An authentication failure, safe to show the client.

    ``error``: the RFC 6750 error code (``invalid_token``,
    ``invalid_request``, ``insufficient_scope``) or None when no credential
    was sent. ``description``: one sentence for the client. ``scheme``: the
    challenge's auth scheme (``Bearer`` for JWT, ``Key`` for API keys, as
    Kong). ``unknown_kid``: set when the token names a key id that no known
    key has — the caller may refresh a JWKS and try again.
    """

    error: str | None
    description: str
    scheme: str = "Bearer"
    unknown_kid: str | None = None

    @property
    def status(self) -> int:
        """401, or 400 for ``invalid_request``, or 403 for ``insufficient_scope``."""
        return _STATUS.get(self.error, 401)


def www_authenticate(failure: AuthFailure, realm: str = "qanat") -> bytes:
    """The ``WWW-Authenticate`` value for ``failure`` (RFC 6750 §3 syntax)."""
    parts = [f'{failure.scheme} realm="{_NOT_DESC.sub("_", realm)}"']
    if failure.error is not None:
        parts.append(f'error="{failure.error}"')
        parts.append(f'error_description="{_NOT_DESC.sub(chr(39), failure.description)}"')
    return ", ".join(parts).encode("ascii")


def challenge(
    failure: AuthFailure, *, realm: str = "qanat", request_id: bytes = b""
) -> tuple[int, HeaderList, bytes]:
    """``(status, headers, body)`` answering ``failure``: a challenge and problem details."""
    status = failure.status
    slug = {401: "unauthorized", 400: "bad-credentials", 403: "forbidden"}[status]
    doc: dict[str, object] = {
        "type": PROBLEM_BASE + slug,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": failure.description,
    }
    if failure.error is not None:
        doc["error"] = failure.error
    if request_id:
        doc["request_id"] = request_id.decode("latin-1")
    body = json.dumps(doc, separators=(",", ":")).encode()
    headers: HeaderList = [
        (b"content-type", b"application/problem+json"),
        (b"cache-control", b"no-store"),
        (b"www-authenticate", www_authenticate(failure, realm)),
    ]
    if request_id:
        headers.append((b"x-request-id", request_id))
    return status, headers, body


__all__ = ["AuthFailure", "challenge", "www_authenticate"]
