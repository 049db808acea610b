"""Identity headers: what the gateway forwards, and that clients cannot forge them."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from qanat.security import (
    AuthFailure,
    Identity,
    challenge,
    identity_headers,
    strip_identity_headers,
)
from qanat.security.identity import IDENTITY_HEADER_PREFIXES

texts = st.text(min_size=1, max_size=40)


def test_identity_headers_carry_every_known_field() -> None:
    """Subject, method, issuer, audience, scopes, forwarded claims and consumer all travel."""
    ident = Identity(
        subject="alice",
        method="jwt",
        consumer="shop",
        issuer="https://idp",
        audience=("a", "b"),
        scopes=("read", "write"),
        claims=(("tenant_id", "t1"),),
    )
    assert dict(identity_headers(ident)) == {
        b"x-qanat-identity-subject": b"alice",
        b"x-qanat-identity-method": b"jwt",
        b"x-qanat-identity-issuer": b"https://idp",
        b"x-qanat-identity-audience": b"a b",
        b"x-qanat-identity-scopes": b"read write",
        b"x-qanat-identity-claim-tenant-id": b"t1",
        b"x-consumer-username": b"shop",
    }


@given(texts, texts)
def test_values_round_trip_and_are_safe_header_bytes(subject: str, claim: str) -> None:
    """Any Unicode value is sent as visible ASCII and decodes back with ``unquote``."""
    ident = Identity(subject=subject, method="jwt", claims=(("c", claim),))
    headers = dict(identity_headers(ident))
    for value in headers.values():
        assert all(0x21 <= b < 0x7F for b in value), value
    assert unquote(headers[b"x-qanat-identity-subject"].decode()) == subject
    assert unquote(headers[b"x-qanat-identity-claim-c"].decode()) == claim


@given(
    st.lists(
        st.tuples(
            st.sampled_from([p.decode() for p in IDENTITY_HEADER_PREFIXES] + ["x-other-", ""]),
            st.text("abcXYZ-", min_size=1, max_size=8),
            st.binary(max_size=8),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_strip_removes_exactly_the_forgeable_headers(
    raw: list[tuple[str, str, bytes]], upper: bool
) -> None:
    """Every header under an identity prefix goes, whatever its case; every other header stays."""
    headers = [((p + n).upper().encode() if upper else (p + n).encode(), v) for p, n, v in raw]
    kept = strip_identity_headers(headers)
    expected = [h for h in headers if not h[0].lower().startswith(IDENTITY_HEADER_PREFIXES)]
    assert kept == expected


def test_forged_identity_is_replaced_by_the_verified_one() -> None:
    """Strip then add: the upstream sees only the gateway's identity headers."""
    forged = [(b"X-Qanat-Identity-Subject", b"admin"), (b"x-consumer-username", b"root")]
    headers = strip_identity_headers([*forged, (b"accept", b"*/*")])
    headers += identity_headers(Identity(subject="alice", method="apikey", consumer="alice"))
    subjects = [v for k, v in headers if k.lower() == b"x-qanat-identity-subject"]
    consumers = [v for k, v in headers if k.lower() == b"x-consumer-username"]
    assert subjects == [b"alice"] and consumers == [b"alice"]


def test_challenge_follows_rfc_6750() -> None:
    """A bad token: 401, ``error`` and a quote-free description; no token: a bare challenge."""
    status, headers, body = challenge(
        AuthFailure("invalid_token", 'bad "kid" \\ here'), request_id=b"r1"
    )
    h = dict(headers)
    assert status == 401
    assert h[b"www-authenticate"] == (
        b'Bearer realm="qanat", error="invalid_token", error_description="bad \'kid\' \' here"'
    )
    assert h[b"content-type"] == b"application/problem+json" and h[b"x-request-id"] == b"r1"
    assert b'"status":401' in body and b'"request_id":"r1"' in body
    bare = dict(challenge(AuthFailure(None, "Missing JWT token in request"))[1])
    assert bare[b"www-authenticate"] == b'Bearer realm="qanat"'
    assert challenge(AuthFailure("invalid_request", "dup"))[0] == 400
