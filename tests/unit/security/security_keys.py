"""Keys and token builders for the security tests (keys are generated here, never stored)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

NOW = 1_700_000_000.0
SECRET = b"0123456789abcdef0123456789abcdef-hs256"


@cache
def rsa_key(label: str = "a") -> rsa.RSAPrivateKey:
    """An RSA-2048 private key, one per label per test session."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(label: str = "a") -> ec.EllipticCurvePrivateKey:
    """A P-256 private key, one per label per test session."""
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private: Any) -> str:
    """The SubjectPublicKeyInfo PEM of ``private``'s public key."""
    pem: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def claims(**extra: Any) -> dict[str, Any]:
    """Valid claims at ``NOW`` (sub, exp in an hour), updated with ``extra``; None removes."""
    out: dict[str, Any] = {"sub": "alice", "exp": NOW + 3600, "iat": NOW}
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def sign(payload: dict[str, Any], key: Any, alg: str, kid: str | None = None) -> str:
    """A JWS made by PyJWT (the issuer's side)."""
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def forge_hmac(payload: dict[str, Any], secret: bytes, header: dict[str, Any]) -> bytes:
    """An HS256 token signed by hand (PyJWT refuses PEM secrets; an attacker does not)."""
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(payload).encode())
    sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return signing_input + b"." + b64(sig)


def unsigned(payload: dict[str, Any], header: dict[str, Any] | None = None) -> bytes:
    """An ``alg: none`` token with an empty signature."""
    head = header or {"alg": "none", "typ": "JWT"}
    return b64(json.dumps(head).encode()) + b"." + b64(json.dumps(payload).encode()) + b"."


def jwk_of(private: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    """The public JWK of ``private`` with ``kid`` (and ``alg`` when given)."""
    algo = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(private, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm
    )
    doc: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
    doc["kid"] = kid
    if alg:
        doc["alg"] = alg
    return doc
