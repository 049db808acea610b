"""JWKS keys: parsing, TTL cache, rate-limited refresh on kid rotation, file and HTTP sources."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.servers import StreamServer
from tests.unit.security.security_keys import NOW, claims, ec_key, jwk_of, rsa_key, sign

from qanat.security import (
    AuthFailure,
    Identity,
    JwksCache,
    JwksSettings,
    JwtAuthenticator,
    jwt_settings_from_config,
)
from qanat.security.keys import keys_from_jwks
from qanat.testing import FakeClock

ALGS = frozenset({"RS256", "ES256"})


def jwks(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + token.encode())]


def authenticator(source: str, clock: FakeClock, **jwks_opts: Any) -> JwtAuthenticator:
    settings = jwt_settings_from_config(
        {"algorithms": sorted(ALGS), "jwks": {"source": source, **jwks_opts}}
    )
    assert settings.jwks is not None
    cache = JwksCache(settings.jwks, settings.algorithms, clock=clock)
    return JwtAuthenticator(settings, clock=lambda: NOW, jwks=cache)


def test_jwk_algorithm_comes_from_the_key_and_unusable_keys_are_reported() -> None:
    """The key fixes the algorithm; encryption keys and disallowed algorithms are skipped."""
    doc = {
        "keys": [
            jwk_of(rsa_key(), "r1"),  # no alg: RSA implies RS256
            jwk_of(ec_key(), "e1"),  # P-256 implies ES256
            {**jwk_of(rsa_key("b"), "enc"), "use": "enc"},
            jwk_of(rsa_key("c"), "ps", alg="PS256"),  # not in the allow-list
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
        ]
    }
    keys, skipped = keys_from_jwks(doc, ALGS)
    assert keys.kids == {"r1", "e1"}
    assert [k.alg for k in keys.candidates("r1", "RS256") or ()] == ["RS256"]
    assert keys.candidates("r1", "HS256") == ()
    assert len(skipped) == 3 and any("'enc'" in s for s in skipped)


def test_jwks_document_must_have_keys_array() -> None:
    """A document without a ``keys`` array is an error, not an empty set."""
    with pytest.raises(ValueError, match="keys"):
        keys_from_jwks({"kty": "RSA"}, ALGS)


async def test_rotation_through_a_file_is_picked_up_on_unknown_kid(tmp_path: Path) -> None:
    """A token signed with a new key verifies once the JWKS file has it, without waiting for TTL."""
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(jwk_of(rsa_key(), "k1")))
    clock = FakeClock()
    auth = authenticator(str(path), clock)
    assert isinstance(
        await auth.authenticate(bearer(sign(claims(), rsa_key(), "RS256", "k1")), b""), Identity
    )
    path.write_bytes(jwks(jwk_of(rsa_key(), "k1"), jwk_of(ec_key(), "k2")))
    clock.advance(30)  # past min_refresh_interval, well before the 300 s TTL
    result = await auth.authenticate(bearer(sign(claims(), ec_key(), "ES256", "k2")), b"")
    assert isinstance(result, Identity)
    assert auth.jwks is not None and auth.jwks.stats().fetches == 2


async def test_unknown_kid_refreshes_are_rate_limited(tmp_path: Path) -> None:
    """Within ``min_refresh_interval`` of a fetch, unknown kids cause no further fetches."""
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(jwk_of(rsa_key(), "k1")))
    clock = FakeClock()
    auth = authenticator(str(path), clock, min_refresh_interval=10)
    assert auth.jwks is not None
    for i in range(20):
        forged = sign(claims(), rsa_key(), "RS256", f"forged-{i}")
        result = await auth.authenticate(bearer(forged), b"")
        assert isinstance(result, AuthFailure) and result.unknown_kid == f"forged-{i}"
    stats = auth.jwks.stats()
    assert (stats.fetches, stats.refreshes_refused) == (1, 20)
    clock.advance(10)
    await auth.authenticate(bearer(sign(claims(), rsa_key(), "RS256", "again")), b"")
    assert auth.jwks.stats().fetches == 2


async def test_ttl_refetches_and_failure_keeps_last_good_keys(tmp_path: Path) -> None:
    """After ``ttl`` the set is refetched; a failed refetch keeps serving the old keys."""
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(jwk_of(rsa_key(), "k1")))
    clock = FakeClock()
    cache = JwksCache(JwksSettings(str(path), ttl=60), ALGS, clock=clock)
    assert (await cache.get()).kids == {"k1"}
    clock.advance(59)
    await cache.get()
    assert cache.stats().fetches == 1
    path.unlink()
    clock.advance(1)
    assert (await cache.get()).kids == {"k1"}
    stats = cache.stats()
    assert (stats.fetches, stats.failures) == (2, 1)
    assert stats.last_error is not None and "FileNotFoundError" in stats.last_error


async def test_concurrent_refreshes_share_one_fetch() -> None:
    """Many requests with the same new kid at once cause a single fetch."""
    calls = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def fetch(source: str, timeout: float) -> bytes:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return jwks(jwk_of(rsa_key(), "new"))

    cache = JwksCache(JwksSettings("keys.json", min_refresh_interval=0), ALGS, fetch=fetch)
    tasks = [asyncio.create_task(cache.refresh_for("new")) for _ in range(10)]
    await started.wait()  # the first fetch is in flight; the other nine queue on the lock
    assert not any(t.done() for t in tasks)
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1 and all(r.kids == {"new"} for r in results)


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A local HTTP server on 127.0.0.1:0 answering every GET with ``state['body']``."""
    state: dict[str, Any] = {"body": jwks(), "status": b"200 OK", "requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        state["requests"] += 1
        body = state["body"]
        writer.write(
            b"HTTP/1.0 " + state["status"] + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()

    async with StreamServer(handle) as server:
        yield f"http://127.0.0.1:{server.port}/.well-known/jwks.json", state


async def test_rotation_through_http(jwks_server: tuple[str, dict[str, Any]]) -> None:
    """Keys served over HTTP verify tokens, and a rotated key is fetched on its first use."""
    url, state = jwks_server
    state["body"] = jwks(jwk_of(rsa_key(), "k1", alg="RS256"))
    clock = FakeClock()
    auth = authenticator(url, clock)
    assert isinstance(
        await auth.authenticate(bearer(sign(claims(), rsa_key(), "RS256", "k1")), b""), Identity
    )
    state["body"] = jwks(jwk_of(rsa_key("rotated"), "k2", alg="RS256"))
    clock.advance(31)
    token = sign(claims(), rsa_key("rotated"), "RS256", "k2")
    assert isinstance(await auth.authenticate(bearer(token), b""), Identity)
    assert state["requests"] == 2


async def test_http_error_status_is_a_counted_failure(
    jwks_server: tuple[str, dict[str, Any]],
) -> None:
    """A non-200 answer leaves the cache empty and records the status."""
    url, state = jwks_server
    state["status"] = b"503 Service Unavailable"
    cache = JwksCache(JwksSettings(url), ALGS, clock=FakeClock())
    assert len(await cache.get()) == 0
    stats = cache.stats()
    assert stats.failures == 1 and stats.last_error is not None and "503" in stats.last_error


async def test_take_now_waits_for_nothing_and_leaves_fetches_to_take(tmp_path: Path) -> None:
    """``take_now`` answers only when no fetch is due: first use (nothing fetched), an
    unknown kid (a rotation may be published) and an expired TTL go to ``take``."""
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(jwk_of(rsa_key(), "k1")))
    clock = FakeClock()
    auth = authenticator(str(path), clock, min_refresh_interval=10)
    assert auth.jwks is not None
    headers = bearer(sign(claims(), rsa_key(), "RS256", "k1"))
    assert auth.take_now(headers, b"") is None  # nothing fetched yet
    assert isinstance((await auth.take(headers, b""))[0], Identity)
    now = auth.take_now(headers, b"")
    assert now is not None and now == await auth.take(headers, b"")
    assert auth.jwks.stats().fetches == 1
    clock.advance(10)  # a refresh is allowed again
    assert auth.take_now(bearer(sign(claims(), ec_key(), "ES256", "k2")), b"") is None
    clock.advance(300)  # past the TTL
    assert auth.take_now(headers, b"") is None
