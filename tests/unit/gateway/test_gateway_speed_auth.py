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
