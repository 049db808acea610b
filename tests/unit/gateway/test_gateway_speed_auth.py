"""The auth filter remembers identity headers per identity without mixing callers up."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qanat.gateway import filters_auth
from qanat.gateway.filters import Exchange, HeaderList, Reply
from qanat.gateway.filters_auth import AuthFilter
from qanat.security import AuthFailure, Identity, identity_headers

NAMES = ["alice", "bob", "carol", "dave", "eve"]


def exchange() -> Exchange:
    return Exchange(b"GET", b"/", b"", [(b"accept", b"*/*")], host=b"h", authority=b"h",
                    peer=b"1.2.3.4", scheme=b"http", request_id=b"rid")


async def upstream_headers(auth: AuthFilter) -> HeaderList:
    seen: list[HeaderList] = []

    async def proxy(ex: Exchange) -> Reply:
        seen.append(list(ex.headers))
        return Reply(200, [])

    await auth(exchange(), proxy)
    return seen[0]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(["jwt", "key"]),
                          st.booleans()), min_size=1, max_size=20), st.integers(1, 3))
async def test_each_request_carries_its_own_identity_headers(
    callers: list[tuple[str, str, bool]], room: int
) -> None:
    """In any order of callers and any cache room, each request gets its own identity headers,
    whether its Identity is the very object of an earlier request (as the JWT cache hands
    out) or an equal new one."""
    current: list[Identity] = []
    made: dict[tuple[str, str], Identity] = {}

    async def authenticate(headers: HeaderList, query: bytes) -> Identity | AuthFailure:
        return current[0]

    auth = AuthFilter(authenticate, lambda headers, query: (list(headers), query))
    saved, filters_auth._MAX_IDENTITIES = filters_auth._MAX_IDENTITIES, room
    try:
        for subject, method, same in callers:
            new = Identity(subject=subject, method="jwt" if method == "jwt" else "apikey",
                           scopes=(method,))
            current[:] = [made.setdefault((subject, method), new) if same else new]
            got = await upstream_headers(auth)
            assert got == [(b"accept", b"*/*"), *identity_headers(current[0])]
            assert len(auth._headers) <= room
    finally:
        filters_auth._MAX_IDENTITIES = saved


SECRET = "0123456789abcdef0123456789abcdef-hs256"


def test_a_token_answered_by_its_alias_forwards_the_same_request() -> None:
    """The jwt filter forwards the same headers (its identity headers, no credential, no
    forged identity) and query whether it verified the token or answered the repeated
    Authorization value from its alias: ten requests, each as a new filter's first."""
    import jwt

    token = jwt.encode({"sub": "alice", "exp": 4_000_000_000, "scope": "read"}, SECRET,
                       algorithm="HS256")
    config = {"algorithms": ["HS256"], "keys": [{"alg": "HS256", "secret": SECRET}]}

    def forwarded(auth: AuthFilter) -> tuple[HeaderList, bytes]:
        ex = Exchange(b"GET", b"/", b"?a=1&jwt=other",
                      [(b"host", b"h"), (b"authorization", f"Bearer {token}".encode()),
                       (b"cookie", b"a=1; jwt=other"), (b"x-qanat-identity-subject", b"root")],
                      host=b"h", authority=b"h", peer=b"1.2.3.4", scheme=b"http",
                      request_id=b"rid")
        assert auth.on_request(ex) is None
        return ex.headers, ex.query

    expected = ([(b"host", b"h"), (b"cookie", b"a=1"), *identity_headers(
        Identity(subject="alice", method="jwt", scopes=("read",), expires_at=4e9))], b"?a=1")
    same = filters_auth.jwt_filter(config, "r")
    assert [forwarded(same) for _ in range(10)] == [expected] * 10
    assert forwarded(filters_auth.jwt_filter(config, "r")) == expected
