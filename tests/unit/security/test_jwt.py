"""JWT verification rules: algorithms bound to keys, claims, leeway, token locations."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from tests.unit.security.security_keys import (
    NOW,
    SECRET,
    claims,
    ec_key,
    forge_hmac,
    public_pem,
    rsa_key,
    sign,
    unsigned,
)

from qanat.errors import ConfigError
from qanat.security import (
    AuthFailure,
    Identity,
    JwtVerifier,
    extract_token,
    jwt_settings_from_config,
)
from qanat.security.jwt import strip_credentials


def verifier(**config: Any) -> JwtVerifier:
    base: dict[str, Any] = {
        "algorithms": ["HS256", "RS256", "ES256"],
        "keys": [
            {"alg": "HS256", "secret": SECRET.decode(), "kid": "hs"},
            {"alg": "RS256", "pem": public_pem(rsa_key()), "kid": "rs"},
            {"alg": "ES256", "pem": public_pem(ec_key()), "kid": "es"},
        ],
    }
    base.update(config)
    return JwtVerifier(jwt_settings_from_config(base))


def refused(result: Identity | AuthFailure, words: str) -> None:
    assert isinstance(result, AuthFailure), result
    assert result.error == "invalid_token"
    assert words in result.description


@pytest.mark.parametrize(
    ("alg", "key", "kid"),
    [("HS256", SECRET, "hs"), ("RS256", rsa_key(), "rs"), ("ES256", ec_key(), "es")],
)
def test_each_algorithm_verifies_with_its_key(alg: str, key: Any, kid: str) -> None:
    """A token signed with HS256, RS256 or ES256 by the matching key yields its identity."""
    result = verifier().verify(sign(claims(scope="read write"), key, alg, kid), NOW)
    assert isinstance(result, Identity)
    assert (result.subject, result.method, result.scopes) == ("alice", "jwt", ("read", "write"))
    assert result.expires_at == NOW + 3600


def test_token_without_kid_is_tried_against_keys_of_its_algorithm() -> None:
    """With no ``kid`` the verifier tries every key whose algorithm matches the token's."""
    assert isinstance(verifier().verify(sign(claims(), rsa_key(), "RS256"), NOW), Identity)


def test_tampered_payload_fails_signature() -> None:
    """Changing one claim after signing breaks the signature."""
    token = sign(claims(), rsa_key(), "RS256", "rs")
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    refused(verifier().verify(f"{head}.{forged}.{sig}", NOW), "signature")


def test_signature_from_another_key_fails() -> None:
    """A token signed by a different RSA key with the same kid is refused."""
    token = sign(claims(), rsa_key("other"), "RS256", "rs")
    refused(verifier().verify(token, NOW), "signature")


def test_alg_none_is_rejected_even_if_allowed_by_name() -> None:
    """``alg: none`` never passes, in any capitalisation."""
    for alg in ("none", "None", "NONE"):
        refused(verifier().verify(unsigned(claims(), {"alg": alg}), NOW), "alg none")


def test_alg_none_cannot_be_configured() -> None:
    """Putting ``none`` in the allow-list is a configuration error."""
    with pytest.raises(ConfigError, match="never accepted"):
        verifier(algorithms=["none"])


def test_hmac_signed_with_rsa_public_pem_is_rejected() -> None:
    """Algorithm confusion: HS256 keyed with the RSA public key's PEM bytes must fail."""
    pem = public_pem(rsa_key()).encode()
    for kid in ("rs", None):
        header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
        result = verifier().verify(forge_hmac(claims(), pem, header), NOW)
        refused(result, "HS256" if kid else "signature")


def test_hmac_signed_with_ec_public_pem_is_rejected_without_any_hmac_key() -> None:
    """Algorithm confusion against an EC key fails even when HS256 is in the allow-list."""
    pem = public_pem(ec_key()).encode()
    v = verifier(keys=[{"alg": "ES256", "pem": pem.decode(), "kid": "es"}])
    refused(v.verify(forge_hmac(claims(), pem, {"alg": "HS256", "kid": "es"}), NOW), "HS256")
    refused(v.verify(forge_hmac(claims(), pem, {"alg": "HS256"}), NOW), "no HS256 key")


def test_algorithm_outside_allow_list_is_rejected() -> None:
    """A correctly signed token whose algorithm the route does not allow is refused."""
    v = verifier(algorithms=["RS256"], keys=[{"alg": "RS256", "pem": public_pem(rsa_key())}])
    refused(v.verify(sign(claims(), ec_key(), "ES256"), NOW), "not allowed")


def test_public_key_pem_as_hmac_secret_is_a_config_error() -> None:
    """Configuring a PEM public key as an HS256 secret is refused at load time."""
    with pytest.raises(ConfigError, match="algorithm-confusion"):
        verifier(keys=[{"alg": "HS256", "secret": public_pem(rsa_key())}])


def test_short_hmac_secret_is_a_config_error() -> None:
    """An HS256 secret under 32 bytes is refused (RFC 7518 §3.2)."""
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        verifier(keys=[{"alg": "HS256", "secret": "short"}])


def test_key_of_wrong_type_for_algorithm_is_a_config_error() -> None:
    """An EC public key declared as RS256 is refused."""
    with pytest.raises(ConfigError, match="RSA public key"):
        verifier(keys=[{"alg": "RS256", "pem": public_pem(ec_key())}])


@pytest.mark.parametrize(("age", "ok"), [(59.0, True), (60.0, False), (3600.0, False)])
def test_expiry_honours_leeway(age: float, ok: bool) -> None:
    """A token expired less than ``leeway`` (60 s) ago passes; at or past it, it does not."""
    token = sign(claims(exp=NOW - age), SECRET, "HS256", "hs")
    result = verifier().verify(token, NOW)
    if ok:
        assert isinstance(result, Identity)
    else:
        refused(result, "expired")


def test_zero_leeway_is_strict() -> None:
    """With ``leeway: 0`` a token is refused from the second of its ``exp`` on."""
    token = sign(claims(exp=NOW + 1), SECRET, "HS256", "hs")
    assert isinstance(verifier(leeway=0).verify(token, NOW + 0.5), Identity)
    refused(verifier(leeway=0).verify(token, NOW + 1), "expired")


@pytest.mark.parametrize(("ahead", "ok"), [(60.0, True), (61.0, False)])
def test_not_before_honours_leeway(ahead: float, ok: bool) -> None:
    """``nbf`` up to ``leeway`` in the future passes; further ahead it does not."""
    token = sign(claims(nbf=NOW + ahead), SECRET, "HS256", "hs")
    result = verifier().verify(token, NOW)
    assert isinstance(result, Identity) if ok else "not valid yet" in str(result)


def test_exp_is_required_by_default() -> None:
    """A token without ``exp`` is refused unless required_claims says otherwise."""
    token = sign(claims(exp=None), SECRET, "HS256", "hs")
    refused(verifier().verify(token, NOW), "'exp'")
    assert isinstance(verifier(required_claims=[]).verify(token, NOW), Identity)


def test_non_numeric_exp_is_rejected() -> None:
    """``exp`` as a string is refused rather than ignored."""
    token = forge_hmac(claims(exp="tomorrow"), SECRET, {"alg": "HS256", "kid": "hs"})
    refused(verifier().verify(token, NOW), "not a number")


def test_issuer_must_match() -> None:
    """With ``issuer`` set, a token from another issuer (or none) is refused."""
    v = verifier(issuer=["https://idp.example"])
    good = sign(claims(iss="https://idp.example"), SECRET, "HS256", "hs")
    result = v.verify(good, NOW)
    assert isinstance(result, Identity) and result.issuer == "https://idp.example"
    refused(v.verify(sign(claims(iss="https://evil"), SECRET, "HS256", "hs"), NOW), "issuer")
    refused(v.verify(sign(claims(), SECRET, "HS256", "hs"), NOW), "issuer")


def test_audience_must_intersect() -> None:
    """With ``audience`` set, the token's ``aud`` (string or list) must name one of them."""
    v = verifier(audience="orders")
    assert isinstance(
        v.verify(sign(claims(aud=["x", "orders"]), SECRET, "HS256", "hs"), NOW), Identity
    )
    refused(v.verify(sign(claims(aud="billing"), SECRET, "HS256", "hs"), NOW), "audience")
    refused(v.verify(sign(claims(), SECRET, "HS256", "hs"), NOW), "audience")


def test_token_with_audience_is_refused_when_route_expects_none() -> None:
    """RFC 7519 §4.1.3: a recipient not named in ``aud`` rejects the token."""
    refused(verifier().verify(sign(claims(aud="other"), SECRET, "HS256", "hs"), NOW), "audience")


def test_crit_header_is_refused() -> None:
    """A token declaring critical extensions is refused (we understand none)."""
    unknown = forge_hmac(claims(), SECRET, {"alg": "HS256", "kid": "hs", "crit": ["x-acme"]})
    assert isinstance(verifier().verify(unknown, NOW), AuthFailure)
    known_to_pyjwt = {"alg": "HS256", "kid": "hs", "crit": ["b64"], "b64": True}
    refused(verifier().verify(forge_hmac(claims(), SECRET, known_to_pyjwt), NOW), "critical")


def test_unknown_kid_is_reported_for_jwks_refresh() -> None:
    """A kid that no key has yields a failure carrying ``unknown_kid``."""
    result = verifier().verify(sign(claims(), rsa_key(), "RS256", "rotated"), NOW)
    assert isinstance(result, AuthFailure) and result.unknown_kid == "rotated"


def test_malformed_and_oversized_tokens_are_refused() -> None:
    """Garbage and tokens over 8 KiB are refused without raising."""
    v = verifier()
    for token in (b"", b"abc", b"a.b.c", b"\xff\xfe.x.y"):
        refused(v.verify(token, NOW), "malformed")
    refused(v.verify(b"a" * 9000, NOW), "longer than")


def test_required_scope_missing_is_403() -> None:
    """A valid token without a required scope gets ``insufficient_scope`` (403)."""
    v = verifier(required_scopes=["orders:write"])
    result = v.verify(sign(claims(scp=["orders:read"]), SECRET, "HS256", "hs"), NOW)
    assert isinstance(result, AuthFailure) and result.error == "insufficient_scope"
    assert result.status == 403
    ok = v.verify(sign(claims(scope="orders:read orders:write"), SECRET, "HS256", "hs"), NOW)
    assert isinstance(ok, Identity)


def test_forward_claims_are_copied_as_text() -> None:
    """Configured claims are kept (non-strings as compact JSON); others are dropped."""
    v = verifier(forward_claims=["email", "roles", "absent"])
    token = sign(claims(email="a@x.io", roles=["admin"], secret="no"), SECRET, "HS256", "hs")
    result = v.verify(token, NOW)
    assert isinstance(result, Identity)
    assert result.claims == (("email", "a@x.io"), ("roles", '["admin"]'))


def test_subject_claim_is_required_and_configurable() -> None:
    """The subject comes from ``subject_claim``; a token without it is refused."""
    token = sign(claims(sub=None, uid="u-7"), SECRET, "HS256", "hs")
    refused(verifier().verify(token, NOW), "'sub'")
    result = verifier(subject_claim="uid").verify(token, NOW)
    assert isinstance(result, Identity) and result.subject == "u-7"


def test_config_errors_name_the_field() -> None:
    """Bad options fail with a ConfigError that says where."""
    with pytest.raises(ConfigError, match=r"jwt_auth: unknown options \['leway'\]"):
        verifier(leway=3)
    with pytest.raises(ConfigError, match=r"jwt_auth.leeway"):
        verifier(leeway=-1)
    with pytest.raises(ConfigError, match=r"nothing to verify"):
        jwt_settings_from_config({"algorithms": ["RS256"]})
    with pytest.raises(ConfigError, match=r"not in this route's algorithms"):
        verifier(algorithms=["RS256"])


# -- where the token comes from ---------------------------------------------------------


def settings() -> Any:
    return jwt_settings_from_config(
        {"algorithms": ["HS256"], "keys": [{"alg": "HS256", "secret": SECRET.decode()}]}
    )


def test_bearer_header_wins_over_query_and_cookie() -> None:
    """Header first, then query, then cookie, as APISIX jwt-auth."""
    s = settings()
    headers = [(b"authorization", b"Bearer H"), (b"cookie", b"a=1; jwt=C")]
    assert extract_token(s, headers, b"jwt=Q") == b"H"
    assert extract_token(s, headers[1:], b"x=1&jwt=Q") == b"Q"
    assert extract_token(s, headers[1:], b"x=1") == b"C"


def test_non_bearer_authorization_is_passed_over() -> None:
    """``Authorization: Basic ...`` is not a JWT; the query is still looked at."""
    assert extract_token(settings(), [(b"authorization", b"Basic dTpw")], b"jwt=Q") == b"Q"


def test_missing_token_gets_bare_challenge() -> None:
    """No token anywhere is a failure without an error code (RFC 6750 §3.1)."""
    result = extract_token(settings(), [], b"")
    assert isinstance(result, AuthFailure) and result.error is None and result.status == 401


def test_conflicting_duplicates_are_invalid_request() -> None:
    """Two different Authorization headers, or two different ``jwt`` parameters, are a 400."""
    s = settings()
    two = [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")]
    for headers, query in ((two, b""), ([], b"jwt=a&jwt=b")):
        result = extract_token(s, headers, query)
        assert isinstance(result, AuthFailure) and result.status == 400


def test_strip_credentials_removes_every_location() -> None:
    """The header, the query parameter and the cookie are all removed; the rest is kept."""
    headers = [
        (b"authorization", b"Bearer x"),
        (b"cookie", b"a=1; jwt=x; b=2"),
        (b"accept", b"*/*"),
    ]
    out, query = strip_credentials(settings(), headers, b"a=1&jwt=x&b=2")
    assert out == [(b"cookie", b"a=1; b=2"), (b"accept", b"*/*")]
    assert query == b"a=1&b=2"
