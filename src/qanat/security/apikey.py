"""API-key authentication (APISIX ``key-auth`` semantics), pure.

The key comes from a header (default ``apikey``) or, failing that, a query
parameter (default ``apikey``). Config never holds a key itself, only its
SHA-256 (``hash_api_key``), each mapped to a consumer name; a leaked config
file leaks no credential. Answers: 401 ``Missing API key`` / ``Invalid API
key`` (APISIX's wording) with ``WWW-Authenticate: Key realm="qanat"`` (Kong's
scheme name; RFC 9110 §11.6.1 requires a challenge on every 401).

Timing: the presented key is hashed; the first half of its digest finds the
candidate entry, whose full digest is then compared with
``hmac.compare_digest``. What the lookup's timing can reveal is about digests,
which an attacker cannot steer toward a stored one without inverting SHA-256,
and a stored digest authenticates no one: the gateway accepts keys, not
digests.

``strip(headers, query)`` removes the credential before the request goes
upstream (on by default, ``hide_credentials``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qanat.errors import ConfigError
from qanat.security import _request
from qanat.security.failure import AuthFailure
from qanat.security.identity import Identity

Headers = Sequence[tuple[bytes, bytes]]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MISSING_KEY = AuthFailure(None, "Missing API key", "Key")
INVALID_KEY = AuthFailure("invalid_token", "Invalid API key", "Key")


def hash_api_key(key: str) -> str:
    """The hex SHA-256 of ``key``: what goes in config instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeySettings:
    """``consumers``: SHA-256 digest (32 bytes) -> consumer name; where to look; whether to hide."""

    consumers: Mapping[bytes, str] = field(default_factory=dict)
    header: str | None = "apikey"
    query: str | None = "apikey"
    hide_credentials: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "key_auth") -> ApiKeySettings:
        """From ``{consumers: [{name, key_sha256}], header?, query?, hide_credentials?}``."""
        extra = set(config) - {"consumers", "header", "query", "hide_credentials"}
        if extra:
            raise ConfigError(f"unknown options {sorted(extra)}", source=source)
        raw = config.get("consumers")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(
                "consumers must be a non-empty list of {name, key_sha256} "
                "(hash a key with qanat.security.hash_api_key)",
                source=f"{source}.consumers",
            )
        consumers: dict[bytes, str] = {}
        for i, item in enumerate(raw):
            where = f"{source}.consumers[{i}]"
            name, digest = _consumer(item, where)
            if digest in consumers:
                raise ConfigError(
                    f"this key is already given to {consumers[digest]!r}", source=where
                )
            consumers[digest] = name
        header, query = config.get("header", "apikey"), config.get("query", "apikey")
        for opt, value in (("header", header), ("query", query)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(
                    f"{opt} must be a non-empty string or null", source=f"{source}.{opt}"
                )
        if header is None and query is None:
            raise ConfigError("header and query cannot both be null", source=source)
        hide = config.get("hide_credentials", True)
        if not isinstance(hide, bool):
            raise ConfigError("hide_credentials must be true or false", source=source)
        return cls(consumers, header.lower() if header else None, query, hide)


def _consumer(item: object, where: str) -> tuple[str, bytes]:
    if not isinstance(item, Mapping) or set(item) != {"name", "key_sha256"}:
        raise ConfigError("each consumer is {name, key_sha256}", source=where)
    name, digest = item["name"], item["key_sha256"]
    if not isinstance(name, str) or not name:
        raise ConfigError("name must be a non-empty string", source=f"{where}.name")
    if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
        raise ConfigError(
            "key_sha256 must be 64 hex digits (hash_api_key(key)); plain keys are not stored",
            source=f"{where}.key_sha256",
        )
    return name, bytes.fromhex(digest)


class ApiKeyAuth:
    """Finds and checks the API key of a request; pure (no I/O, no clock)."""

    __slots__ = ("_index", "settings")

    def __init__(self, settings: ApiKeySettings) -> None:
        self.settings = settings
        # Indexed by the digest's first half; the full digest is then compared in constant time.
        self._index = {d[:16]: (d, name) for d, name in settings.consumers.items()}

    def authenticate(self, headers: Headers, query: bytes) -> Identity | AuthFailure:
        """The consumer's ``Identity``, or ``Missing API key`` / ``Invalid API key``."""
        s = self.settings
        try:
            key = _request.single_header(headers, s.header.encode("latin-1")) if s.header else None
            if not key and s.query:
                key = _request.query_value(query, s.query.encode("latin-1"))
        except _request.Ambiguous as exc:
            return AuthFailure("invalid_request", str(exc), "Key")
        if not key:
            return MISSING_KEY
        digest = hashlib.sha256(key).digest()
        entry = self._index.get(digest[:16])
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return INVALID_KEY
        return Identity(subject=entry[1], method="apikey", consumer=entry[1])

    def strip(self, headers: Headers, query: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """``(headers, query)`` without the API key, for the upstream request."""
        s = self.settings
        out = list(headers)
        if s.header:
            out = _request.strip_header(out, s.header.encode("latin-1"))
        if s.query:
            query = _request.strip_query(query, s.query.encode("latin-1"))
        return out, query


__all__ = ["INVALID_KEY", "MISSING_KEY", "ApiKeyAuth", "ApiKeySettings", "hash_api_key"]
