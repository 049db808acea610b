"""``take_now`` answers a repeated ``Authorization`` value from the token cache's alias:
no token cut out, no lookup by token, and every check the cache makes still made."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.security.security_keys import NOW, SECRET, claims, sign

from qanat.security import (
    AuthFailure,
    Identity,
    JwksCache,
    JwtAuthenticator,
    JwtVerifier,
    extract_token,
    jwt_settings_from_config,
)
from qanat.security.jwt_cache import TokenCache
from qanat.security.keys import KeySet, hmac_key
from qanat.testing import FakeClock

SECRET_B = b"another-secret-another-secret-0123456789"
Headers = list[tuple[bytes, bytes]]
Result = tuple[Identity | AuthFailure, Headers, bytes]


class Wall:
    """A wall clock a test sets anywhere, back in time too (``FakeClock`` only goes on)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def token(secret: bytes = SECRET, kid: str | None = None, **extra: Any) -> bytes:
    return sign(claims(**extra), secret, "HS256", kid).encode()


def auth_header(value: bytes, *more: tuple[bytes, bytes]) -> Headers:
    return [(b"host", b"h"), (b"authorization", value), *more]


def inline(clock: Wall, **config: Any) -> JwtAuthenticator:
    """An authenticator with the HS256 ``SECRET`` inline, on ``clock``."""
    s = jwt_settings_from_config({"algorithms": ["HS256"],
                                  "keys": [{"alg": "HS256", "secret": SECRET.decode()}], **config})
    return JwtAuthenticator(s, clock=clock)


def jwk(secret: bytes, kid: str) -> dict[str, str]:
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    return {"kty": "oct", "k": k, "kid": kid, "alg": "HS256"}


class Issuer:
    """A JWKS endpoint whose document the test changes (what ``fetch`` returns)."""

    def __init__(self, *keys: dict[str, str]) -> None:
        self.keys = list(keys)
        self.fetches = 0

    async def fetch(self, source: str, timeout: float) -> bytes:
        self.fetches += 1
        return json.dumps({"keys": self.keys}).encode()


def with_jwks(issuer: Issuer, jwks_clock: FakeClock, wall: Wall) -> JwtAuthenticator:
    """HS256 keys from ``issuer``'s JWKS (TTL 300 s, one refresh per 30 s), on ``wall``."""
    s = jwt_settings_from_config({"algorithms": ["HS256"], "jwks": {"source": "keys.json"}})
    assert s.jwks is not None
    cache = JwksCache(s.jwks, s.algorithms, clock=jwks_clock, fetch=issuer.fetch)
    return JwtAuthenticator(s, clock=wall, jwks=cache)


def verdict(result: Result | None) -> Identity | AuthFailure:
    """The verdict of a ``take_now`` that did not have to wait."""
    assert result is not None
    return result[0]


async def take(auth: JwtAuthenticator, headers: Headers, query: bytes = b"") -> Result:
    """What the gateway filter does: ``take_now``, else ``take``."""
    now = auth.take_now(headers, query)
    return now if now is not None else await auth.take(headers, query)


def work(auth: JwtAuthenticator) -> dict[str, int]:
    """How ``auth``'s token cache answered so far: ``alias``, by the header value (no
    token extracted); ``token``, by the token extracted; ``verified``, not at all: the
    token was verified in full, signature included (``test_jwt_cache`` pins that a miss
    is one signature check)."""
    stats = auth.verifier.cache.stats()
    return {"alias": stats.alias_hits, "token": stats.hits, "verified": stats.misses}


def test_a_repeated_authorization_value_is_answered_by_its_alias() -> None:
    """The second request with the same header value (a new bytes object, on a new header
    list) gets the same identity and the same upstream headers with no extraction or check."""
    auth = inline(Wall())
    value = b"Bearer " + token()
    first = auth.take_now(auth_header(value, (b"accept", b"*/*")), b"")
    second = auth.take_now(auth_header(bytes(value), (b"accept", b"*/*")), b"")
    assert first is not None and second is not None
    assert isinstance(first[0], Identity) and second[0] is first[0]
    assert first[1:] == second[1:] == ([(b"host", b"h"), (b"accept", b"*/*")], b"")
    assert work(auth) == {"alias": 1, "token": 0, "verified": 1}


def test_an_aliased_token_still_expires_at_exp_plus_leeway() -> None:
    """With the default 60 s leeway, a token with ``exp`` at NOW+10, verified at NOW+15
    (the 60 s cache TTL then outlasts it), is answered by its alias up to NOW+69.9 and
    refused from NOW+70 on."""
    wall = Wall()
    auth = inline(wall)
    headers = auth_header(b"Bearer " + token(exp=NOW + 10))
    wall.now = NOW + 15
    assert isinstance(verdict(auth.take_now(headers, b"")), Identity)
    wall.now = NOW + 69.9
    assert isinstance(verdict(auth.take_now(headers, b"")), Identity)
    assert work(auth) == {"alias": 1, "token": 0, "verified": 1}  # that one: the alias
    wall.now = NOW + 70
    refused = auth.take_now(headers, b"")
    assert refused is not None and isinstance(refused[0], AuthFailure)
    assert "expired" in refused[0].description


def test_a_clock_gone_back_before_nbf_is_refused() -> None:
    """Aliased at NOW+50 (``nbf`` NOW+100 within the leeway), the token is refused when
    the clock reads NOW+30: before ``nbf`` minus the leeway."""
    wall = Wall()
    auth = inline(wall)
    headers = auth_header(b"Bearer " + token(nbf=NOW + 100))
    wall.now = NOW + 50
    assert isinstance(verdict(auth.take_now(headers, b"")), Identity)
    wall.now = NOW + 30
    refused = auth.take_now(headers, b"")
    assert refused is not None and isinstance(refused[0], AuthFailure)
    assert "nbf" in refused[0].description


def test_the_alias_lasts_no_longer_than_the_cache_ttl() -> None:
    """60 s after the signature was checked, it is checked again (the token's entry has
    expired, and the alias is that entry)."""
    wall = Wall()
    auth = inline(wall)
    headers = auth_header(b"Bearer " + token())
    auth.take_now(headers, b"")
    wall.now = NOW + 59.9
    auth.take_now(headers, b"")
    assert work(auth)["verified"] == 1
    wall.now = NOW + 60
    assert isinstance(verdict(auth.take_now(headers, b"")), Identity)
    assert work(auth)["verified"] == 2


def test_an_alias_of_an_older_entry_ends_with_that_entry() -> None:
    """A token verified at NOW (from the query) and aliased at NOW+50 (from the header, a
    cache hit) is checked again at NOW+60, not NOW+110: the alias is the token's entry."""
    wall = Wall()
    auth = inline(wall)
    good = token()
    assert isinstance(verdict(auth.take_now(auth_header(b"Basic dTpw"), b"jwt=" + good)),
                      Identity)
    headers = auth_header(b"Bearer " + good)
    for at in (50, 59.9):
        wall.now = NOW + at
        assert isinstance(verdict(auth.take_now(headers, b"")), Identity)
    assert work(auth) == {"alias": 1, "token": 1, "verified": 1}
    wall.now = NOW + 60
    assert isinstance(verdict(auth.take_now(headers, b"")), Identity)
    assert work(auth) == {"alias": 1, "token": 1, "verified": 2}


def test_an_alias_answers_only_under_the_keys_it_was_checked_with() -> None:
    """``TokenCache.get_alias`` with another ``KeySet`` than the entry's is a miss, even
    before ``get`` has seen the new keys (a JWKS cache shared by two authenticators hands
    new keys to one of them first)."""
    cache = TokenCache(8, 60)
    keys = KeySet([hmac_key(SECRET, "HS256", "a")])
    rotated = KeySet([hmac_key(SECRET, "HS256", "a")])  # the same keys, refetched
    alice = Identity(subject="alice", method="jwt", expires_at=NOW + 3600)
    assert cache.get(b"t", NOW, keys) is None
    cache.put(b"t", alice, NOW, 60)
    cache.alias(b"Bearer t", b"t")
    assert cache.get_alias(b"Bearer t", NOW, keys) is alice
    assert cache.get_alias(b"Bearer t", NOW, rotated) is None
    assert cache.get(b"t", NOW, rotated) is None  # new keys: everything goes
    assert cache.get_alias(b"Bearer t", NOW, rotated) is None
    assert cache.get_alias(b"Bearer t", NOW, keys) is None


async def test_a_jwks_cache_shared_by_two_authenticators_rotates_both() -> None:
    """The second authenticator on a shared ``JwksCache`` refuses the dropped key's token
    on its next request, though the refetch that dropped it was the first one's."""
    issuer, jwks_clock, wall = Issuer(jwk(SECRET, "a")), FakeClock(), Wall()
    first = with_jwks(issuer, jwks_clock, wall)
    second = JwtAuthenticator(first.settings, clock=wall, jwks=first.jwks)
    headers = auth_header(b"Bearer " + token(kid="a"))
    for auth in (first, second, second):
        assert isinstance((await take(auth, headers))[0], Identity)
    issuer.keys = [jwk(SECRET_B, "b")]
    jwks_clock.advance(300)
    assert isinstance((await take(first, headers))[0], AuthFailure)  # refetched here
    refused = (await take(second, headers))[0]
    assert isinstance(refused, AuthFailure) and refused.unknown_kid == "a"


async def test_a_key_that_left_the_jwks_is_refused_once_the_jwks_is_refetched() -> None:
    """As for the token cache: accepted while the JWKS still holds the key (within its
    TTL), refused from the first request after the refetch that drops it, and after."""
    issuer, jwks_clock, wall = Issuer(jwk(SECRET, "a")), FakeClock(), Wall()
    auth = with_jwks(issuer, jwks_clock, wall)
    headers = auth_header(b"Bearer " + token(kid="a"))
    assert isinstance((await take(auth, headers))[0], Identity)
    issuer.keys = [jwk(SECRET_B, "b")]  # the issuer rotates: key a is gone
    jwks_clock.advance(299)
    assert isinstance((await take(auth, headers))[0], Identity)  # not refetched yet
    jwks_clock.advance(1)  # the JWKS TTL: the next request refetches
    for _ in range(3):
        refused = (await take(auth, headers))[0]
        assert isinstance(refused, AuthFailure) and refused.unknown_kid == "a"
    assert issuer.fetches == 2


async def test_a_rotation_seen_through_a_new_kid_drops_the_aliases_at_once() -> None:
    """A token with a new kid makes the JWKS refetch; the old key's token, answered by its
    alias a moment before, is refused on its very next request."""
    issuer, jwks_clock, wall = Issuer(jwk(SECRET, "a")), FakeClock(), Wall()
    auth = with_jwks(issuer, jwks_clock, wall)
    old = auth_header(b"Bearer " + token(kid="a"))
    assert isinstance((await take(auth, old))[0], Identity)
    assert isinstance((await take(auth, old))[0], Identity)
    issuer.keys = [jwk(SECRET_B, "b")]
    jwks_clock.advance(30)  # one refresh per 30 s: this one is allowed
    assert isinstance((await take(auth, auth_header(b"Bearer " + token(SECRET_B, "b"))))[0],
                      Identity)
    refused = (await take(auth, old))[0]
    assert isinstance(refused, AuthFailure) and refused.unknown_kid == "a"


def test_a_token_from_the_query_or_cookie_is_not_aliased_to_the_header() -> None:
    """With ``Authorization: Basic ...`` the token comes from the query or the cookie: the
    same header with another (bad) token there is refused, not taken for the first."""
    auth = inline(Wall())
    basic = b"Basic dTpw"
    good, bad = token(), token(SECRET_B)
    assert isinstance(verdict(auth.take_now(auth_header(basic), b"jwt=" + good)), Identity)
    refused = auth.take_now(auth_header(basic), b"jwt=" + bad)
    assert refused is not None and isinstance(refused[0], AuthFailure)
    cookie = (b"cookie", b"jwt=" + good)
    assert isinstance(verdict(auth.take_now(auth_header(basic, cookie), b"")), Identity)
    refused = auth.take_now(auth_header(basic, (b"cookie", b"jwt=" + bad)), b"")
    assert refused is not None and isinstance(refused[0], AuthFailure)


def test_a_bad_token_is_never_answered_as_good() -> None:
    """Refused values stay refused, before and after a good one is aliased: a tampered
    signature, a token for another audience, an empty bearer, and the good value sent
    twice with a bad one (ambiguous)."""
    auth = inline(Wall())
    good = token()
    tampered = good[:-2] + (b"AA" if good[-2:] != b"AA" else b"BB")
    bad = [b"Bearer " + tampered, b"Bearer " + token(aud="other"), b"Bearer "]
    for round_ in range(2):
        for value in bad:
            refused = auth.take_now(auth_header(value), b"")
            assert refused is not None and isinstance(refused[0], AuthFailure), (round_, value)
        assert isinstance(verdict(auth.take_now(auth_header(b"Bearer " + good), b"")), Identity)
    twice = auth_header(b"Bearer " + good, (b"authorization", b"Bearer " + tampered))
    refused = auth.take_now(twice, b"")
    assert refused is not None and isinstance(refused[0], AuthFailure)
    assert refused[0].error == "invalid_request"


GOOD = token(exp=NOW + 5)
VALUES = [b"Bearer " + GOOD, b"bearer  " + GOOD + b" ", b"Bearer " + token(nbf=NOW + 20),
          b"Bearer " + token(kid="a", exp=NOW + 40), b"Bearer " + token(SECRET_B, "b"),
          b"Bearer " + token(aud="x"), b"Bearer x.y.z", b"Basic dTpw", b"Bearer "]
QUERIES = [b"", b"jwt=" + GOOD, b"jwt=" + token(SECRET_B, "b"), b"a=1"]
DOCS = [[jwk(SECRET, "a")], [jwk(SECRET_B, "b")], [jwk(SECRET, "a"), jwk(SECRET_B, "b")],
        [jwk(SECRET, "k")]]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALUES) - 1), st.integers(0, len(QUERIES) - 1),
                          st.floats(-100, 200), st.one_of(st.none(),
                                                          st.integers(0, len(DOCS) - 1))),
                max_size=25))
def test_answers_equal_an_uncached_verifier_with_the_keys_of_the_moment(
    calls: list[tuple[int, int, float, int | None]],
) -> None:
    """For any header values, queries, times (also going back) and JWKS rotations, what
    the alias-cached authenticator answers equals an uncached verifier given the keys the
    JWKS holds after the request, and the upstream gets what ``strip`` leaves."""
    issuer, jwks_clock, wall = Issuer(*DOCS[0]), FakeClock(), Wall()
    auth = with_jwks(issuer, jwks_clock, wall)
    plain = JwtVerifier(auth.settings, cache_ttl=0)

    async def run() -> None:
        for v, q, offset, doc in calls:
            if doc is not None:  # the issuer publishes new keys; the JWKS TTL runs out
                issuer.keys = DOCS[doc]
                jwks_clock.advance(300)
            wall.now = NOW + offset
            headers, query = auth_header(VALUES[v]), QUERIES[q]
            result, out, out_query = await take(auth, headers, query)
            found = extract_token(auth.settings, headers, query)
            if isinstance(found, AuthFailure):
                assert result == found
            else:
                assert auth.jwks is not None
                keys = auth.jwks.ready()  # fetched by now, if it had to be
                assert keys is not None
                assert result == plain.verify(found, wall.now, keys)
            if isinstance(result, Identity):
                assert (out, out_query) == auth.strip(headers, query)
            else:
                assert (out, out_query) == (headers, query)

    asyncio.run(run())
