"""``strip_credentials``' shortcuts (no cookie, no query) change no answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qanat.security import JwtSettings, _request
from qanat.security.jwt import strip_credentials

names = st.sampled_from([b"authorization", b"Authorization", b"cookie", b"Cookie", b"accept"])
values = st.sampled_from([b"Bearer t", b"jwt=t; a=1", b"a=1", b"jwt=t", b"*/*", b""])
queries = st.sampled_from([b"", b"jwt=t", b"a=1&jwt=t", b"a=1", b"j%77t=t"])


@given(st.lists(st.tuples(names, values), max_size=6), queries,
       st.sampled_from([None, "authorization"]), st.sampled_from([None, "jwt"]),
       st.sampled_from([None, "jwt"]))
def test_strip_equals_stripping_each_place_in_turn(
    headers: list[tuple[bytes, bytes]], query: bytes, header: str | None, cookie: str | None,
    param: str | None,
) -> None:
    """For any headers, query and settings, the result is header, cookie and query stripped."""
    s = JwtSettings(algorithms=frozenset({"HS256"}), header=header, cookie=cookie, query=param)
    out = list(headers)
    if header:
        out = _request.strip_header(out, header.encode())
    if cookie:
        out = _request.strip_cookie(out, cookie.encode())
    expected_query = _request.strip_query(query, param.encode()) if param else query
    assert strip_credentials(s, headers, query) == (out, expected_query)
