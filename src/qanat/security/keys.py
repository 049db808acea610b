"""Verification keys for JWTs: each key fixes its algorithm (RFC 8725 §3.1).

A ``VerificationKey`` pairs key material with the *one* algorithm it may
verify. The verifier never lets a token's ``alg`` header choose how a key is
used: a token is tried only against keys whose algorithm equals its ``alg``.
That closes algorithm confusion (an HS256 signature "keyed" with an RSA
public key's PEM bytes) twice over: such a token names HS256, and no RSA key
is an HS256 key; and an HMAC secret that looks like a PEM key is refused at
load time.

Keys come from config (an HMAC secret, or a PEM public key) or from a JWKS
document (RFC 7517) via ``keys_from_jwks``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError, PyJWKError

from qanat.errors import ConfigError

#: The algorithms qanat verifies; each family needs its own kind of key.
HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
SUPPORTED_ALGS = HMAC_ALGS | RSA_ALGS | frozenset(EC_CURVES)
# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
_MIN_SECRET = {"HS256": 32, "HS384": 48, "HS512": 64}
_PEM_MARKERS = (b"-----BEGIN", b"ssh-rsa", b"ssh-ed25519", b"ecdsa-sha2-")
_SIGNERS = get_default_algorithms()  # PyJWT's signers: HMAC, RSA(-PSS), ECDSA (raw r||s)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """Key material bound to one algorithm; ``kid`` is None for a key without an id."""

    alg: str
    key: Any  # bytes for HMAC, a cryptography public key otherwise
    kid: str | None = None

    def verifies(self, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` signs ``signing_input`` under this key's own algorithm
        (never the token header's)."""
        try:
            return bool(_SIGNERS[self.alg].verify(signing_input, self.key, signature))
        except (ValueError, TypeError):
            return False


class KeySet:
    """An immutable set of verification keys, looked up by ``kid``."""

    __slots__ = ("_all", "_by_kid")

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        self._all = tuple(keys)
        by_kid: dict[str, list[VerificationKey]] = {}
        for k in self._all:
            if k.kid is not None:
                by_kid.setdefault(k.kid, []).append(k)
        self._by_kid = {kid: tuple(ks) for kid, ks in by_kid.items()}

    def candidates(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...] | None:
        """Keys that may verify a token with this ``kid`` and ``alg``.

        A token with a ``kid`` is tried only against keys with that id; None
        means no key has the id (a JWKS refresh may bring it). A token without
        a ``kid`` is tried against every key of its algorithm.
        """
        if kid is None:
            return tuple(k for k in self._all if k.alg == alg)
        found = self._by_kid.get(kid)
        if found is None:
            return None
        return tuple(k for k in found if k.alg == alg)

    def __len__(self) -> int:
        return len(self._all)

    def __add__(self, other: KeySet) -> KeySet:
        return KeySet((*self._all, *other._all))

    @property
    def kids(self) -> frozenset[str]:
        """Every key id in the set."""
        return frozenset(self._by_kid)


def check_alg(alg: object, source: str) -> str:
    """``alg`` if it is a supported algorithm name, else ConfigError."""
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGS:
        raise ConfigError(
            f"unsupported algorithm {alg!r}; use one of {', '.join(sorted(SUPPORTED_ALGS))} "
            "('none' is never accepted)",
            source=source,
        )
    return alg


def hmac_key(
    secret: bytes, alg: str, kid: str | None = None, source: str = "key"
) -> VerificationKey:
    """An HMAC key; too short a secret, or one that is a public key, is a ConfigError."""
    if alg not in HMAC_ALGS:
        raise ConfigError(
            f"a shared secret can only be used with HS256/384/512, not {alg}", source=source
        )
    if secret.lstrip().startswith(_PEM_MARKERS):
        raise ConfigError(
            "this secret looks like a public key; give public keys as 'pem' with an RS/ES "
            "algorithm (an HMAC keyed with a public key is the algorithm-confusion attack)",
            source=source,
        )
    need = _MIN_SECRET[alg]
    if len(secret) < need:
        raise ConfigError(
            f"an {alg} secret must be at least {need} bytes (RFC 7518 §3.2), got {len(secret)}",
            source=source,
        )
    return VerificationKey(alg, secret, kid)


def _check_public(key: Any, alg: str, source: str) -> None:
    if alg in RSA_ALGS:
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError(
                f"{alg} needs an RSA public key, got {type(key).__name__}", source=source
            )
        if key.key_size < 2048:
            raise ConfigError(f"RSA keys must be >= 2048 bits, got {key.key_size}", source=source)
        return
    if alg in EC_CURVES:
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != EC_CURVES[alg]:
            raise ConfigError(f"{alg} needs an EC public key on {EC_CURVES[alg]}", source=source)
        return
    raise ConfigError(f"{alg} is not a public-key algorithm; use 'secret'", source=source)


def pem_key(pem: bytes, alg: str, kid: str | None = None, source: str = "key") -> VerificationKey:
    """A public key from PEM (SubjectPublicKeyInfo); its type must suit ``alg``."""
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError(
            f"not a PEM public key ({exc}); private keys do not belong here", source=source
        ) from None
    _check_public(key, alg, source)
    return VerificationKey(alg, key, kid)


def key_from_config(
    raw: Mapping[str, Any], allowed: frozenset[str], source: str
) -> VerificationKey:
    """One inline key: ``{alg, secret | secret_base64 | pem, kid?}``."""
    alg = check_alg(raw.get("alg"), f"{source}.alg")
    if alg not in allowed:
        raise ConfigError(
            f"{alg} is not in this route's algorithms {sorted(allowed)}", source=source
        )
    kid = raw.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ConfigError(f"kid must be a string, got {kid!r}", source=f"{source}.kid")
    given = [k for k in ("secret", "secret_base64", "pem") if raw.get(k) is not None]
    if len(given) != 1:
        raise ConfigError(
            f"give exactly one of secret, secret_base64, pem (got {given})", source=source
        )
    extra = set(raw) - {"alg", "kid", "secret", "secret_base64", "pem"}
    if extra:
        raise ConfigError(f"unknown key fields {sorted(extra)}", source=source)
    value = raw[given[0]]
    if not isinstance(value, str):
        raise ConfigError(f"{given[0]} must be a string", source=f"{source}.{given[0]}")
    if given[0] == "pem":
        return pem_key(value.encode(), alg, kid, source)
    if given[0] == "secret_base64":
        try:
            secret = base64.b64decode(value, validate=True)
        except ValueError:
            raise ConfigError("secret_base64 is not valid base64", source=source) from None
    else:
        secret = value.encode()
    return hmac_key(secret, alg, kid, source)


def keys_from_jwks(doc: object, allowed: frozenset[str]) -> tuple[KeySet, list[str]]:
    """The usable keys of a JWKS document, and why each other key was skipped.

    A key's algorithm is its ``alg`` member or, absent that, the one its type
    implies (RSA: RS256; EC: ES256/384/512 by curve; oct: HS256). Keys whose
    algorithm is not in ``allowed``, whose ``use`` is not ``sig``, or that
    fail to load are skipped (one bad key does not hide the rest).
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError("a JWKS document is a JSON object with a 'keys' array (RFC 7517 §5)")
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for i, jwk in enumerate(doc["keys"]):
        label = f"keys[{i}]" + (f" (kid {jwk.get('kid')!r})" if isinstance(jwk, Mapping) else "")
        try:
            keys.append(_key_from_jwk(jwk, allowed))
        except (ValueError, PyJWKError, InvalidKeyError, TypeError, KeyError) as exc:
            skipped.append(f"{label}: {exc}")
    return KeySet(keys), skipped


def _key_from_jwk(jwk: object, allowed: frozenset[str]) -> VerificationKey:
    if not isinstance(jwk, Mapping):
        raise ValueError("not a JSON object")
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"use is {jwk.get('use')!r}, not 'sig'")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    parsed = jwt.PyJWK(dict(jwk))
    alg = parsed.algorithm_name
    if alg not in allowed or alg not in SUPPORTED_ALGS:
        raise ValueError(f"algorithm {alg} is not allowed here")
    if alg in HMAC_ALGS:
        return hmac_key(parsed.key, alg, kid)
    try:
        _check_public(parsed.key, alg, "jwk")
    except ConfigError as exc:
        raise ValueError(exc.reason) from None
    return VerificationKey(alg, parsed.key, kid)


__all__ = [
    "SUPPORTED_ALGS",
    "KeySet",
    "VerificationKey",
    "check_alg",
    "hmac_key",
    "key_from_config",
    "keys_from_jwks",
    "pem_key",
]
