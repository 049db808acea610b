"""The verifier's cache of verified tokens: bounded, short-lived, re-checked, keyed to the keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.security.security_keys import NOW, SECRET, claims, jwk_of, rsa_key, sign
from tests.unit.security.test_jwks import authenticator, bearer, jwks

from qanat.security import AuthFailure, Identity, JwtSettings, JwtVerifier
from qanat.security.jwt_cache import TokenCache, TokenCacheStats
from qanat.security.keys import KeySet, VerificationKey, hmac_key
from qanat.testing import FakeClock

SECRET_B = b"another-secret-another-secret-0123456789"


def verifier(**opts: Any) -> JwtVerifier:
    return JwtVerifier(JwtSettings(algorithms=frozenset({"HS256"}), leeway=60), **opts)


KEYS_A = KeySet([hmac_key(SECRET, "HS256", "a")])
KEYS_B = KeySet([hmac_key(SECRET_B, "HS256", "b")])


def token(key: str = "a", **extra: Any) -> str:
    return sign(claims(**extra), SECRET if key == "a" else SECRET_B, "HS256", key)


def checked(v: JwtVerifier) -> int:
    """Tokens ``v`` verified in full, signature included: its cache's misses (see
    ``test_each_miss_is_one_signature_check`` for why that is the count)."""
    return v.cache.stats().misses


def test_a_verified_token_is_answered_from_the_cache() -> None:
    """Verifying the same token again returns the same identity with no signature check."""
    v, t = verifier(), token()
    first = v.verify(t, NOW, KEYS_A)
    second = v.verify(t.encode(), NOW + 1, KEYS_A)
    assert isinstance(first, Identity) and second is first
    assert checked(v) == 1


def test_an_expired_cached_token_is_refused() -> None:
    """A cached token is refused once ``now`` passes its ``exp`` plus leeway."""
    v, t = verifier(), token(exp=NOW + 10)
    assert isinstance(v.verify(t, NOW, KEYS_A), Identity)
    assert isinstance(v.verify(t, NOW + 69, KEYS_A), Identity)  # within the 60 s leeway
    refused = v.verify(t, NOW + 70, KEYS_A)
    assert isinstance(refused, AuthFailure) and "expired" in refused.description


def test_a_clock_that_went_back_before_nbf_is_refused() -> None:
    """A token cached after its ``nbf`` is refused at an earlier ``now`` before ``nbf`` - leeway."""
    v, t = verifier(), token(nbf=NOW + 100)
    assert isinstance(v.verify(t, NOW + 50, KEYS_A), Identity)
    refused = v.verify(t, NOW + 30, KEYS_A)
    assert isinstance(refused, AuthFailure) and "nbf" in refused.description


def test_entries_expire_after_the_cache_ttl() -> None:
    """After ``cache_ttl`` seconds the signature is checked again."""
    v, t = verifier(cache_ttl=5), token()
    v.verify(t, NOW, KEYS_A)
    v.verify(t, NOW + 4.9, KEYS_A)
    assert checked(v) == 1
    assert isinstance(v.verify(t, NOW + 5, KEYS_A), Identity)
    assert checked(v) == 2


def test_new_keys_invalidate_the_cache() -> None:
    """A token verified with the old keys is refused once other keys are handed over (rotation)."""
    v, t = verifier(), token("a")
    assert isinstance(v.verify(t, NOW, KEYS_A), Identity)
    refused = v.verify(t, NOW, KEYS_B)
    assert isinstance(refused, AuthFailure) and refused.unknown_kid == "a"


def test_the_cache_is_a_bounded_lru() -> None:
    """With room for two tokens, the least recently used one is the one verified again."""
    v = verifier(cache_size=2)
    t1, t2, t3 = token(jti="1"), token(jti="2"), token(jti="3")
    for t in (t1, t2, t1, t3):  # t2 is now the least recently used: evicted by t3
        v.verify(t, NOW, KEYS_A)
    assert checked(v) == 3
    v.verify(t1, NOW, KEYS_A)
    assert checked(v) == 3
    v.verify(t2, NOW, KEYS_A)
    assert checked(v) == 4
    assert v.cache.stats().entries == 2


def test_a_zero_ttl_turns_the_cache_off() -> None:
    """With ``cache_ttl=0`` every verification checks the signature."""
    v, t = verifier(cache_ttl=0), token()
    v.verify(t, NOW, KEYS_A)
    v.verify(t, NOW, KEYS_A)
    assert checked(v) == 2
    assert v.cache.stats().entries == 0


class CountingPublicKey:
    """An RSA public key that counts its signature checks (PyJWT's RS256 calls ``verify``)."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.checks = 0

    def verify(self, signature: bytes, data: bytes, padding: Any, algorithm: Any) -> None:
        self.checks += 1
        self.key.verify(signature, data, padding, algorithm)


def test_each_miss_is_one_signature_check() -> None:
    """Counted at the key itself: every miss checked the token's signature once, and the
    hits (``cache_ttl`` 5 s: at +1 and +4.9, and +6 after the check at +5) none."""
    public = CountingPublicKey(rsa_key().public_key())
    keys = KeySet([VerificationKey("RS256", public, "r")])
    v = JwtVerifier(JwtSettings(algorithms=frozenset({"RS256"})), cache_ttl=5)
    t = sign(claims(), rsa_key(), "RS256", "r")
    for at in (0, 1, 4.9, 5, 6):
        assert isinstance(v.verify(t, NOW + at, keys), Identity)
    stats = v.cache.stats()
    assert (stats.misses, stats.hits, public.checks) == (2, 3, 2)
    forged = sign(claims(), rsa_key("b"), "RS256", "r")
    assert isinstance(v.verify(forged, NOW + 6, keys), AuthFailure)
    assert (v.cache.stats().misses, public.checks) == (3, 3)


def test_stats_count_entries_aliases_and_lookups() -> None:
    """``stats()`` says what the cache holds and how each kind of lookup went; a
    lookup by credential that finds nothing is not counted (a lookup by token follows)."""
    cache = TokenCache(2, 60)
    alice = Identity(subject="alice", method="jwt", expires_at=NOW + 3600)
    assert cache.stats() == TokenCacheStats(0, 0, 0, 0, 0)
    assert cache.get(b"t", NOW, KEYS_A) is None
    cache.put(b"t", alice, NOW, 60)
    cache.alias(b"Bearer t", b"t")
    cache.alias(b"Bearer u", b"u")  # no entry for u: nothing filed
    assert cache.get(b"t", NOW + 1, KEYS_A) is alice
    assert cache.get_alias(b"Bearer t", NOW + 1, KEYS_A) is alice
    assert cache.get_alias(b"Bearer u", NOW + 1, KEYS_A) is None
    assert cache.stats() == TokenCacheStats(entries=1, aliases=1, hits=1, alias_hits=1,
                                            misses=1)
    assert cache.get(b"t", NOW + 60, KEYS_A) is None  # past the TTL: dropped
    assert cache.stats() == TokenCacheStats(entries=0, aliases=1, hits=1, alias_hits=1,
                                            misses=2)


async def test_a_jwks_rotation_that_drops_a_key_refuses_its_cached_tokens(tmp_path: Path) -> None:
    """Once the JWKS is refetched without the signing key, a token verified before is refused."""
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(jwk_of(rsa_key(), "k1")))
    clock = FakeClock()
    auth = authenticator(str(path), clock)
    headers = bearer(sign(claims(), rsa_key(), "RS256", "k1"))
    assert isinstance(await auth.authenticate(headers, b""), Identity)
    path.write_bytes(jwks(jwk_of(rsa_key("b"), "k2")))
    clock.advance(301)  # past the JWKS TTL: the next request refetches
    refused = await auth.authenticate(headers, b"")
    assert isinstance(refused, AuthFailure) and "k1" in refused.description


TOKENS = [token(exp=NOW + 5), token(nbf=NOW + 20), token(), token("b", exp=NOW + 40), "x.y.z"]
KEYS = [None, KEYS_A, KEYS_B, KEYS_A + KEYS_B]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(TOKENS) - 1), st.floats(-100, 200),
                          st.integers(0, len(KEYS) - 1)), max_size=30),
       st.integers(1, 3), st.floats(1, 100))
def test_cached_answers_equal_uncached_ones(
    calls: list[tuple[int, float, int]], size: int, ttl: float
) -> None:
    """For any tokens, times (also going back) and key sets, the cache changes no answer."""
    cached, plain = verifier(cache_size=size, cache_ttl=ttl), verifier(cache_ttl=0)
    for i, offset, k in calls:
        assert cached.verify(TOKENS[i], NOW + offset, KEYS[k]) == plain.verify(
            TOKENS[i], NOW + offset, KEYS[k])
