"""JWT and API-key filters, and identity-header stripping, through a real gateway."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from test_gateway_support import Backend, RawClient, get, start_gateway, static

from qanat.gateway.app import Gateway
from qanat.security import hash_api_key

pytestmark = pytest.mark.integration
SECRET = "0123456789abcdef0123456789abcdef-gw"
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())


def pem(private: Any) -> str:
    data: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data.decode()


def token(alg: str, key: Any, kid: str, **claims: Any) -> str:
    body = {"sub": "alice", "iss": "https://idp.test", "aud": "shop",
            "exp": time.time() + 3600, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def unsigned(**claims: Any) -> str:
    def b64(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    body = {"sub": "root", "iss": "https://idp.test", "aud": "shop", "exp": time.time() + 60}
    return b64({"alg": "none", "kid": "hs"}) + "." + b64({**body, **claims}) + "."


@pytest.fixture
async def up() -> AsyncIterator[Backend]:
    b = await Backend("u").start()
    yield b
    await b.close()


@pytest.fixture
async def gw(up: Backend) -> AsyncIterator[Gateway]:
    jwt_config = {
        "algorithms": ["HS256", "RS256", "ES256"], "issuer": "https://idp.test",
        "audience": "shop", "leeway": 5, "forward_claims": ["tenant"],
        "keys": [{"kid": "hs", "alg": "HS256", "secret": SECRET},
                 {"kid": "rs", "alg": "RS256", "pem": pem(RSA)},
                 {"kid": "es", "alg": "ES256", "pem": pem(EC)}],
    }
    keys = {"consumers": [{"name": "shop-web", "key_sha256": hash_api_key("k-123")}]}
    gateway = await start_gateway([
        {"name": "jwt", "match": {"prefix": "/jwt"}, "upstream": static(up),
         "filters": [{"name": "jwt", "config": jwt_config}]},
        {"name": "key", "match": {"prefix": "/key"}, "upstream": static(up),
         "filters": [{"name": "key_auth", "config": keys}]},
        {"name": "open", "match": {"prefix": "/open"}, "upstream": static(up)},
    ])
    yield gateway
    await gateway.aclose(timeout=1)


async def ask(gw: Gateway, path: str, extra: str = "") -> Any:
    client = await RawClient.connect(gw.port)
    try:
        return await client.request(get(path, extra=extra))
    finally:
        await client.close()


@pytest.mark.parametrize(("alg", "key", "kid"), [("HS256", SECRET, "hs"), ("RS256", RSA, "rs"),
                                                 ("ES256", EC, "es")])
async def test_valid_jwt_passes_with_identity_headers(
    gw: Gateway, up: Backend, alg: str, key: Any, kid: str
) -> None:
    """A valid token reaches the upstream as identity headers; the token itself does not."""
    tok = token(alg, key, kid, tenant="t1")
    reply = await ask(gw, "/jwt/a", f"Authorization: Bearer {tok}\r\n")
    assert reply.status == 200
    sent = up.seen[-1].headers
    assert sent["x-qanat-identity-subject"] == "alice"
    assert sent["x-qanat-identity-method"] == "jwt"
    assert sent["x-qanat-identity-issuer"] == "https://idp.test"
    assert sent["x-qanat-identity-claim-tenant"] == "t1"
    assert "authorization" not in sent


@pytest.mark.parametrize(("header", "error"), [
    ("", None),
    ("Authorization: Bearer not.a.token\r\n", "invalid_token"),
    (f"Authorization: Bearer {unsigned()}\r\n", "invalid_token"),
])
async def test_bad_or_missing_jwt_gets_401_with_challenge(
    gw: Gateway, up: Backend, header: str, error: str | None
) -> None:
    """No token: a bare Bearer challenge; a garbled or ``alg: none`` token: invalid_token."""
    reply = await ask(gw, "/jwt/a", header)
    assert reply.status == 401 and up.count() == 0
    challenge = reply.headers[b"www-authenticate"].decode()
    assert challenge.startswith('Bearer realm="qanat"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    assert reply.headers[b"content-type"] == b"application/problem+json"


async def test_expired_and_wrong_audience_tokens_are_refused(gw: Gateway, up: Backend) -> None:
    """An expired token (past the leeway) and a token for another audience both get 401."""
    old = token("HS256", SECRET, "hs", exp=time.time() - 60)
    other = token("HS256", SECRET, "hs", aud="billing")
    for tok in (old, other):
        reply = await ask(gw, "/jwt/a", f"Authorization: Bearer {tok}\r\n")
        assert reply.status == 401
    assert up.count() == 0


async def test_hs256_forged_with_the_rsa_public_key_is_refused(gw: Gateway, up: Backend) -> None:
    """Algorithm confusion: an HS256 token keyed with the RS256 public PEM gets 401."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "kid": "rs"}).encode())
    body = b64(json.dumps({"sub": "root", "iss": "https://idp.test", "aud": "shop",
                           "exp": time.time() + 60}).encode())
    sig = b64(hmac.new(pem(RSA).encode(), head + b"." + body, hashlib.sha256).digest())
    forged = (head + b"." + body + b"." + sig).decode()
    reply = await ask(gw, "/jwt/a", f"Authorization: Bearer {forged}\r\n")
    assert reply.status == 401 and up.count() == 0


async def test_forged_identity_headers_are_stripped_everywhere(gw: Gateway, up: Backend) -> None:
    """Client-sent identity headers never reach the upstream, on open or authenticated routes."""
    forged = ("X-Qanat-Identity-Subject: admin\r\nx-consumer-username: admin\r\n"
              "X-Credential-Identifier: x\r\n")
    assert (await ask(gw, "/open/a", forged)).status == 200
    sent = up.seen[-1].headers
    assert not any(k.startswith(("x-qanat-identity-", "x-consumer-", "x-credential-"))
                   for k in sent)
    tok = token("HS256", SECRET, "hs")
    assert (await ask(gw, "/jwt/a", forged + f"Authorization: Bearer {tok}\r\n")).status == 200
    assert up.seen[-1].headers["x-qanat-identity-subject"] == "alice"
    assert "x-consumer-username" not in up.seen[-1].headers


async def test_api_key_in_header_or_query_is_checked_and_hidden(
    gw: Gateway, up: Backend
) -> None:
    """A valid key (header or query) passes as the consumer; the key never goes upstream."""
    assert (await ask(gw, "/key/a", "apikey: k-123\r\n")).status == 200
    sent = up.seen[-1]
    assert "apikey" not in sent.headers and sent.headers["x-consumer-username"] == "shop-web"
    assert (await ask(gw, "/key/a?x=1&apikey=k-123")).status == 200
    assert up.seen[-1].path == "/key/a?x=1"
    assert up.seen[-1].headers["x-qanat-identity-subject"] == "shop-web"


@pytest.mark.parametrize(("extra", "detail"), [("", "Missing API key"),
                                               ("apikey: nope\r\n", "Invalid API key")])
async def test_missing_or_invalid_api_key_gets_401(
    gw: Gateway, up: Backend, extra: str, detail: str
) -> None:
    """APISIX's answers: 401 Missing/Invalid API key, with a Key challenge; nothing proxied."""
    reply = await ask(gw, "/key/a", extra)
    assert reply.status == 401 and up.count() == 0
    assert reply.headers[b"www-authenticate"].startswith(b'Key realm="qanat"')
    assert reply.json()["detail"] == detail
