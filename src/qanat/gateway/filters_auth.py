"""Authentication filters: ``jwt`` (alias ``jwt_auth``) and ``key_auth``.

Both are thin edges over ``qanat.security`` (``docs/security.md``), where every
decision is made: the token or key is found and checked there (JWT: HS256,
RS256, ES256 … with inline keys or a JWKS, ``exp``/``nbf`` with leeway,
issuer and audience; ``alg: none`` and algorithm confusion refused), and a
failure becomes a 401 (or 400/403) with ``WWW-Authenticate`` and a problem
body. On success the filter removes the credential from what goes upstream
(``hide_credentials``, on by default), adds the verified identity headers
(``x-qanat-identity-*``, ``x-consumer-username``) and leaves the ``Identity``
in ``exchange.state["identity"]`` for later filters (rate limits per consumer
or subject).

Client-sent identity headers never get this far: ``Exchange`` drops them on
every request, authenticated route or not (``filters.without_identity``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from qanat.gateway.filters import Exchange, HeaderList, HookFilter, Reply, register_filter
from qanat.security import (
    ApiKeyAuth,
    ApiKeySettings,
    AuthFailure,
    Identity,
    JwtAuthenticator,
    challenge,
    identity_headers,
    jwt_settings_from_config,
)
from qanat.security.jwt_cache import TokenCache

Authenticate = Callable[[HeaderList, bytes], Awaitable[Identity | AuthFailure]]
Strip = Callable[[HeaderList, bytes], tuple[list[tuple[bytes, bytes]], bytes]]
Take = Callable[[HeaderList, bytes], Awaitable[tuple[Identity | AuthFailure, HeaderList, bytes]]]
TakeNow = Callable[[HeaderList, bytes], tuple[Identity | AuthFailure, HeaderList, bytes] | None]
_MAX_IDENTITIES = 1024  # identities whose headers are remembered per filter


class AuthFilter(HookFilter):
    """Runs ``authenticate(headers, query)``; answers the failure or forwards the identity.

    ``query`` is handed over without its leading ``?``; ``strip`` removes
    the credential for the upstream request. ``take``, when given, does both in
    one pass (``JwtAuthenticator.take``) and is used instead.

    ``token_cache`` is the JWT verifier's cache of verified tokens (None for
    ``key_auth``): the admin endpoints and /metrics read its ``stats()``.
    """

    def __init__(self, authenticate: Authenticate, strip: Strip, *,
                 take: Take | None = None, take_now: TakeNow | None = None,
                 token_cache: TokenCache | None = None) -> None:
        self._authenticate = authenticate
        self._strip = strip
        self._take = take
        self._take_now = take_now  # ``take`` without a coroutine when nothing must be fetched
        self.token_cache = token_cache
        # identity -> its headers: a pure function of the identity, and the same
        # caller keeps coming back (the JWT verifier caches its Identity too)
        self._headers: dict[Identity, HeaderList] = {}
        self._last: tuple[Identity, HeaderList] | None = None  # the same object: no hashing

    def on_request(self, ex: Exchange) -> Reply | Awaitable[Reply | None] | None:
        query = ex.query[1:] if ex.query.startswith(b"?") else ex.query
        take_now = self._take_now
        if take_now is not None:
            now = take_now(ex.headers, query)
            if now is not None:  # decided without waiting: no coroutine
                return self._admit(ex, *now)
        return self._wait(ex, query)

    async def _wait(self, ex: Exchange, query: bytes) -> Reply | None:
        if self._take is not None:
            return self._admit(ex, *await self._take(ex.headers, query))
        result = await self._authenticate(ex.headers, query)
        if isinstance(result, AuthFailure):
            return self._admit(ex, result, ex.headers, query)
        return self._admit(ex, result, *self._strip(ex.headers, query))

    def _admit(self, ex: Exchange, result: Identity | AuthFailure, headers: HeaderList,
               query: bytes) -> Reply | None:
        """The failure's answer, or None with the identity on ``ex`` and the
        credential gone from what goes upstream."""
        if isinstance(result, AuthFailure):
            status, challenge_headers, body = challenge(result, request_id=ex.request_id)
            return Reply(status, challenge_headers, body)
        last = self._last
        if last is not None and last[0] is result:
            extra = last[1]
        else:
            known = self._headers.get(result)
            if known is None:
                if len(self._headers) >= _MAX_IDENTITIES:
                    self._headers.clear()
                known = self._headers[result] = identity_headers(result)
            extra = known
            self._last = (result, extra)
        headers += extra
        ex.headers = headers
        ex.query = b"?" + query if query else b""
        if ex.state is None:
            ex.state = {}
        ex.state["identity"] = result
        return None


def jwt_filter(config: Mapping[str, Any], route: str) -> AuthFilter:
    """The ``jwt`` filter: options as ``jwt_settings_from_config`` documents them."""
    auth = JwtAuthenticator(jwt_settings_from_config(config, source="jwt"))
    return AuthFilter(auth.authenticate, auth.strip, take=auth.take, take_now=auth.take_now,
                      token_cache=auth.verifier.cache)


def key_auth_filter(config: Mapping[str, Any], route: str) -> AuthFilter:
    """The ``key_auth`` filter: ``{consumers: [{name, key_sha256}], header, query}``."""
    auth = ApiKeyAuth(ApiKeySettings.from_config(config, source="key_auth"))

    async def authenticate(headers: HeaderList, query: bytes) -> Identity | AuthFailure:
        return auth.authenticate(headers, query)

    def take_now(headers: HeaderList, query: bytes
                 ) -> tuple[Identity | AuthFailure, HeaderList, bytes]:
        """A key is checked in memory: always decided at once, no coroutine."""
        result = auth.authenticate(headers, query)
        if isinstance(result, AuthFailure):
            return result, headers, query
        return (result, *auth.strip(headers, query))

    return AuthFilter(authenticate, auth.strip, take_now=take_now)


register_filter("jwt", jwt_filter)
register_filter("jwt_auth", jwt_filter)  # the name docs/security.md uses
register_filter("key_auth", key_auth_filter)

__all__ = ["AuthFilter", "jwt_filter", "key_auth_filter"]
