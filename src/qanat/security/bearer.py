"""The async edge of JWT authentication: token, keys (inline and JWKS), verdict.

``JwtAuthenticator.authenticate(headers, query)`` extracts the token,
verifies it with ``JwtVerifier`` at the current wall-clock time (``exp`` and
``nbf`` are Unix seconds, so the clock is ``time.time``), and, when the token
names a key id nobody has, asks the ``JwksCache`` for a (rate-limited)
refresh and verifies once more — that is how a key rotation at the issuer is
picked up without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from qanat.security import _request
from qanat.security.failure import AuthFailure
from qanat.security.identity import Identity
from qanat.security.jwks import JwksCache
from qanat.security.jwt import (
    JwtSettings,
    JwtVerifier,
    extract_token,
    header_token,
    strip_credentials,
    token_from,
)
from qanat.security.keys import KeySet

Headers = Sequence[tuple[bytes, bytes]]
HeaderList = list[tuple[bytes, bytes]]


class JwtAuthenticator:
    """Authenticates requests with a JWT; owns the route's ``JwksCache`` when it has a JWKS."""

    def __init__(
        self,
        settings: JwtSettings,
        *,
        clock: Callable[[], float] = time.time,
        jwks: JwksCache | None = None,
    ) -> None:
        self.settings = settings
        self.verifier = JwtVerifier(settings)
        self._clock = clock
        if jwks is None and settings.jwks is not None:
            jwks = JwksCache(settings.jwks, settings.algorithms)
        self.jwks = jwks
        self._header = settings.header.encode("latin-1") if settings.header else None

    async def authenticate(self, headers: Headers, query: bytes) -> Identity | AuthFailure:
        """The verified ``Identity`` of the request, or the failure to answer with."""
        return await self._verify(extract_token(self.settings, headers, query))

    async def take(self, headers: Headers, query: bytes
                   ) -> tuple[Identity | AuthFailure, HeaderList, bytes]:
        """``authenticate`` and, on success, ``strip`` in one pass over ``headers``.

        Returns ``(result, headers, query)``: on success the headers and query the
        upstream gets (a new list: the caller may extend it), exactly what
        ``strip`` returns; on failure the failure and the request's own.
        """
        values, rest, cookie = self._split(headers)
        result = await self._verify(token_from(self.settings, values, headers, query))
        return self._taken(result, headers, query, rest, cookie)

    def take_now(self, headers: Headers, query: bytes
                 ) -> tuple[Identity | AuthFailure, HeaderList, bytes] | None:
        """``take`` without a wait, or None when it must wait (a JWKS to fetch, an
        unknown key id to look up): then ``take`` does it. With inline keys, never None.

        The commonest request, an ``Authorization`` value verified before, is
        answered by that value (``TokenCache.get_alias``) with the token's own
        cache entry: ``exp``/``nbf``, the cache TTL and the keys it was verified
        with hold exactly as for the cached token.
        """
        values, rest, cookie = self._split(headers)
        keys: KeySet | None = None
        jwks = self.jwks
        if jwks is not None:
            keys = jwks.ready()
            if keys is None:
                return None
        now = self._clock()
        cache = self.verifier.cache
        if len(values) == 1:
            hit = cache.get_alias(values[0], now, keys)
            if hit is not None:
                return self._taken(hit, headers, query, rest, cookie)
        token = token_from(self.settings, values, headers, query)
        if isinstance(token, AuthFailure):
            return token, list(headers), query
        result = self.verifier.verify(token, now, keys)
        if isinstance(result, AuthFailure):
            if jwks is not None and result.unknown_kid is not None:
                return None  # the JWKS may have it by now: ``take`` refreshes (rate-limited)
        elif len(values) == 1 and self._header is not None and isinstance(
                header_token(self._header, values[0].strip()), bytes):
            cache.alias(values[0], token)  # the token came from this header value
        return self._taken(result, headers, query, rest, cookie)

    def _split(self, headers: Headers) -> tuple[list[bytes], HeaderList, bool]:
        if self._header is not None:
            return _request.take_header(headers, self._header)
        return [], list(headers), True

    def _taken(self, result: Identity | AuthFailure, headers: Headers, query: bytes,
               rest: HeaderList, cookie: bool
               ) -> tuple[Identity | AuthFailure, HeaderList, bytes]:
        s = self.settings
        if isinstance(result, AuthFailure):
            return result, list(headers), query
        if not s.hide_credentials:
            return result, list(headers), query
        if s.cookie and cookie:
            rest = _request.strip_cookie(rest, s.cookie.encode("latin-1"))
        if s.query and query:
            query = _request.strip_query(query, s.query.encode("latin-1"))
        return result, rest, query

    async def _verify(self, token: bytes | AuthFailure) -> Identity | AuthFailure:
        if isinstance(token, AuthFailure):
            return token
        if self.jwks is None:
            return self.verifier.verify(token, self._clock())
        result = self.verifier.verify(token, self._clock(), await self.jwks.get())
        if isinstance(result, AuthFailure) and result.unknown_kid is not None:
            keys = await self.jwks.refresh_for(result.unknown_kid)
            result = self.verifier.verify(token, self._clock(), keys)
        return result

    def strip(self, headers: Headers, query: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """``(headers, query)`` without the token, when ``hide_credentials`` (the default)."""
        if not self.settings.hide_credentials:
            return list(headers), query
        return strip_credentials(self.settings, headers, query)


__all__ = ["JwtAuthenticator"]
