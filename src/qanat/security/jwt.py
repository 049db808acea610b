"""JWT bearer authentication, pure: find the token, verify it, return an ``Identity``.

Rules (RFC 7519, the JWT BCP RFC 8725, APISIX ``jwt-auth``):

- The token is taken from the ``Authorization: Bearer`` header, then the
  query parameter (default ``jwt``), then the cookie (default ``jwt``).
- The *configured key* fixes the algorithm (RFC 8725 §3.1): a token is tried
  only against keys whose algorithm equals its ``alg`` and is on the route's
  allow-list. ``alg: none`` is never accepted; a ``crit`` header is refused
  (we understand no extensions, RFC 7515 §4.1.11).
- ``exp`` (required by default) and ``nbf`` are checked against ``now`` with
  ``leeway`` seconds for clock skew: default 60 s, Envoy ``jwt_authn``'s
  ``clock_skew_seconds`` (APISIX's ``lifetime_grace_period`` defaults to 0).
- ``iss`` must be one of ``issuer`` when set. ``aud`` must meet ``audience``
  when set, and a token that carries an ``aud`` is refused when no audience
  is configured (RFC 7519 §4.1.3: a recipient not named in ``aud`` rejects).

``JwtVerifier.verify(token, now)`` does no I/O: keys come from the settings
and, for JWKS, from ``qanat.security.jwks`` which fetches and caches them.
Successful verifications are cached (bounded LRU keyed by the token's bytes,
as Envoy ``jwt_authn``'s ``jwt_cache_config`` does): see ``JwtVerifier``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qanat.security import _request
from qanat.security.failure import AuthFailure
from qanat.security.identity import Identity
from qanat.security.jwt_cache import TokenCache
from qanat.security.jwt_parse import b64url as _b64url  # noqa: F401  (still importable here)
from qanat.security.jwt_parse import number as _number
from qanat.security.jwt_parse import parse as _parse
from qanat.security.jwt_parse import scopes as _scopes
from qanat.security.jwt_parse import strings as _strings
from qanat.security.keys import KeySet

Headers = Sequence[tuple[bytes, bytes]]
DEFAULT_LEEWAY = 60.0
MAX_TOKEN_BYTES = 8192
CACHE_SIZE = 1024  # verified tokens remembered per verifier
CACHE_TTL = 60.0  # seconds a verified token is trusted without checking its signature again


@dataclass(frozen=True, slots=True)
class JwksSettings:
    """Where a JWKS comes from and how long it is trusted.

    ``source``: an ``http://`` URL or a file path. ``ttl``: seconds before the
    cached set is refetched (default 300). ``min_refresh_interval``: at most
    one refetch per this many seconds, however many unknown ``kid``s arrive
    (default 30; caps what a flood of forged kids can cost). ``timeout``:
    seconds for one fetch (default 5).
    """

    source: str
    ttl: float = 300.0
    min_refresh_interval: float = 30.0
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """A route's JWT rules; see the module docstring. Build from config with ``from_config``."""

    algorithms: frozenset[str]
    keys: KeySet = field(default_factory=KeySet)
    jwks: JwksSettings | None = None
    issuer: frozenset[str] | None = None
    audience: frozenset[str] | None = None
    leeway: float = DEFAULT_LEEWAY
    required_claims: tuple[str, ...] = ("exp",)
    required_scopes: tuple[str, ...] = ()
    subject_claim: str = "sub"
    forward_claims: tuple[str, ...] = ()
    header: str | None = "authorization"
    query: str | None = "jwt"
    cookie: str | None = "jwt"
    hide_credentials: bool = True


def _fail(description: str, *, error: str = "invalid_token", kid: str | None = None) -> AuthFailure:
    return AuthFailure(error, description, "Bearer", kid)


MISSING = AuthFailure(None, "Missing JWT token in request")


def extract_token(settings: JwtSettings, headers: Headers, query: bytes) -> bytes | AuthFailure:
    """The token from the header, else the query, else the cookie; or why there is none.

    For ``authorization`` the value must use the ``Bearer`` scheme (RFC 6750
    §2.1); another scheme (``Basic``) is not ours and is passed over. A
    credential sent twice with different values is ``invalid_request``.
    """
    values = (_request.header_values(headers, settings.header.encode("latin-1"))
              if settings.header else [])
    return token_from(settings, values, headers, query)


def token_from(settings: JwtSettings, values: list[bytes], headers: Headers,
               query: bytes) -> bytes | AuthFailure:
    """``extract_token`` given the values of ``settings.header`` already found."""
    try:
        if settings.header:
            name = settings.header.encode("latin-1")
            value = _request.one_value(values, name)
            if value is not None:
                token = header_token(name, value)
                if token is not None:
                    return token
        if settings.query:
            token_q = _request.query_value(query, settings.query.encode("latin-1"))
            if token_q:
                return token_q
        if settings.cookie:
            token_c = _request.cookie_value(headers, settings.cookie.encode("latin-1"))
            if token_c:
                return token_c
    except _request.Ambiguous as exc:
        return _fail(str(exc), error="invalid_request")
    return MISSING


def header_token(name: bytes, value: bytes) -> bytes | AuthFailure | None:
    """The token that ``value`` (stripped) of header ``name`` carries, or None when
    it is not ours: a ``Bearer`` credential's token (``invalid_request`` when empty);
    for another header than ``authorization``, any other value whole."""
    scheme, _, token = value.partition(b" ")
    if scheme.lower() == b"bearer":
        token = token.strip()
        return token if token else _fail("empty bearer token", error="invalid_request")
    return value if name != b"authorization" else None


def strip_credentials(
    settings: JwtSettings, headers: Headers, query: bytes
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """``(headers, query)`` without the token's header, query parameter and cookie."""
    if settings.header:
        out = _request.strip_header(headers, settings.header.encode("latin-1"))
    else:
        out = list(headers)
    if settings.cookie and any(k.lower() == b"cookie" for k, _ in out):  # rare: skip the copy
        out = _request.strip_cookie(out, settings.cookie.encode("latin-1"))
    if settings.query and query:
        query = _request.strip_query(query, settings.query.encode("latin-1"))
    return out, query


class JwtVerifier:
    """Verifies tokens against ``settings``; pure (no I/O), for one event loop.

    Successes are remembered for at most ``cache_ttl`` seconds (0 turns the
    cache off) in ``cache``, an LRU of ``cache_size`` tokens keyed by the exact
    token bytes, so a client's next request skips the base64, JSON and signature
    work; see ``qanat.security.jwt_cache.TokenCache`` for when an entry holds
    (and for its aliases, which ``JwtAuthenticator.take_now`` files entries under);
    ``cache.stats()`` says how many tokens were answered from it and how many
    verified in full.
    """

    __slots__ = ("cache", "settings")

    def __init__(self, settings: JwtSettings, *, cache_size: int = CACHE_SIZE,
                 cache_ttl: float = CACHE_TTL) -> None:
        self.settings = settings
        self.cache = TokenCache(cache_size, cache_ttl)

    def verify(
        self, token: bytes | str, now: float, keys: KeySet | None = None
    ) -> Identity | AuthFailure:
        """The ``Identity`` in ``token`` at Unix time ``now``, or why it is refused.

        ``keys`` (e.g. from a JWKS cache) are used besides the inline keys.
        A failure with ``unknown_kid`` set means no key has the token's ``kid``.
        """
        raw = token.encode("latin-1") if isinstance(token, str) else token
        if len(raw) > MAX_TOKEN_BYTES:
            return _fail(f"token longer than {MAX_TOKEN_BYTES} bytes")
        hit = self.cache.get(raw, now, keys)
        if hit is not None:
            return hit
        result = self._verify_token(raw, now, keys)
        if isinstance(result, Identity):
            self.cache.put(raw, result, now, self.settings.leeway)
        return result

    def _verify_token(self, raw: bytes, now: float, keys: KeySet | None) -> Identity | AuthFailure:
        parts = _parse(raw)
        if parts is None:
            return _fail("malformed token")
        header, payload, signing_input, signature = parts
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            return _fail("unsigned tokens (alg none) are not accepted")
        if alg not in self.settings.algorithms:
            return _fail(f"algorithm {alg} is not allowed")
        if "crit" in header or header.get("b64", True) is not True:
            return _fail("critical header extensions are not supported")
        if kid is not None and not isinstance(kid, str):
            return _fail("kid is not a string")
        keyset = self.settings.keys if keys is None else self.settings.keys + keys
        candidates = keyset.candidates(kid, alg)
        if candidates is None:
            return _fail(f"unknown key id {kid!r}", kid=kid)
        if not candidates:
            return _fail(f"no {alg} key" + (f" with id {kid!r}" if kid else ""))
        if not any(k.verifies(signing_input, signature) for k in candidates):
            return _fail("signature verification failed")
        try:
            claims = json.loads(payload)
        except ValueError:
            return _fail("the payload is not JSON")
        if not isinstance(claims, dict):
            return _fail("the payload is not a JSON object")
        return self._check_claims(claims, now)

    def _check_claims(self, claims: dict[str, Any], now: float) -> Identity | AuthFailure:
        s = self.settings
        for name in s.required_claims:
            if name not in claims:
                return _fail(f"the token has no {name!r} claim")
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _number(claims[name]):
                return _fail(f"the {name!r} claim is not a number")
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if exp is not None and now >= exp + s.leeway:
            return _fail("the token has expired")
        if nbf is not None and now + s.leeway < nbf:
            return _fail("the token is not valid yet (nbf)")
        iss = claims.get("iss")
        if s.issuer is not None and iss not in s.issuer:
            return _fail("the token's issuer is not accepted")
        aud = _strings(claims["aud"]) if "aud" in claims else ()
        if aud is None:
            return _fail("the 'aud' claim is not a string or list of strings")
        if s.audience is None and aud:
            return _fail("the token names an audience but this route expects none")
        if s.audience is not None and not s.audience.intersection(aud):
            return _fail("the token is not for this audience")
        subject = claims.get(s.subject_claim)
        if not isinstance(subject, str) or not subject:
            return _fail(f"the {s.subject_claim!r} claim is missing or not a string")
        scopes = _scopes(claims)
        missing = [x for x in s.required_scopes if x not in scopes]
        if missing:
            return _fail(f"missing scope {' '.join(missing)}", error="insufficient_scope")
        forwarded = tuple(
            (n, v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))
            for n in s.forward_claims
            if (v := claims.get(n)) is not None
        )
        return Identity(
            subject=subject,
            method="jwt",
            issuer=iss if isinstance(iss, str) else None,
            audience=aud,
            scopes=scopes,
            claims=forwarded,
            expires_at=float(exp) if exp is not None else None,
        )


__all__ = [
    "DEFAULT_LEEWAY",
    "MISSING",
    "JwksSettings",
    "JwtSettings",
    "JwtVerifier",
    "extract_token",
    "strip_credentials",
]
