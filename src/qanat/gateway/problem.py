"""Error answers as RFC 9457 problem details (``application/problem+json``).

Every error the gateway produces itself (400 for a hostile request, 404 for no
route, 502/503/504 for upstream failures ...) uses this one shape:
``type``, ``title``, ``status``, ``detail`` and ``request_id``.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from qanat.gateway.filters import Reply

PROBLEM_BASE = "urn:qanat:problem:"
_SLUGS = {
    400: "bad-request",
    404: "no-route",
    405: "method-not-allowed",
    408: "request-timeout",
    413: "body-too-large",
    414: "uri-too-long",
    417: "expectation-failed",
    431: "headers-too-large",
    500: "internal-error",
    501: "not-implemented",
    502: "bad-gateway",
    503: "no-endpoint",
    504: "upstream-timeout",
    505: "http-version-not-supported",
}


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase for ``status`` (``b""`` when unknown)."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def problem(
    status: int,
    detail: str,
    request_id: bytes,
    *,
    slug: str | None = None,
    close: bool = False,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> Reply:
    """A complete problem+json reply; ``slug`` names the ``type`` (default by status)."""
    title = reason_phrase(status).decode() or "Error"
    body = json.dumps(
        {
            "type": PROBLEM_BASE + (slug or _SLUGS.get(status, "error")),
            "title": title,
            "status": status,
            "detail": detail,
            "request_id": request_id.decode("latin-1"),
        },
        separators=(",", ":"),
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"x-request-id", request_id),
        (b"cache-control", b"no-store"),
    ]
    if extra_headers:
        headers.extend(extra_headers)
    return Reply(status, headers, body, close=close)


__all__ = ["PROBLEM_BASE", "problem", "reason_phrase"]
