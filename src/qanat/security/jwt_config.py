"""``JwtSettings`` from a route's filter config, checked strictly.

::

    filters:
      - name: jwt_auth
        config:
          algorithms: [RS256, ES256]        # the allow-list; required
          keys:                             # inline keys, each bound to one algorithm
            - {kid: k1, alg: RS256, pem: "-----BEGIN PUBLIC KEY-----\\n..."}
            - {alg: HS256, secret_base64: "..."}
          jwks: {source: "https://idp.example/.well-known/jwks.json", ttl: 300}
          issuer: https://idp.example       # a string or a list
          audience: [orders-api]
          leeway: 60                        # seconds of clock skew for exp/nbf
          required_claims: [exp]
          required_scopes: [orders:read]
          forward_claims: [email, tenant]
          header: authorization             # then query, then cookie; null disables one
          query: jwt
          cookie: jwt
          hide_credentials: true
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qanat.errors import ConfigError
from qanat.security.identity import valid_claim_name
from qanat.security.jwks import check_source
from qanat.security.jwt import DEFAULT_LEEWAY, JwksSettings, JwtSettings
from qanat.security.keys import KeySet, check_alg, key_from_config

_OPTIONS = {
    "algorithms",
    "keys",
    "jwks",
    "issuer",
    "audience",
    "leeway",
    "required_claims",
    "required_scopes",
    "subject_claim",
    "forward_claims",
    "header",
    "query",
    "cookie",
    "hide_credentials",
}


def _str_list(value: Any, where: str, *, allow_one: bool = False) -> tuple[str, ...]:
    if allow_one and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError("expected a list of non-empty strings", source=where)
    return tuple(value)


def _seconds(value: Any, where: str, *, zero_ok: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(
            f"expected a number of seconds {'>= 0' if zero_ok else '> 0'}, got {value!r}",
            source=where,
        )
    return float(value)


def _jwks(raw: Any, where: str) -> JwksSettings:
    if isinstance(raw, str):
        raw = {"source": raw}
    if not isinstance(raw, Mapping) or not set(raw) <= {
        "source",
        "ttl",
        "min_refresh_interval",
        "timeout",
    }:
        raise ConfigError(
            "jwks is a URL/path or {source, ttl?, min_refresh_interval?, timeout?}", source=where
        )
    check_source(raw.get("source"))  # type: ignore[arg-type]
    d = JwksSettings(raw["source"])
    return JwksSettings(
        d.source,
        _seconds(raw.get("ttl", d.ttl), f"{where}.ttl"),
        _seconds(
            raw.get("min_refresh_interval", d.min_refresh_interval),
            f"{where}.min_refresh_interval",
            zero_ok=True,
        ),
        _seconds(raw.get("timeout", d.timeout), f"{where}.timeout"),
    )


def _location(config: Mapping[str, Any], name: str, default: str, source: str) -> str | None:
    value = config.get(name, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{name} must be a non-empty string or null", source=f"{source}.{name}")
    return value.lower() if value is not None and name == "header" else value


def jwt_settings_from_config(config: Mapping[str, Any], source: str = "jwt_auth") -> JwtSettings:
    """Validate a ``jwt_auth`` filter config; every mistake is a ConfigError naming the field."""
    extra = set(config) - _OPTIONS
    if extra:
        raise ConfigError(
            f"unknown options {sorted(extra)} (known: {sorted(_OPTIONS)})", source=source
        )
    if "algorithms" not in config:
        raise ConfigError("algorithms is required: the allow-list, e.g. [RS256]", source=source)
    algs = frozenset(
        check_alg(a, f"{source}.algorithms")
        for a in _str_list(config["algorithms"], f"{source}.algorithms")
    )
    if not algs:
        raise ConfigError("algorithms cannot be empty", source=f"{source}.algorithms")
    raw_keys = config.get("keys", [])
    if not isinstance(raw_keys, list):
        raise ConfigError("keys must be a list", source=f"{source}.keys")
    keys = []
    for i, raw in enumerate(raw_keys):
        where = f"{source}.keys[{i}]"
        if not isinstance(raw, Mapping):
            raise ConfigError("each key is {alg, secret | secret_base64 | pem, kid?}", source=where)
        keys.append(key_from_config(raw, algs, where))
    jwks = _jwks(config["jwks"], f"{source}.jwks") if config.get("jwks") is not None else None
    if not keys and jwks is None:
        raise ConfigError("give keys, jwks or both: there is nothing to verify with", source=source)
    issuer = config.get("issuer")
    audience = config.get("audience")
    forward = _str_list(config.get("forward_claims", []), f"{source}.forward_claims")
    bad = [c for c in forward if not valid_claim_name(c)]
    if bad:
        raise ConfigError(
            f"claim names {bad} cannot be header names ([A-Za-z0-9_.-])",
            source=f"{source}.forward_claims",
        )
    hide = config.get("hide_credentials", True)
    if not isinstance(hide, bool):
        raise ConfigError("hide_credentials must be true or false", source=source)
    subject = config.get("subject_claim", "sub")
    if not isinstance(subject, str) or not subject:
        raise ConfigError("subject_claim must be a claim name", source=f"{source}.subject_claim")
    return JwtSettings(
        algorithms=algs,
        keys=KeySet(keys),
        jwks=jwks,
        issuer=None
        if issuer is None
        else frozenset(_str_list(issuer, f"{source}.issuer", allow_one=True)),
        audience=None
        if audience is None
        else frozenset(_str_list(audience, f"{source}.audience", allow_one=True)),
        leeway=_seconds(config.get("leeway", DEFAULT_LEEWAY), f"{source}.leeway", zero_ok=True),
        required_claims=_str_list(
            config.get("required_claims", ["exp"]), f"{source}.required_claims"
        ),
        required_scopes=_str_list(config.get("required_scopes", []), f"{source}.required_scopes"),
        subject_claim=subject,
        forward_claims=forward,
        header=_location(config, "header", "authorization", source),
        query=_location(config, "query", "jwt", source),
        cookie=_location(config, "cookie", "jwt", source),
        hide_credentials=hide,
    )


__all__ = ["jwt_settings_from_config"]
