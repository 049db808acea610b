"""``JwtAuthenticator.take``: one pass that answers exactly as ``authenticate`` then ``strip``."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.security.security_keys import NOW, SECRET, claims, sign

from qanat.security import AuthFailure, JwtAuthenticator, jwt_settings_from_config

GOOD = sign(claims(), SECRET, "HS256").encode()
names = st.sampled_from([b"authorization", b"Authorization", b"cookie", b"Cookie", b"accept",
                         b"x-token", b"cookies"])
values = st.sampled_from([b"Bearer " + GOOD, b"Bearer bad", b"Basic dTpw", b"jwt=" + GOOD,
                          b"jwt=t; a=1", b"a=1", GOOD, b"*/*", b""])
queries = st.sampled_from([b"", b"jwt=" + GOOD, b"a=1&jwt=t", b"a=1", b"j%77t=" + GOOD])


def authenticator(header: str | None, cookie: str | None, query: str | None,
                  hide: bool) -> JwtAuthenticator:
    s = jwt_settings_from_config({
        "algorithms": ["HS256"], "keys": [{"alg": "HS256", "secret": SECRET.decode()}],
        "header": header, "cookie": cookie, "query": query, "hide_credentials": hide,
    })
    return JwtAuthenticator(s, clock=lambda: NOW)


@settings(max_examples=300)
@given(st.lists(st.tuples(names, values), max_size=6), queries,
       st.sampled_from([None, "authorization", "x-token"]), st.sampled_from([None, "jwt"]),
       st.sampled_from([None, "jwt"]), st.booleans())
def test_take_equals_authenticate_then_strip(
    headers: list[tuple[bytes, bytes]], query: bytes, header: str | None, cookie: str | None,
    param: str | None, hide: bool,
) -> None:
    """For any request and settings: the same verdict, and on success the same stripped request."""
    auth = authenticator(header, cookie, param, hide)

    async def both() -> None:
        result, out, q = await auth.take(headers, query)
        assert auth.take_now(headers, query) == (result, out, q)  # inline keys: never waits
        expected = await auth.authenticate(headers, query)
        assert result == expected
        if not isinstance(result, AuthFailure):
            assert (out, q) == auth.strip(headers, query)
            assert out is not headers  # the caller extends it

    asyncio.run(both())
